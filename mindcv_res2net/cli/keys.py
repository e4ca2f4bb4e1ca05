"""The typed config keys of train.py and validate.py: name, kind, default, group, help, checks.

One ``Key`` per MindCV key name, in ``--help`` order. To add a key: append a ``_k(...)`` line to
``KEYS`` (its kind is one of ``Key.kind``'s; ``check`` returns ``None`` or the problem as
"must be ..."), then read it as ``args.<name>`` where it is used. :mod:`.config` turns the
table into the parser, the YAML loader, the validation and the dumped config.
"""
from ..data import DATASETS, INTERPOLATIONS, SAMPLERS
from ..errors import UserError
from ..loss import LOSSES, REDUCTIONS
from ..optim import OPTIMIZERS, WEIGHT_DECAY_FILTERS
from ..scheduler import SCHEDULERS
from ..training.amp_cast_list import parse_cast_list
from .options import DEVICE_TARGETS, canon_device_target

SCRIPTS = ("train", "validate")


class Key:
    """One config key: its kind (value type), default and checks."""

    __slots__ = ("name", "kind", "default", "group", "help", "nullable", "choices", "check",
                 "length", "canon", "refused")

    def __init__(self, name, kind, default, group, help, nullable=False, choices=None,
                 check=None, length=None, canon=None, refused=None):
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
        self.refused = refused or {}  # MindCV values not supported here: {value: the reason}


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


def _loss_canon(s):
    return s.upper()


def _amp_cast_list(v):
    if v is None:
        return None
    try:
        parse_cast_list(v)
    except ValueError as exc:
        return f"must be a list of MindSpore cell types such as '[nn.Conv2d, nn.Dense]' ({exc})"
    return None


# ----------------------------------------------------------------------------- the keys
def _k(*a, **kw):
    return Key(*a, **kw)


