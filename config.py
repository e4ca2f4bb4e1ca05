"""Configuration for every entry script: argparse with YAML defaults.

Precedence, lowest to highest: the built-in defaults below < the YAML file given with
``-c/--config FILE`` < the command line. Key names and meanings follow MindCV, so MindCV's
published Res2Net recipes (flat YAML files) run unchanged.

Public API
----------
``parse_args(argv=None, script="train")``  -> ``argparse.Namespace`` with every key resolved.
``get_defaults(script="train")``            -> ``{key: default}`` (a fresh copy).
``config_keys(script="train")``             -> list of the config keys, in help order.
``dump_config(args)``                       -> the resolved config as YAML text (``--dry_run``).
``save_config(args, path)``                 -> writes that YAML atomically (``path.tmp`` + ``os.replace``).
``NO_EFFECT_KEYS``                          -> MindCV keys accepted but unused, with the reason.
``ALIAS_KEYS``                              -> MindCV's older keys that are mapped onto newer ones.

Conventions
-----------
* Booleans: ``true/false/yes/no/1/0/on/off`` (any case) on the command line, real YAML booleans
  in files; a bare ``--flag`` means true.
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

from mindcv_res2net.errors import UserError

__all__ = [
    "parse_args", "get_defaults", "config_keys", "dump_config", "save_config",
    "NO_EFFECT_KEYS", "ALIAS_KEYS", "SCRIPTS",
]

SCRIPTS = ("train", "validate")

_NULL_WORDS = ("none", "null", "~")
_TRUE_WORDS = ("true", "yes", "1", "on", "y", "t")
_FALSE_WORDS = ("false", "no", "0", "off", "n", "f")


class _Key:
    """One config key: its kind (value type), default and checks."""

    __slots__ = ("name", "kind", "default", "group", "help", "nullable", "choices", "check",
                 "length", "canon")

    def __init__(self, name, kind, default, group, help, nullable=False, choices=None,
                 check=None, length=None, canon=None):
        self.name = name
        self.kind = kind            # bool int float str floats ints distribute color_jitter re_value
        self.default = default
        self.group = group
        self.help = help
        self.nullable = nullable
        self.choices = choices      # tuple of canonical values
        self.check = check          # callable(value) -> None or "must be ..." text
        self.length = length        # exact list length, or None
        self.canon = canon          # callable(str) -> canonical spelling (case folding)


# ----------------------------------------------------------------------------- checks
def _gt(lo):
    return lambda v: None if v > lo else f"must be > {lo}"


def _ge(lo):
    return lambda v: None if v >= lo else f"must be >= {lo}"


def _between(lo, hi, hi_open=False):
    def check(v):
        ok = lo <= v < hi if hi_open else lo <= v <= hi
        return None if ok else f"must be in [{lo}, {hi}{')' if hi_open else ']'}"
    return check


def _range_pair(upper=None):
    def check(v):
        if not 0 < v[0] <= v[1]:
            return "must be two numbers 0 < low <= high"
        if upper is not None and v[1] > upper:
            return f"must be two numbers 0 < low <= high <= {upper}"
        return None
    return check


def _positive_list(v):
    if any(x <= 0 for x in v):
        return "must contain only values > 0"
    return None


def _milestones(v):
    if any(x <= 0 for x in v) or any(b < a for a, b in zip(v, v[1:])):
        return "must be positive epoch numbers in increasing order"
    return None


def _color_jitter(v):
    if v is None:
        return None
    vals = v if isinstance(v, list) else [v]
    if isinstance(v, list) and len(v) not in (3, 4):
        return "must be null, one number, or 3-4 numbers (brightness contrast saturation [hue])"
    if any(x < 0 for x in vals):
        return "must be >= 0"
    return None


_AUTO_AUGMENT_POLICIES = ("randaug", "autoaug", "autoaugr", "3a", "augmix", "trivialaugwide")


def _auto_augment(v):
    if v is None:
        return None
    head = v.split("-")[0]
    if head not in _AUTO_AUGMENT_POLICIES:
        return ("must start with one of " + ", ".join(_AUTO_AUGMENT_POLICIES)
                + " (e.g. 'randaug-m9-mstd0.5')")
    return None


def _lower(s):
    return s.lower()


def _upper(s):
    return s.upper()


def _device_canon(s):
    return {"auto": "auto", "cpu": "CPU", "gpu": "GPU", "ascend": "Ascend"}.get(s.lower(), s)


def _loss_canon(s):
    return s.upper()


# ----------------------------------------------------------------------------- the keys
def _k(*a, **kw):
    return _Key(*a, **kw)


_KEYS = [
    # system
    _k("mode", "int", 0, "system", "0: GRAPH_MODE, 1: PYNATIVE_MODE", choices=(0, 1)),
    _k("distribute", "distribute", "auto", "system",
       "distributed training: auto (detect the launcher), true or false"),
    _k("val_while_train", "bool", False, "system", "evaluate on the val split while training"),
    _k("val_interval", "int", 1, "system", "epochs between evaluations", check=_ge(1)),
    _k("log_interval", "int", 100, "system", "steps between training log lines", check=_ge(1)),
    _k("seed", "int", 42, "system", "random seed for numpy, random and mindspore", check=_ge(0)),
    _k("device_target", "str", "auto", "system", "auto, CPU, GPU or Ascend",
       choices=("auto", "CPU", "GPU", "Ascend"), canon=_device_canon),
    _k("debug", "bool", False, "system", "show tracebacks for user errors, verbose checks"),
    _k("strict_data", "bool", False, "system",
       "false: unreadable images are skipped with a warning; true: they are fatal"),
    _k("sync_bn", "bool", False, "system", "synchronise BatchNorm statistics across devices"),
    # data
    _k("dataset", "str", "imagenet", "data", "dataset type",
       choices=("imagenet", "fashion_mnist", "mnist"), canon=_lower),
    _k("data_dir", "str", "./", "data", "dataset root directory"),
    _k("train_split", "str", "train", "data", "training split name (sub-folder)"),
    _k("val_split", "str", "val", "data", "validation split name (sub-folder)"),
    _k("num_parallel_workers", "int", 8, "data", "data pipeline workers", check=_ge(1)),
    _k("shuffle", "bool", True, "data", "shuffle the training data"),
    _k("num_samples", "int", None, "data", "use only this many samples (null: all)",
       nullable=True, check=_gt(0)),
    _k("batch_size", "int", 128, "data", "batch size per device", check=_gt(0)),
    _k("drop_remainder", "bool", True, "data", "drop the last incomplete training batch"),
    _k("class_list", "str", None, "data",
       "null, or a text file with one class name per line (fixes the label order)", nullable=True),
    # augmentation
    _k("image_resize", "int", 224, "augmentation", "training crop / evaluation image size",
       check=_gt(0)),
    _k("scale", "floats", [0.08, 1.0], "augmentation", "random-resized-crop area range",
       length=2, check=_range_pair()),
    _k("ratio", "floats", [0.75, 1.333], "augmentation", "random-resized-crop aspect range",
       length=2, check=_range_pair()),
    _k("hflip", "float", 0.5, "augmentation", "horizontal flip probability", check=_between(0, 1)),
    _k("vflip", "float", 0.0, "augmentation", "vertical flip probability", check=_between(0, 1)),
    _k("color_jitter", "color_jitter", 0.4, "augmentation",
       "null, one factor, or brightness contrast saturation [hue]", nullable=True,
       check=_color_jitter),
    _k("interpolation", "str", "bilinear", "augmentation", "resize interpolation",
       choices=("bilinear", "bicubic", "nearest", "area"), canon=_lower),
    _k("crop_pct", "float", 0.875, "augmentation", "evaluation centre-crop fraction",
       check=lambda v: None if 0 < v <= 1 else "must be in (0, 1]"),
    _k("auto_augment", "str", None, "augmentation",
       "null or a policy string such as randaug-m9-mstd0.5", nullable=True, check=_auto_augment),
    _k("re_prob", "float", 0.0, "augmentation", "random-erasing probability",
       check=_between(0, 1)),
    _k("re_scale", "floats", [0.02, 0.33], "augmentation", "random-erasing area range",
       length=2, check=_range_pair(1.0)),
    _k("re_ratio", "floats", [0.3, 3.3], "augmentation", "random-erasing aspect range",
       length=2, check=_range_pair()),
    _k("re_value", "re_value", 0, "augmentation",
       "random-erasing fill: a number, one number per channel, or 'random'"),
    _k("mean", "floats", [123.675, 116.28, 103.53], "augmentation",
       "per-channel mean; values <= 1 are fractions, > 1 are on the 0-255 scale"),
    _k("std", "floats", [58.395, 57.12, 57.375], "augmentation",
       "per-channel std; values <= 1 are fractions, > 1 are on the 0-255 scale",
       check=_positive_list),
    _k("mixup", "float", 0.0, "augmentation", "mixup beta-distribution alpha (0: off)",
       check=_ge(0)),
    _k("cutmix", "float", 0.0, "augmentation", "cutmix beta-distribution alpha (0: off)",
       check=_ge(0)),
    _k("cutmix_prob", "float", 1.0, "augmentation", "probability of applying mixup/cutmix",
       check=_between(0, 1)),
    # model
    _k("model", "str", "res2net50", "model", "model name in the zoo"),
    _k("num_classes", "int", None, "model", "number of classes (null: from the dataset)",
       nullable=True, check=_gt(0)),
    _k("in_channels", "int", 3, "model", "input image channels", check=_gt(0)),
    _k("pretrained", "bool", False, "model", "load the published pretrained weights"),
    _k("ckpt_path", "str", None, "model", "initialise the model from this checkpoint (null: none)",
       nullable=True),
    _k("drop_rate", "float", 0.0, "model", "dropout before the classifier",
       nullable=True, check=_between(0, 1, hi_open=True)),
    _k("drop_path_rate", "float", 0.0, "model", "stochastic-depth rate",
       nullable=True, check=_between(0, 1, hi_open=True)),
    _k("zero_init_last", "bool", False, "model",
       "start every residual block as the identity (last BN gamma of each block = 0)"),
    _k("keep_checkpoint_max", "int", 10, "model", "checkpoints kept", check=_ge(1)),
    _k("ckpt_save_dir", "str", "./ckpt", "model", "checkpoint and log directory"),
    _k("ckpt_save_interval", "int", 1, "model", "epochs between checkpoints", check=_ge(1)),
    _k("ckpt_save_policy", "str", "latest_k", "model",
       "latest_k: keep the newest; top_k: keep the best by val accuracy",
       choices=("latest_k", "top_k"), canon=_lower),
    _k("epoch_size", "int", 90, "model", "training epochs", check=_gt(0)),
    _k("dataset_sink_mode", "bool", True, "model",
       "accepted for MindCV recipes; not implemented (batches are fed per step, same results)"),
    _k("ema", "bool", False, "model", "keep an exponential moving average of the weights"),
    _k("ema_decay", "float", 0.9999, "model", "EMA decay",
       check=lambda v: None if 0 < v < 1 else "must be in (0, 1)"),
    _k("clip_grad", "bool", False, "model", "clip gradients by global norm"),
    _k("clip_value", "float", 15.0, "model", "global-norm clip value", check=_gt(0)),
    _k("gradient_accumulation_steps", "int", 1, "model",
       "accumulate gradients over this many batches per update", check=_ge(1)),
    # optimizer
    _k("opt", "str", "adam", "optimizer", "optimizer",
       choices=("sgd", "momentum", "nesterov", "adamw", "adam", "rmsprop", "lamb", "lion"),
       canon=_lower),
    _k("lr", "float", 0.001, "optimizer", "peak learning rate", check=_ge(0)),
    _k("momentum", "float", 0.9, "optimizer", "momentum", check=_ge(0)),
    _k("weight_decay", "float", 1e-6, "optimizer", "weight decay", check=_ge(0)),
    _k("use_nesterov", "bool", False, "optimizer", "Nesterov momentum"),
    _k("weight_decay_filter", "str", "disable", "optimizer",
       "disable: decay all parameters; auto: MindSpore's own filtering; "
       "norm_and_bias: no decay on norm parameters and biases",
       choices=("disable", "auto", "norm_and_bias"), canon=_lower),
    _k("eps", "float", 1e-10, "optimizer", "optimizer epsilon", check=_ge(0)),
    # scheduler
    _k("scheduler", "str", "cosine_decay", "scheduler", "learning-rate schedule",
       choices=("constant", "cosine_decay", "step_decay", "multi_step_decay",
                "exponential_decay", "polynomial_decay", "one_cycle"), canon=_lower),
    _k("min_lr", "float", 1e-6, "scheduler", "final / minimum learning rate", check=_ge(0)),
    _k("warmup_epochs", "int", 3, "scheduler", "linear warmup epochs", check=_ge(0)),
    _k("warmup_factor", "float", 0.0, "scheduler", "warmup starts at lr * warmup_factor",
       check=_between(0, 1)),
    _k("decay_epochs", "int", 100, "scheduler",
       "cosine/polynomial: epochs of decay after warmup; step/exponential: decay period",
       check=_ge(0)),
    _k("decay_rate", "float", 0.9, "scheduler", "multiplier at each decay step", check=_ge(0)),
    _k("multi_step_decay_milestones", "ints", [30, 60, 90], "scheduler",
       "epochs at which multi_step_decay multiplies the lr by decay_rate", check=_milestones),
    _k("lr_epoch_stair", "bool", False, "scheduler", "change the lr once per epoch only"),
    _k("num_cycles", "int", 1, "scheduler", "cosine cycles", check=_ge(1)),
    _k("cycle_decay", "float", 1.0, "scheduler", "peak-lr multiplier per cosine cycle",
       check=_ge(0)),
    # loss
    _k("loss", "str", "CE", "loss", "CE (cross entropy) or BCE (binary cross entropy)",
       choices=("CE", "BCE"), canon=_loss_canon),
    _k("label_smoothing", "float", 0.0, "loss", "label smoothing",
       check=_between(0, 1, hi_open=True)),
    # amp
    _k("amp_level", "str", "O0", "amp", "O0 fp32, O1 white-list fp16, O2 fp16 but BN, O3 all fp16",
       choices=("O0", "O1", "O2", "O3"), canon=_upper),
    _k("loss_scale_type", "str", "fixed", "amp", "fixed or dynamic loss scale",
       choices=("fixed", "dynamic"), canon=_lower),
    _k("loss_scale", "float", 1.0, "amp", "(initial) loss scale", check=_gt(0)),
    _k("drop_overflow_update", "bool", False, "amp", "skip the update on a step that overflows"),
    # new keys
    _k("resume", "str", None, "run", "null, 'auto' (latest checkpoint in ckpt_save_dir) or a path",
       nullable=True),
    _k("overwrite", "bool", False, "run",
       "start (or resume) in a ckpt_save_dir that holds another run's checkpoints; they are left alone"),
    _k("dry_run", "bool", False, "run", "print the resolved config as YAML and exit"),
]

# MindCV keys accepted so MindCV configs run unchanged, but ignored here.
NO_EFFECT_KEYS = {
    "dataset_download": "datasets are never downloaded by the loader; see the data preparation tool",
    "aug_repeats": "repeated augmentation is not implemented",
    "aug_splits": "augmentation splits (AugMix JSD) are not implemented",
    "re_max_attempts": "random erasing uses a fixed number of attempts",
    "layer_decay": "layer-wise lr decay is meant for ViTs and is not implemented",
    "aux_factor": "Res2Net has no auxiliary head",
    "reduction": "the loss is always averaged over the batch",
    "val_amp_level": "evaluation runs at the training amp_level (O0 when only validating)",
    "amp_cast_list": "custom cast lists are not supported; use amp_level",
    "eval_shuffle": "evaluation data is never shuffled",
    "resume_opt": "use 'resume', which restores model, optimizer and epoch together",
    "enable_modelarts": "ModelArts is not supported",
    "multi_data_url": "ModelArts is not supported",
    "data_url": "ModelArts is not supported",
    "ckpt_url": "ModelArts is not supported",
    "train_url": "ModelArts is not supported",
}

_NO_EFFECT_SPECS = [
    _k("dataset_download", "bool", False, "mindcv", NO_EFFECT_KEYS["dataset_download"]),
    _k("aug_repeats", "int", 0, "mindcv", NO_EFFECT_KEYS["aug_repeats"]),
    _k("aug_splits", "int", 0, "mindcv", NO_EFFECT_KEYS["aug_splits"]),
    _k("re_max_attempts", "int", 10, "mindcv", NO_EFFECT_KEYS["re_max_attempts"]),
    _k("layer_decay", "float", None, "mindcv", NO_EFFECT_KEYS["layer_decay"], nullable=True),
    _k("aux_factor", "float", 0.0, "mindcv", NO_EFFECT_KEYS["aux_factor"]),
    _k("reduction", "str", "mean", "mindcv", NO_EFFECT_KEYS["reduction"]),
    _k("val_amp_level", "str", "O0", "mindcv", NO_EFFECT_KEYS["val_amp_level"], canon=_upper),
    _k("amp_cast_list", "str", None, "mindcv", NO_EFFECT_KEYS["amp_cast_list"], nullable=True),
    _k("eval_shuffle", "bool", False, "mindcv", NO_EFFECT_KEYS["eval_shuffle"]),
    _k("resume_opt", "bool", False, "mindcv", NO_EFFECT_KEYS["resume_opt"]),
    _k("enable_modelarts", "bool", False, "mindcv", NO_EFFECT_KEYS["enable_modelarts"]),
    _k("multi_data_url", "str", "/cache/data/", "mindcv", NO_EFFECT_KEYS["multi_data_url"]),
    _k("data_url", "str", "/cache/data/", "mindcv", NO_EFFECT_KEYS["data_url"]),
    _k("ckpt_url", "str", "/cache/output/", "mindcv", NO_EFFECT_KEYS["ckpt_url"]),
    _k("train_url", "str", "/cache/output/", "mindcv", NO_EFFECT_KEYS["train_url"]),
]

# MindCV's older keys, translated onto the newer ones: {old: (new, {old value: new value})}.
ALIAS_KEYS = {
    "filter_bias_and_bn": ("weight_decay_filter", {True: "norm_and_bias", False: "disable"}),
    "dynamic_loss_scale": ("loss_scale_type", {True: "dynamic", False: "fixed"}),
}

_ALIAS_SPECS = [
    _k("filter_bias_and_bn", "bool", None, "mindcv",
       "older MindCV key: true = weight_decay_filter norm_and_bias, false = disable",
       nullable=True),
    _k("dynamic_loss_scale", "bool", None, "mindcv",
       "older MindCV key: true = loss_scale_type dynamic, false = fixed", nullable=True),
]

# Keys that exist only for a given script (command line only, never in YAML).
_SCRIPT_ONLY = {
    "validate": [_k("json", "str", None, "run", "also write the metrics to this JSON file",
                    nullable=True)],
}

# Keys that steer this one run and are left out of dumped / saved configs.
_RUN_ONLY = ("dry_run", "json")

_SPECS = {s.name: s for s in _KEYS + _NO_EFFECT_SPECS + _ALIAS_SPECS}
assert len(_SPECS) == len(_KEYS) + len(_NO_EFFECT_SPECS) + len(_ALIAS_SPECS)
assert set(NO_EFFECT_KEYS) == {s.name for s in _NO_EFFECT_SPECS}


def _check_script(script):
    if script not in SCRIPTS:
        raise UserError(f"unknown script {script!r}. Use one of: {', '.join(SCRIPTS)}")


def _specs(script):
    return dict(_SPECS, **{s.name: s for s in _SCRIPT_ONLY.get(script, [])})


def config_keys(script="train"):
    """All keys ``parse_args`` returns for ``script`` (the config file path excluded)."""
    _check_script(script)
    return list(_specs(script))


def get_defaults(script="train"):
    """A fresh ``{key: built-in default}`` for ``script``."""
    _check_script(script)
    return {name: _copy(spec.default) for name, spec in _specs(script).items()}


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
}


class _BadType(Exception):
    pass


def _is_null_word(v):
    return isinstance(v, str) and v.strip().lower() in _NULL_WORDS


def _to_bool(v):
    if isinstance(v, bool):
        return v
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    if isinstance(v, str):
        w = v.strip().lower()
        if w in _TRUE_WORDS:
            return True
        if w in _FALSE_WORDS:
            return False
    raise _BadType


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
    if from_cli and isinstance(v, list) and spec.kind not in ("floats", "ints", "color_jitter",
                                                              "re_value"):
        v = v[0] if len(v) == 1 else v
    if from_cli and isinstance(v, list):
        if len(v) == 1 and _is_null_word(v[0]):
            v = None
        else:
            v = _cli_list(v)
    if v is None or _is_null_word(v):
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
class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises UserError instead of printing usage and exiting."""

    def error(self, message):
        raise UserError(f"command line: {message}. Run with --help for the valid options")


