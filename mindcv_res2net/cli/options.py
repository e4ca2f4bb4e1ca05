"""The command-line pieces every entry script shares: one boolean vocabulary, one error style.

train.py and validate.py build their parser from the typed config keys (:mod:`.config`);
predict.py, export.py and benchmark.py build theirs from :class:`Parser` and the helpers below.
Either way a user sees the same rules:

* Booleans: ``true/false/yes/no/1/0/on/off`` (any case); a bare ``--flag`` means true.
  ``--flag false``, ``--flag=no`` ... turn it off. On a script that also takes file names
  (predict.py), a word after ``--flag`` that is not one of these is a file name.
* No abbreviations: ``--ckpt`` is not ``--ckpt_path``.
* A mistake raises ``UserError`` naming the option; ``run_main`` prints it as one
  ``error: command line: ...`` line and exits with status 2, without a traceback.

    parser = Parser(prog="export.py", description="...")
    parser.add_argument("--pretrained", action=BoolFlag, help="...")
    parser.add_argument("--batch_size", type=positive_int, default=1)
    add_device_target(parser)
    args = parser.parse_args(argv)
"""
import argparse
import difflib
import sys

import yaml

from ..errors import UserError

TRUE_WORDS = ("true", "yes", "1", "on", "y", "t")
FALSE_WORDS = ("false", "no", "0", "off", "n", "f")
NULL_WORDS = ("none", "null", "~")
BOOL_WORDS = "true/false/yes/no/1/0/on/off"  # as the error messages and --help name them

DEVICE_TARGETS = ("auto", "CPU", "GPU", "Ascend")


def parse_bool(value):
    """``True`` / ``False`` for a word of the vocabulary (any case, blanks around it ignored), a
    real boolean or the integer 0 / 1; ``ValueError`` for anything else."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
    raise ValueError(f"expected a boolean ({BOOL_WORDS}), got {value!r}")


def is_bool_word(text):
    """Whether ``text`` is a word of the boolean vocabulary."""
    return isinstance(text, str) and text.strip().lower() in TRUE_WORDS + FALSE_WORDS


def canon_device_target(text):
    """``cpu`` -> ``CPU``, ``gpu`` -> ``GPU``, ``ascend`` -> ``Ascend``; other text unchanged."""
    return {"auto": "auto", "cpu": "CPU", "gpu": "GPU", "ascend": "Ascend"}.get(text.strip().lower(), text)


def _whole_number(text):
    try:
        return int(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def positive_int(text):
    """argparse ``type``: a whole number > 0."""
    number = _whole_number(text)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"expected a whole number > 0, got {text!r}")
    return number


def non_negative_int(text):
    """argparse ``type``: a whole number >= 0."""
    number = _whole_number(text)
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return number


def split_list(text):
    """``"a, b,,c"`` -> ``["a", "b", "c"]`` (comma-separated command-line lists)."""
    return [t.strip() for t in str(text or "").split(",") if t.strip()]


class BoolFlag(argparse.Action):
    """A boolean option: bare ``--flag`` is true; ``--flag WORD`` / ``--flag=WORD`` take a word of
    the vocabulary. The default is ``False`` unless given."""

    def __init__(self, option_strings, dest, default=False, required=False, help=None, metavar="BOOL"):
        super().__init__(option_strings, dest, nargs="?", const=True, default=default, required=required,
                         help=help, metavar=metavar)

    def __call__(self, parser, namespace, values, option_string=None):
        if values is not True:
            try:
                values = parse_bool(values)
            except ValueError as exc:
                raise argparse.ArgumentError(self, str(exc)) from None
        setattr(namespace, self.dest, values)


class Parser(argparse.ArgumentParser):
    """``ArgumentParser`` with the shared rules: no abbreviations, :class:`BoolFlag` options that
    never swallow a positional argument, and ``UserError`` instead of usage + exit."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):
        raise UserError(f"command line: {message}. Run with --help for the valid options")

    def parse_args(self, args=None, namespace=None):
        namespace, extras = self.parse_known_args(args, namespace)
        if extras:
            unknown = [t for t in extras if t.startswith("-") and len(t) > 1]
            if not unknown:
                self.error(f"unrecognized arguments: {' '.join(extras)}")
            name = unknown[0].split("=", 1)[0]
            known = [opt for action in self._actions for opt in action.option_strings if opt.startswith("--")]
            near = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
            self.error(f"unknown option '{name}'" + (f" (did you mean '{near[0]}'?)" if near else ""))
        return namespace

    def parse_known_args(self, args=None, namespace=None):
        args = self._spell_out_booleans(list(sys.argv[1:] if args is None else args))
        return super().parse_known_args(args, namespace)

    def _spell_out_booleans(self, argv):
        """``--flag WORD`` -> ``--flag=WORD`` when WORD is a boolean word; a bare ``--flag`` before
        a positional argument -> ``--flag=true``, so that argparse never takes a file name as the
        flag's value. Without positional arguments the next word is left to the flag, whose error
        then names it (``--pretrained maybe``)."""
        flags = {opt for action in self._actions if isinstance(action, BoolFlag)
                 for opt in action.option_strings}
        if not flags:
            return argv
        takes_positionals = any(not action.option_strings for action in self._actions)
        out = []
        i = 0
        while i < len(argv):
            token = argv[i]
            if token == "--":
                out += argv[i:]
                break
            following = argv[i + 1] if i + 1 < len(argv) else None
            if token in flags and following is not None:
                if is_bool_word(following):
                    out.append(f"{token}={following}")
                    i += 2
                    continue
                if takes_positionals and not following.startswith("-"):
                    out.append(f"{token}=true")
                    i += 1
                    continue
            out.append(token)
            i += 1
        return out