KEYS = [
    # system
    _k("mode", "int", 0, "system", "0: GRAPH_MODE, 1: PYNATIVE_MODE", choices=(0, 1)),
    _k("distribute", "distribute", "auto", "system",
       "distributed training: auto (detect the launcher), true or false"),
    _k("val_while_train", "bool", False, "system", "evaluate on the val split while training"),
    _k("val_interval", "int", 1, "system", "epochs between evaluations", check=_ge(1)),
    _k("log_interval", "int", 100, "system", "steps between training log lines", check=_ge(1)),
    _k("seed", "int", 42, "system", "random seed for numpy, random and mindspore", check=_ge(0)),
    _k("device_target", "str", "auto", "system", "auto, CPU, GPU or Ascend",
       choices=DEVICE_TARGETS, canon=canon_device_target),
    _k("debug", "bool", False, "system", "show tracebacks for user errors, verbose checks"),
    _k("strict_data", "bool", False, "system",
       "false: unreadable images are skipped with a warning; true: they are fatal"),
    _k("sync_bn", "bool", False, "system", "synchronise BatchNorm statistics across devices"),
    # data
    _k("dataset", "str", "imagenet", "data",
       "imagenet or imagefolder (class folders, or MindRecord shards found in data_dir), mindrecord, fashion_mnist or mnist",
       choices=DATASETS, canon=_lower,
       refused={name: "the CIFAR binary files are not read here; write the images as class folders "
                "(train/<class>/*.png, val/<class>/*.png) and use dataset imagenet"
                for name in ("cifar10", "cifar100")}),
    _k("data_dir", "str", "./", "data", "dataset root directory"),
    _k("train_split", "str", "train", "data", "training split name (sub-folder)"),
    _k("val_split", "str", "val", "data", "validation split name (sub-folder)"),
    _k("dataset_download", "bool", False, "data",
       "fashion_mnist / mnist: fetch and verify the official idx files into data_dir when missing"),
    _k("num_parallel_workers", "int", 8, "data", "data pipeline workers", check=_ge(1)),
    _k("shuffle", "bool", True, "data", "shuffle the training data"),
    _k("eval_shuffle", "bool", False, "data",
       "shuffle the evaluation data (the figures are the same; only the order changes)"),
    _k("num_samples", "int", None, "data", "use only this many samples (null: all)",
       nullable=True, check=_gt(0)),
    _k("batch_size", "int", 128, "data", "batch size per device", check=_gt(0)),
    _k("drop_remainder", "bool", True, "data", "drop the last incomplete training batch"),
    _k("class_list", "str", None, "data",
       "null, or a text file with one class name per line (fixes the label order)", nullable=True),
    _k("train_list", "str", None, "data",
       "null, or a list file of the training images: 'relative/path<TAB>label' lines (label: index or class "
       "name), paths relative to data_dir", nullable=True),
    _k("val_list", "str", None, "data", "null, or a list file of the validation images (as train_list)",
       nullable=True),
    _k("sampler", "str", "default", "data",
       "default: each image once per epoch, in a seeded order; balanced: classes drawn uniformly, images with "
       "replacement", choices=SAMPLERS, canon=_lower),
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
       choices=INTERPOLATIONS, canon=_lower),
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
    _k("re_max_attempts", "int", 10, "augmentation",
       "random-erasing tries to place a box; after this many misses the image is left as it is",
       check=_ge(1)),
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
    _k("aug_repeats", "int", 0, "augmentation",
       "repeated augmentation: each image appears this many times per epoch, differently augmented "
       "(0 or 1: off; 3 is usual); the epoch length is unchanged", check=_ge(0)),
    _k("aug_splits", "int", 0, "augmentation",
       "0: off; 3: each batch holds every image clean and twice augmented by auto_augment, trained "
       "with the Jensen-Shannon consistency loss (AugMix)", choices=(0, 3)),
    # model
    _k("model", "str", "res2net50", "model", "model name in the zoo"),
    _k("num_classes", "int", None, "model", "number of classes (null: from the dataset)",
       nullable=True, check=_gt(0)),
    _k("in_channels", "int", 3, "model", "input image channels", check=_gt(0)),
    _k("pretrained", "bool", False, "model", "load the published pretrained weights"),
    _k("ckpt_path", "str", None, "model", "initialise the model from this checkpoint (null: none)",
       nullable=True),
    _k("resume_opt", "bool", False, "model",
       "with ckpt_path: continue that training checkpoint (weights, optimizer, epoch), like --resume PATH"),
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
    _k("frozen_stages", "int", -1, "model",
       "-1: nothing frozen; 0: the stem; K: the stem and stages 1..K (no gradient, no optimizer state, no "
       "weight decay); the head never", check=lambda v: None if -1 <= v <= 4 else "must be in [-1, 4]"),
    _k("norm_eval", "bool", False, "model",
       "the BatchNorm layers of the frozen stages normalise with their moving statistics and keep them"),
    _k("layer_decay", "float", None, "model",
       "layer-wise lr decay (null: off): the head trains at lr, layer4 at lr*d, ... the stem at lr*d^5",
       nullable=True, check=lambda v: None if 0 < v <= 1 else "must be in (0, 1]"),
    # optimizer
    _k("opt", "str", "adam", "optimizer", "optimizer",
       choices=OPTIMIZERS,
       refused={"adan": "adan is in MindCV's optimizer factory but not among the choices of its train.py, and "
                "is not implemented here; use adamw or lamb"},
       canon=_lower),
    _k("lr", "float", 0.001, "optimizer", "peak learning rate", check=_ge(0)),
    _k("lr_scale", "str", "none", "optimizer",
       "scale lr with the global batch (batch_size x ranks x gradient_accumulation_steps): none (MindCV), "
       "linear (lr x global/lr_base_batch) or sqrt (lr x sqrt(global/lr_base_batch))",
       choices=("none", "linear", "sqrt"), canon=_lower),
    _k("lr_base_batch", "int", 256, "optimizer",
       "the global batch that lr is given for, with lr_scale (256: MindCV's recipes, 8 devices x 32)",
       check=_ge(1)),
    _k("momentum", "float", 0.9, "optimizer", "momentum", check=_ge(0)),
    _k("weight_decay", "float", 1e-6, "optimizer", "weight decay", check=_ge(0)),
    _k("use_nesterov", "bool", False, "optimizer", "Nesterov momentum"),
    _k("weight_decay_filter", "str", "disable", "optimizer",
       "disable: decay all parameters; auto: MindSpore's own filtering; "
       "norm_and_bias: no decay on norm parameters and biases",
       choices=WEIGHT_DECAY_FILTERS, canon=_lower),
    _k("eps", "float", 1e-10, "optimizer", "optimizer epsilon", check=_ge(0)),
    # scheduler
    _k("scheduler", "str", "cosine_decay", "scheduler", "learning-rate schedule",
       choices=SCHEDULERS, canon=_lower),
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
       choices=LOSSES, canon=_loss_canon),
    _k("class_weights", "class_weights", None, "loss",
       "null, balanced (n / (classes x n_class), from the training labels), or one weight per class",
       nullable=True, check=lambda v: None if v == "balanced" or all(w >= 0 for w in v) else "must be >= 0"),
    _k("label_smoothing", "float", 0.0, "loss", "label smoothing",
       check=_between(0, 1, hi_open=True)),
    _k("reduction", "str", "mean", "loss", "the loss over a batch: mean or sum of the per-image losses",
       choices=REDUCTIONS, canon=_lower),
    _k("aux_factor", "float", 0.0, "loss",
       "weight of an auxiliary head's loss: must be 0 (Res2Net has no auxiliary head)",
       check=lambda v: None if v == 0 else "must be 0 (Res2Net has no auxiliary head; MindCV uses the key for "
       "Inception-style models)"),
    # amp
    _k("amp_level", "str", "O0", "amp", "O0 fp32, O1 white-list fp16, O2 fp16 but BN, O3 all fp16",
       choices=("O0", "O1", "O2", "O3"), canon=_upper),
    _k("val_amp_level", "str", "O0", "amp", "amp level of validate.py's evaluation (MindCV's meaning; "
       "validation inside train.py runs the training network at amp_level)",
       choices=("O0", "O1", "O2", "O3"), canon=_upper),
    _k("amp_cast_list", "str", None, "amp",
       "null, or the cell types to cast, as MindCV writes them: '[nn.Conv2d, nn.Dense]' (O1: these run "
       "in fp16; O2: all but these run in fp16)", nullable=True, check=_amp_cast_list),
    _k("loss_scale_type", "str", "fixed", "amp",
       "fixed, dynamic, or auto (dynamic with AMP, a fixed scale of 1 at O0)",
       choices=("fixed", "dynamic", "auto"), canon=_lower),
    _k("loss_scale", "float", 1.0, "amp", "(initial) loss scale", check=_gt(0)),
    _k("drop_overflow_update", "bool", False, "amp",
       "true: a step whose gradients overflow is skipped; false (MindCV's default) is treated the same "
       "(non-finite gradients would destroy the weights) and said once at start-up"),
    _k("max_consecutive_overflows", "int", 100, "amp",
       "stop the run (keeping the last good checkpoint) after this many overflowing steps in a row", check=_ge(1)),
    # new keys
    _k("resume", "str", None, "run", "null, 'auto' (latest checkpoint in ckpt_save_dir) or a path",
       nullable=True),
    _k("overwrite", "bool", False, "run",
       "start (or resume) in a ckpt_save_dir that holds another run's checkpoints; they are left alone"),
    _k("summary_dir", "str", None, "run",
       "null, or a folder for TensorBoard event files (loss, lr, loss scale, speed, val metrics)",
       nullable=True),
    _k("dry_run", "bool", False, "run", "print the resolved config as YAML and exit"),
]