def _build_parser(script, specs):
    parser = _Parser(prog=f"{script}.py", allow_abbrev=False,
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
        elif spec.kind in ("floats", "ints", "color_jitter", "re_value"):
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


def parse_args(argv=None, script="train"):
    """Resolve the config: built-in defaults < YAML (``-c FILE``) < command line.

    ``argv`` defaults to ``sys.argv[1:]``; ``script`` is ``"train"`` or ``"validate"``
    (validate also takes ``--json PATH``). Returns an ``argparse.Namespace`` with every key of
    ``config_keys(script)`` plus ``config`` (the YAML path, or None). Raises ``UserError``.
    """
    _check_script(script)
    argv = list(sys.argv[1:] if argv is None else argv)
    specs = _specs(script)
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
            print(f"warning: config key '{name}' = {_show(resolved[name])} {sources[name]} has no "
                  f"effect here ({reason}); accepted only so MindCV configs run unchanged",
                  file=sys.stderr)

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
    for name, spec in _SPECS.items():
        if name in _RUN_ONLY or name in ALIAS_KEYS or name not in values:
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
    """Write ``dump_config(args)`` to ``path`` atomically (``path.tmp`` then ``os.replace``)."""
    path = os.fspath(path)
    text = dump_config(args)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = path + ".tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path
