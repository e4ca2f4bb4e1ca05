"""Configuration of train.py and validate.py: argparse with YAML defaults.

The top-level ``config.py`` is this module under its documented name (``import config``).

Precedence, lowest to highest: the built-in defaults (:mod:`.keys`) < the YAML file given with
``-c/--config FILE`` < the command line. Key names and meanings follow MindCV, so MindCV's
published Res2Net recipes (flat YAML files) run unchanged.

Public API
----------
``parse_args(argv=None, script="train")``  -> ``argparse.Namespace`` with every key resolved.
``get_defaults(script="train")``            -> ``{key: default}`` (a fresh copy).
``config_keys(script="train")``             -> list of the config keys, in help order.
``dump_config(args)``                       -> the resolved config as YAML text (``--dry_run``).
``save_config(args, path)``                 -> writes that YAML atomically (``atomic_io``).
``NO_EFFECT_KEYS``                          -> MindCV keys accepted but unused, with the reason.
``ALIAS_KEYS``                              -> MindCV's older keys that are mapped onto newer ones.

Conventions
-----------
* Booleans: ``true/false/yes/no/1/0/on/off`` (any case) on the command line, real YAML booleans
  in files; a bare ``--flag`` means true (the vocabulary of every entry script, :mod:`.options`).
* List keys take several values on the command line: ``--scale 0.08 1.0``.
* Keys that may be null take ``None``/``null`` on the command line.
* ``mean``/``std`` are stored as given. Values <= 1 are fractions of the pixel range (e.g.
  0.485); values > 1 are on the 0-255 scale MindCV uses (e.g. 123.675).
* ``num_classes`` null (the MindCV default) means "the dataset's number of classes".
* Every mistake raises ``mindcv_res2net.errors.UserError``; parsing prints nothing on stdout
  (``--help`` excepted). Warnings about keys that have no effect go to stderr.
"""
import argparse
import difflib
import os
import sys

import yaml

from .. import atomic_io
from ..errors import UserError
from .keys import ALIAS_KEYS, NO_EFFECT_KEYS, RUN_ONLY, SCRIPTS, SPECS, specs_for
from .options import NULL_WORDS, Parser, parse_bool

__all__ = [
    "parse_args", "get_defaults", "config_keys", "dump_config", "save_config",
    "NO_EFFECT_KEYS", "ALIAS_KEYS", "SCRIPTS",
]


def config_keys(script="train"):
    """All keys ``parse_args`` returns for ``script`` (the config file path excluded)."""
    return list(specs_for(script))


def get_defaults(script="train"):
    """A fresh ``{key: built-in default}`` for ``script``."""
    return {name: _copy(spec.default) for name, spec in specs_for(script).items()}


def _copy(v):
    return list(v) if isinstance(v, (list, tuple)) else v


# ----------------------------------------------------------------------------- value coercion
_KIND_WORDS = {
    "bool": "a boolean (true/false/yes/no/1/0/on/off)",
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "floats": "a list of numbers",
    "ints": "a list of integers",
    "distribute": "'auto' or a boolean (true/false)",
    "color_jitter": "null, a number, or a list of 3-4 numbers",
    "re_value": "a number, a list of numbers, or 'random'",
    "class_weights": "'balanced' or a list of numbers (one weight per class)",
}


# kinds whose command-line value may be several tokens
LIST_KINDS = ("floats", "ints", "color_jitter", "re_value", "class_weights")


class _BadType(Exception):
    pass


def _class_weights(v):
    """``class_weights``: 'balanced', or one non-negative number per class."""
    values = list(v) if isinstance(v, (list, tuple)) else [v]
    if len(values) == 1 and isinstance(values[0], str) and values[0].strip().lower() == "balanced":
        return "balanced"
    return [_to_float(x) for x in values]


def _is_null_word(v):
    return isinstance(v, str) and v.strip().lower() in NULL_WORDS


def _is_choice(spec, v):
    return (spec.choices is not None and isinstance(v, str)
            and v.strip().lower() in {str(c).lower() for c in spec.choices})


def _to_bool(v):
    try:
        return parse_bool(v)
    except ValueError:
        raise _BadType from None