# MindCV keys accepted so MindCV configs run unchanged, but ignored here (ModelArts only).
NO_EFFECT_KEYS = {
    "enable_modelarts": "ModelArts is not supported; it must stay false",
    "multi_data_url": "ModelArts is not supported",
    "data_url": "ModelArts is not supported",
    "ckpt_url": "ModelArts is not supported",
    "train_url": "ModelArts is not supported",
}

NO_EFFECT_SPECS = [
    _k("enable_modelarts", "bool", False, "mindcv", NO_EFFECT_KEYS["enable_modelarts"],
       check=lambda v: None if not v else "must be false (ModelArts is not supported: run train.py "
       "directly with --data_dir and --ckpt_save_dir)"),
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

ALIAS_SPECS = [
    _k("filter_bias_and_bn", "bool", None, "mindcv",
       "older MindCV key: true = weight_decay_filter norm_and_bias, false = disable",
       nullable=True),
    _k("dynamic_loss_scale", "bool", None, "mindcv",
       "older MindCV key: true = loss_scale_type dynamic, false = fixed", nullable=True),
]

# Keys that exist only for a given script (command line only, never in YAML).
SCRIPT_ONLY = {
    "validate": [_k("json", "str", None, "run", "also write the metrics to this JSON file",
                    nullable=True),
                 _k("onnx_path", "str", None, "run",
                    "evaluate this exported ONNX file with onnxruntime (with ckpt_path: both, compared)",
                    nullable=True),
                 _k("mindir_path", "str", None, "run",
                    "evaluate this exported MINDIR file with MindSpore (with ckpt_path: both, compared)",
                    nullable=True),
                 _k("per_class", "bool", False, "run",
                    "also report each class (support, recall, precision, F1), the confusion matrix and the "
                    "misclassified images (files in per_class_dir; in --json)"),
                 _k("per_class_dir", "str", None, "run",
                    "where --per_class writes confusion_matrix.csv/.png and misclassified.csv (null: the "
                    "folder of --json, else ./per_class)", nullable=True)],
}

# Keys that steer this one run and are left out of dumped / saved configs.
RUN_ONLY = ("dry_run", "json")

SPECS = {s.name: s for s in KEYS + NO_EFFECT_SPECS + ALIAS_SPECS}
assert len(SPECS) == len(KEYS) + len(NO_EFFECT_SPECS) + len(ALIAS_SPECS)
assert set(NO_EFFECT_KEYS) == {s.name for s in NO_EFFECT_SPECS}



def check_script(script):
    if script not in SCRIPTS:
        raise UserError(f"unknown script {script!r}. Use one of: {', '.join(SCRIPTS)}")


def specs_for(script):
    """``{name: Key}`` of every key ``script`` takes (the shared ones, then its own)."""
    check_script(script)
    return dict(SPECS, **{s.name: s for s in SCRIPT_ONLY.get(script, [])})
