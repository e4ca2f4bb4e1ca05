"""The command-line layer of every entry script, and how those scripts end.

``config`` (typed keys, YAML, ``parse_args``: train.py / validate.py; the top-level
``config.py`` is that module), ``keys`` (the table of config keys), ``options`` (the parser
pieces predict.py / export.py / benchmark.py share with it: one boolean vocabulary, one
error style).

Every entry script does ``run_main(main)``. A ``UserError`` (or a missing file) prints
``error: <message>`` on stderr and exits 2 with no traceback; ``--debug`` on the command line
(or ``MINDCV_RES2NET_DEBUG=1``) re-raises so the traceback shows. A normal end goes through
``distributed.end_process``: under mpirun every rank waits for the others, then leaves.
"""
import os
import sys

from ..distributed.watchdog import end_process
from ..errors import UserError
from .options import debug_requested


def _debug_requested(argv):
    return debug_requested(argv) or os.environ.get("MINDCV_RES2NET_DEBUG", "") not in ("", "0")


def run_main(main, argv=None):
    """Call ``main(argv)``; turn a user's mistake into one line on stderr and exit status 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        code = main(argv)
    except UserError as exc:
        if _debug_requested(argv):
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    end_process(code or 0)