def _to_float(v):
    if isinstance(v, bool):
        raise _BadType
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v.strip())
        except ValueError:
            raise _BadType from None
    raise _BadType


def _to_int(v):
    if isinstance(v, bool):
        raise _BadType
    if isinstance(v, int):
        return v
    f = _to_float(v)
    if f != f or f in (float("inf"), float("-inf")) or not f.is_integer():
        raise _BadType
    return int(f)


def _to_str(v):
    if isinstance(v, str):
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v)
    raise _BadType


def _cli_list(v):
    """Command-line list: several tokens, or one token '0.1,0.2' or '[0.1, 0.2]'."""
    if isinstance(v, list) and len(v) == 1 and isinstance(v[0], str):
        tok = v[0].strip()
        if tok.startswith("["):
            try:
                parsed = yaml.safe_load(tok)
            except yaml.YAMLError:
                raise _BadType from None
            if not isinstance(parsed, list):
                raise _BadType
            return parsed
        if "," in tok:
            return [t for t in tok.split(",") if t.strip()]
    return v


def _coerce(spec, v, from_cli):
    """Convert a YAML or command-line value to the key's type; raise _BadType if it cannot."""
    if from_cli and isinstance(v, list) and spec.kind not in LIST_KINDS:
        v = v[0] if len(v) == 1 else v
    if from_cli and isinstance(v, list):
        if len(v) == 1 and _is_null_word(v[0]):
            v = None
        else:
            v = _cli_list(v)
    if v is None or (_is_null_word(v) and not _is_choice(spec, v)):  # lr_scale: none is a value
        if spec.nullable:
            return None
        raise _BadType
    kind = spec.kind
    if kind == "bool":
        return _to_bool(v)
    if kind == "int":
        return _to_int(v)
    if kind == "float":
        return _to_float(v)
    if kind == "str":
        s = _to_str(v)
        if spec.canon is not None:
            s = spec.canon(s)
        if spec.nullable and s.strip() == "":
            return None
        return s
    if kind == "distribute":
        if isinstance(v, str) and v.strip().lower() == "auto":
            return "auto"
        return _to_bool(v)
    if kind in ("floats", "ints"):
        if isinstance(v, tuple):
            v = list(v)
        if not isinstance(v, list) or not v:
            raise _BadType
        conv = _to_float if kind == "floats" else _to_int
        return [conv(x) for x in v]
    if kind == "class_weights":
        return _class_weights(v)
    if kind == "color_jitter":
        if isinstance(v, (list, tuple)):
            return [_to_float(x) for x in v] if len(v) != 1 else _to_float(v[0])
        return _to_float(v)
    if kind == "re_value":
        if isinstance(v, (list, tuple)):
            if len(v) == 1:
                v = v[0]
            else:
                return [_to_float(x) for x in v]
        if isinstance(v, str) and v.strip().lower() == "random":
            return "random"
        f = _to_float(v)
        return int(f) if f.is_integer() else f
    raise AssertionError(kind)


def _show(v):
    if isinstance(v, list) and len(v) == 1:
        v = v[0]
    if isinstance(v, list):
        return " ".join(str(x) for x in v)
    return repr(v)


def _closest(word, candidates):
    hits = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.5)
    return hits[0] if hits else None


def _convert(spec, v, source, from_cli):
    try:
        out = _coerce(spec, v, from_cli)
    except _BadType:
        null_hint = " or null" if spec.nullable else ""
        raise UserError(
            f"config key '{spec.name}' expects {_KIND_WORDS[spec.kind]}{null_hint}, "
            f"got {_show(v)} ({type(v).__name__ if not from_cli else 'text'}) {source}. "
            f"Fix the value of '{spec.name}'") from None
    return out


def _validate(spec, v, source):
    if v is None:
        return
    if not isinstance(v, list) and v in spec.refused:
        raise UserError(f"config key '{spec.name}' = {v!r} {source} is not supported: {spec.refused[v]}")
    if spec.choices is not None and v not in spec.choices:
        valid = ", ".join(str(c) for c in spec.choices)
        near = _closest(str(v), [str(c) for c in spec.choices])
        hint = f" Did you mean '{near}'?" if near else ""
        raise UserError(f"config key '{spec.name}' has invalid value {v!r} {source}. "
                        f"Valid values: {valid}.{hint}")
    if spec.length is not None and isinstance(v, list) and len(v) != spec.length:
        raise UserError(f"config key '{spec.name}' needs exactly {spec.length} values, "
                        f"got {len(v)} ({_show(v)}) {source}")
    if spec.check is not None:
        problem = spec.check(v)
        if problem:
            raise UserError(f"config key '{spec.name}' {problem}, got {_show(v)} {source}")