def add_device_target(parser, help="MindSpore device (auto: MindSpore's default)"):
    """``--device_target``: auto, CPU, GPU or Ascend (any case)."""
    parser.add_argument("--device_target", default="auto", type=canon_device_target, choices=DEVICE_TARGETS,
                        help=help)


def add_weights_options(parser, pretrained_verb):
    """``--ckpt_path``, ``--pretrained``, ``--ema``: where a built model's weights come from."""
    parser.add_argument("--ckpt_path", default=None, help="MindSpore checkpoint (ours or MindCV's) or PyTorch file")
    parser.add_argument("--pretrained", action=BoolFlag, help=f"{pretrained_verb} the published pretrained weights")
    parser.add_argument("--ema", action=BoolFlag, help="use the checkpoint's EMA weights")


def add_debug(parser, help="show tracebacks of user errors"):
    """``--debug``: ``run_main`` re-raises user errors so that the traceback shows."""
    parser.add_argument("--debug", action=BoolFlag, help=help)


def given_keys(argv, config_path=None):
    """The config keys a run sets itself rather than takes from the defaults: ``--key VALUE`` /
    ``--key=VALUE`` in ``argv`` (names are never abbreviated) and the keys of the YAML file
    ``config_path`` (already checked by ``config.parse_args``)."""
    names = set()
    for token in argv:
        if token == "--":
            break
        if token.startswith("--") and len(token) > 2:
            names.add(token[2:].split("=", 1)[0])
    if config_path:
        with open(config_path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
        if isinstance(data, dict):
            names.update(str(key) for key in data)
    return names


def debug_requested(argv):
    """Whether ``argv`` turns ``--debug`` on (bare, or with a true word; the last one counts)."""
    wanted = False
    for i, token in enumerate(argv):
        name, eq, value = token.partition("=")
        if name != "--debug":
            continue
        if eq:
            wanted = value.strip().lower() not in FALSE_WORDS
        else:
            following = argv[i + 1] if i + 1 < len(argv) else ""
            wanted = not (is_bool_word(following) and not parse_bool(following))
    return wanted
