"""MindCV's ``amp_cast_list`` key: the cell classes that AMP casts, as text (no MindSpore needed)."""
import re

_CELL_NAME = re.compile(r"^(?:(?:mindspore\.)?nn\.)?([A-Z][A-Za-z0-9_]*)$")


def parse_cast_list(text):
    """MindCV's ``amp_cast_list`` text, ``"[nn.Conv2d, nn.Dense]"``, -> ``("Conv2d", "Dense")``.

    MindCV evaluates the text as Python; here it is only parsed: a list of ``mindspore.nn`` cell
    class names, with or without the ``nn.`` / ``mindspore.nn.`` prefix. Whether each name is a
    MindSpore cell is checked when the network is built (``training.train_step.resolve_cast_list``).
    Raises ``ValueError`` naming the bad entry."""
    body = str(text).strip()
    if body.startswith(("[", "(")) and body.endswith(("]", ")")):
        body = body[1:-1]
    names = []
    for entry in (t.strip() for t in body.split(",") if t.strip()):
        match = _CELL_NAME.match(entry)
        if not match:
            raise ValueError(f"{entry!r} is not a cell class name")
        names.append(match.group(1))
    if not names:
        raise ValueError("the list is empty")
    return tuple(names)