# ----------------------------------------------------------------------------- YAML
def _load_yaml(path):
    if not os.path.exists(path):
        raise UserError(f"config file not found: {path}. Check the -c/--config path")
    if os.path.isdir(path):
        raise UserError(f"config path is a directory, not a YAML file: {path}")
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f", line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        ctx = getattr(exc, "context_mark", None)
        if ctx is not None and mark is not None and ctx.line != mark.line:
            problem += f" ({getattr(exc, 'context', None) or 'construct'} at line {ctx.line + 1})"
        raise UserError(f"YAML syntax error in config file {path}{where}: {problem}. "
                        f"Fix the YAML syntax") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read config file {path}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must be a mapping of 'key: value' lines at top "
                        f"level, got {type(data).__name__}")
    for key, value in data.items():
        if isinstance(value, dict):
            raise UserError(f"config key '{key}' in {path} is a nested mapping; keys are flat "
                            f"(one 'key: value' per line, as in MindCV's configs)")
    return data


def _unknown_key_error(key, where, specs, cli=False):
    near = _closest(str(key), specs)
    dash = "--" if cli else ""
    hint = (f" Did you mean '{dash}{near}'?" if near
            else " Run with --help to list the valid keys.")
    what = "command-line option" if cli else "config key"
    where = f" {where}" if where else ""
    return UserError(f"unknown {what} '{dash}{key}'{where}.{hint}")


# ----------------------------------------------------------------------------- argparse
def _build_parser(script, specs):
    parser = Parser(prog=f"{script}.py",
                     usage="%(prog)s [-h] [-c FILE] [--KEY VALUE ...]",
                     description="Res2Net " + script + ". Precedence: built-in defaults < "
                                 "YAML file (-c) < command line.")
    parser.add_argument("-c", "--config", default=argparse.SUPPRESS, metavar="FILE",
                        help="YAML file of 'key: value' lines (MindCV key names)")
    groups = {}
    for spec in specs.values():
        group = groups.get(spec.group)
        if group is None:
            group = groups[spec.group] = parser.add_argument_group(spec.group)
        kw = dict(dest=spec.name, default=argparse.SUPPRESS, metavar=spec.name.upper(),
                  help=f"{spec.help} (default: {_show(spec.default)})".replace("%", "%%"))
        if spec.kind in ("bool", "distribute"):
            kw.update(nargs="?", const=True)
        elif spec.kind in LIST_KINDS:
            kw.update(nargs="+")
        group.add_argument(f"--{spec.name}", **kw)
    return parser


def _apply_aliases(values, source):
    """Map older MindCV keys given at one precedence level onto their newer keys."""
    for old, (new, mapping) in ALIAS_KEYS.items():
        if old in values and values[old] is not None:
            translated = mapping[values[old]]
            if new in values and values[new] != translated:
                raise UserError(
                    f"config keys '{old}' ({values[old]}) and '{new}' ({values[new]!r}) "
                    f"disagree {source}. Remove '{old}' (older MindCV name for '{new}')")
            values[new] = translated


def _warn(message):
    """One warning line on stderr, from rank 0 only under mpirun (every rank parses the config)."""
    if os.environ.get("OMPI_COMM_WORLD_RANK", "0") in ("", "0"):
        print(f"warning: {message}", file=sys.stderr)


