"""The one exception type for a user's mistake.

Anything the user can fix (a bad config key, a missing file, a wrong checkpoint, a bad
image) is raised as ``UserError`` with a message that names the input and the fix.
Entry scripts catch it, print ``error: <message>`` and exit with status 2, without a
traceback (``--debug`` shows one).
"""


class UserError(Exception):
    """A mistake in the user's input; the message says what is wrong and how to fix it."""