def _fit_warmup(resolved, sources):
    """A warmup longer than the run: refused when the user set ``warmup_epochs`` on the command line
    (an explicit contradiction); otherwise (a recipe's or the default warmup, and a shorter
    ``--epoch_size``, as in a scaled-down rehearsal) shortened to the run, with one warning."""
    warmup, epochs = resolved["warmup_epochs"], resolved["epoch_size"]
    if warmup <= epochs:
        return
    if sources["warmup_epochs"] == "on the command line":
        raise UserError(f"warmup_epochs ({warmup}), given on the command line, is larger than the number of "
                        f"epochs ({epochs}, epoch_size {sources['epoch_size']}). Reduce --warmup_epochs or train "
                        f"longer.")
    _warn(f"warmup_epochs {warmup} {sources['warmup_epochs']} is longer than the run's {epochs} epoch(s) "
          f"(epoch_size {sources['epoch_size']}): warming up for {epochs} epoch(s) instead. Set "
          f"--warmup_epochs to choose another value.")
    resolved["warmup_epochs"] = epochs


def parse_args(argv=None, script="train"):
    """Resolve the config: built-in defaults < YAML (``-c FILE``) < command line.

    ``argv`` defaults to ``sys.argv[1:]``; ``script`` is ``"train"`` or ``"validate"``
    (validate also takes ``--json PATH``). Returns an ``argparse.Namespace`` with every key of
    ``config_keys(script)`` plus ``config`` (the YAML path, or None). Raises ``UserError``.
    """
    specs = specs_for(script)
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _build_parser(script, specs)
    cli_ns, leftover = parser.parse_known_args(argv)
    for tok in leftover:
        if tok.startswith("-") and len(tok) > 1:
            name = tok.lstrip("-").split("=", 1)[0]
            raise _unknown_key_error(name, "", list(specs) + ["config"],
                                     cli=True)
        raise UserError(f"unexpected value {tok!r} on the command line: every value must "
                        f"follow its --key (lists: --scale 0.08 1.0)")
    cli_raw = vars(cli_ns)
    config_path = cli_raw.pop("config", None) or None

    # YAML level
    yaml_vals = {}
    yaml_src = {}
    if config_path:
        source = f"in {config_path}"
        for key, raw in _load_yaml(config_path).items():
            if key == "json":
                raise UserError(f"'json' {source} is a command-line option only "
                                f"(validate.py --json PATH); remove it from the file")
            if key not in specs:
                raise _unknown_key_error(key, source, specs)
            yaml_vals[key] = _convert(specs[key], raw, source, from_cli=False)
            yaml_src[key] = source
        _apply_aliases(yaml_vals, f"in {config_path}")
        for k in yaml_vals:
            yaml_src.setdefault(k, source)

    # command-line level
    cli_vals = {key: _convert(specs[key], raw, "on the command line", from_cli=True)
                for key, raw in cli_raw.items()}
    _apply_aliases(cli_vals, "on the command line")

    resolved = {}
    sources = {}
    for name, spec in specs.items():
        if name in cli_vals:
            resolved[name], sources[name] = cli_vals[name], "on the command line"
        elif name in yaml_vals:
            resolved[name], sources[name] = yaml_vals[name], yaml_src.get(name, "in the config")
        else:
            resolved[name], sources[name] = _copy(spec.default), "(default)"

    for name in ("drop_rate", "drop_path_rate"):
        if resolved[name] is None:       # MindCV's null means "model default", which is 0
            resolved[name] = 0.0
    for name, spec in specs.items():
        _validate(spec, resolved[name], sources[name])
    if len(resolved["mean"]) != len(resolved["std"]):
        raise UserError(f"config keys 'mean' and 'std' need the same number of values, got "
                        f"{len(resolved['mean'])} and {len(resolved['std'])}. "
                        f"Give one value per input channel for both")

    for name, reason in NO_EFFECT_KEYS.items():
        if resolved[name] != specs[name].default:
            _warn(f"config key '{name}' = {_show(resolved[name])} {sources[name]} has no "
                  f"effect here ({reason}); accepted only so MindCV configs run unchanged")
    if script == "train":
        _fit_warmup(resolved, sources)

    ns = argparse.Namespace(**resolved)
    ns.config = config_path
    return ns


# ----------------------------------------------------------------------------- output
def _plain(v):
    if isinstance(v, tuple):
        v = list(v)
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


class _Dumper(yaml.SafeDumper):
    """Safe YAML with lists on one line ([0.08, 1.0]) and everything else in block style."""


_Dumper.add_representer(
    list, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data,
                                                         flow_style=True))


def dump_config(args):
    """The resolved config as YAML text, grouped and commented; loads back with ``-c``.

    Run-only keys (``dry_run``, ``json``) and the older alias keys are left out.
    """
    values = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    chunks = []
    if values.get("config"):
        chunks.append(f"# resolved from {values['config']} (built-in < YAML < command line)\n")
    by_group = {}
    for name, spec in SPECS.items():
        if name in RUN_ONLY or name in ALIAS_KEYS or name not in values:
            continue
        by_group.setdefault(spec.group, {})[name] = _plain(values[name])
    for group, items in by_group.items():
        if group == "mindcv":
            group = "accepted for MindCV compatibility, no effect"
        chunks.append(f"# {group}\n")
        chunks.append(yaml.dump(items, Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                                allow_unicode=True, width=1000))
    return "".join(chunks)


def save_config(args, path):
    """Write ``dump_config(args)`` to ``path`` through ``atomic_io`` (unique staging name, fsync,
    rename): a failed write raises ``UserError`` and keeps the previous file."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return atomic_io.write_text_atomic(path, dump_config(args), "config")


# ----------------------------------------------------------------------------- predict.py / export.py
# The keys predict.py and export.py take from the command line or a -c file: the model, its classes
# and the evaluation preprocessing (``data.transforms.EVAL_KEYS``).
DEPLOY_KEYS = ("model", "num_classes", "dataset", "image_resize", "crop_pct", "interpolation", "mean", "std",
               "in_channels")
# their options where the name is not the config key's
_DEPLOY_OPTIONS = {"image_resize": "image_size"}


def add_preprocessing_options(parser):
    """``-c/--config`` and the preprocessing options predict.py and export.py share (the config keys'
    names; ``--image_size`` and ``--in_channels`` each script defines itself)."""
    parser.add_argument("-c", "--config", default=None, metavar="FILE",
                        help="a train.py / validate.py YAML file: its model, num_classes and preprocessing keys "
                             "(dataset, image_resize, crop_pct, interpolation, mean, std, in_channels) are used "
                             "(default: the checkpoint's, else the model's)")
    parser.add_argument("--crop_pct", type=float, default=None,
                        help="evaluation centre-crop fraction (default: the checkpoint's, else the model's)")
    parser.add_argument("--interpolation", default=None, help="resize interpolation (default: the checkpoint's)")
    parser.add_argument("--mean", type=float, nargs="+", default=None,
                        help="per-channel mean, fractions or 0-255 (default: the checkpoint's); it takes every "
                             "number that follows: name images before it")
    parser.add_argument("--std", type=float, nargs="+", default=None,
                        help="per-channel std, fractions or 0-255 (default: the checkpoint's); as --mean")


def read_config_keys(path, wanted):
    """The keys of ``wanted`` that the YAML file ``path`` sets (nulls left out), read and checked as
    train.py / validate.py read it: an unknown key is refused with the closest name."""
    specs = dict(specs_for("train"), **specs_for("validate"))
    source = f"in {path}"
    values = {}
    for key, raw in _load_yaml(path).items():
        if key not in specs:
            raise _unknown_key_error(key, source, specs)
        values[key] = _convert(specs[key], raw, source, from_cli=False)
    _apply_aliases(values, source)
    for key, value in values.items():
        _validate(specs[key], value, source)
    return {key: values[key] for key in wanted if values.get(key) is not None}


def deploy_layers(args):
    """predict.py's / export.py's explicit settings as ``[(source, {config key: value})]``, highest
    precedence first: the command line, then the ``-c`` file. What they leave out comes from the
    checkpoint (or exported file), then from the model's defaults."""
    specs = specs_for("validate")
    given = {}
    for key in DEPLOY_KEYS:
        value = getattr(args, _DEPLOY_OPTIONS.get(key, key), None)
        if value is not None:
            if isinstance(value, str) and specs[key].canon is not None:
                value = specs[key].canon(value)
            _validate(specs[key], value, "on the command line")
            given[key] = value
    layers = [("the command line", given)]
    if getattr(args, "config", None):
        layers.append((f"config {args.config}", read_config_keys(args.config, DEPLOY_KEYS)))
    return layers
