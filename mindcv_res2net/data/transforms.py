"""Image transforms (MindCV key names and defaults).

ImageNet-style (``imagenet`` / ``imagefolder``; the image column holds encoded bytes):

* train: ``RandomCropDecodeResize`` (decode fused with the random resized crop: for JPEGs only
  the needed part is decoded, with DCT scaling) -> flips -> auto-augment *or* colour jitter ->
  normalise -> HWC->CHW -> random erasing.
* eval: ``Decode`` -> resize the shorter side to ``floor(image_resize / crop_pct)`` -> centre
  crop ``image_resize`` -> normalise -> HWC->CHW.

MNIST / Fashion-MNIST (the image column holds HxWx1 uint8): train = random resized crop to
``image_resize`` (``scale`` / ``ratio`` as given; use e.g. scale (0.8, 1) for 28 px images) and,
for Fashion-MNIST only by default, a horizontal flip; eval = resize to ``image_resize`` square.
Grey is repeated to 3 channels when ``in_channels == 3``.

``mean`` / ``std``: if every value of both is <= 1 they are fractions of 255 (0.485 -> 123.675),
otherwise both are on the 0-255 scale. Output: float32 CHW.

``EvalPreprocessing``: the evaluation transform as its config keys (``EVAL_KEYS``: dataset,
image_resize, crop_pct, interpolation, mean, std, in_channels), the one definition that
validate.py's pipeline, predict.py's preprocessing, train.py's checkpoints and export.py's files
share; ``resolve_eval_preprocessing`` picks each key from the first source that sets it and
``describe_preprocessing`` says where each came from, in one line.
"""
import math

import numpy as np

import mindspore.dataset.vision as vision
from mindspore.dataset.vision import Inter

from ..errors import UserError
from . import INTERPOLATIONS
from .dataset import canonical_name, MNIST_FAMILY
from .augmix import AugMix
from .randaugment import RandAugment
from .seeded_op import NumpySeededOp

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DATASET_MEAN_STD = {
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "mnist": ((0.1307,), (0.3081,)),
}
DEFAULT_CROP_PCT = 0.875

_INTERP = dict(zip(INTERPOLATIONS, (Inter.BILINEAR, Inter.BICUBIC, Inter.NEAREST, Inter.AREA)))

AUTO_AUGMENT_HELP = ("randaug-m<M>[-n<N>][-mstd<S>][-mmax<X>][-inc1][-p<P>] (e.g. randaug-m9-mstd0.5-inc1), "
                     "autoaug / autoaugr (ImageNet AutoAugment policy), autoaug-cifar10, autoaug-svhn, "
                     "augmix-m<M>[-w<chains>][-d<depth>][-a<alpha>][-mstd<S>][-b1] (e.g. augmix-m3-w3), "
                     "trivialaugwide, 3a (one of grey / solarize / blur per image)")


def parse_interpolation(name):
    if isinstance(name, Inter):
        return name
    key = str(name).strip().lower()
    if key not in _INTERP:
        raise UserError(f"unknown interpolation: {name!r}. Use one of {', '.join(INTERPOLATIONS)}")
    return _INTERP[key]


def mean_std_255(mean, std, channels):
    """Mean / std on the 0-255 scale, one value per channel (see module docstring)."""
    mean = [float(v) for v in np.atleast_1d(np.asarray(mean, dtype=np.float64))]
    std = [float(v) for v in np.atleast_1d(np.asarray(std, dtype=np.float64))]
    if any(s <= 0 for s in std):
        raise UserError(f"std values must be positive, got {std}")
    if max(mean + std) <= 1.0:
        mean = [v * 255.0 for v in mean]
        std = [v * 255.0 for v in std]
    if len(mean) == 1:
        mean = mean * channels
    if len(std) == 1:
        std = std * channels
    if len(mean) != channels or len(std) != channels:
        raise UserError(f"mean/std need 1 or {channels} values, got mean={mean}, std={std}")
    return mean, std


def _pair(value, name):
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise UserError(f"{name} needs two numbers (min, max), got {value!r}") from None
    if a > b:
        raise UserError(f"{name} must be (min, max) with min <= max, got {value!r}")
    return a, b


class RandomErasing(NumpySeededOp):
    """Random erasing on a normalised CHW float32 image (Zhong et al.; timm semantics).

    ``value``: a number or one number per channel (fill in normalised units), ``'random'``
    (per-pixel N(0, 1), MindCV's ``re_value: random``) or ``'rand'`` (one N(0, 1) per channel).
    """

    def __init__(self, prob=0.25, scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0, max_attempts=10,
                 seed=None):
        self.prob = float(prob)
        self.scale = _pair(scale, "re_scale")
        self.ratio = _pair(ratio, "re_ratio")
        if self.ratio[0] <= 0:
            raise UserError(f"re_ratio must be positive, got {ratio!r}")
        if isinstance(value, str):
            if value not in ("random", "rand", "pixel", "const"):
                raise UserError(f"re_value must be a number, 'random' or 'rand', got {value!r}")
            self.value = {"pixel": "random", "const": 0.0}.get(value, value)
        else:
            self.value = np.asarray(value, dtype=np.float32)
        self.max_attempts = int(max_attempts)
        self.set_seed(seed)

    def __call__(self, image):
        self.check_process()
        rng = self.rng
        if rng.random() >= self.prob:
            return image
        image = np.array(image, dtype=np.float32, copy=True)
        c, h, w = image.shape
        area = h * w
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(self.max_attempts):
            target = rng.uniform(*self.scale) * area
            aspect = math.exp(rng.uniform(*log_ratio))
            eh = int(round(math.sqrt(target * aspect)))
            ew = int(round(math.sqrt(target / aspect)))
            if 0 < eh < h and 0 < ew < w:
                top = int(rng.integers(0, h - eh + 1))
                left = int(rng.integers(0, w - ew + 1))
                if isinstance(self.value, str):
                    shape = (c, eh, ew) if self.value == "random" else (c, 1, 1)
                    fill = rng.standard_normal(shape, dtype=np.float32)
                else:
                    fill = self.value.reshape(-1, 1, 1) if self.value.ndim else self.value
                image[:, top:top + eh, left:left + ew] = fill
                break
        return image


class ThreeAugment(NumpySeededOp):
    """'3a' (DeiT III): per image one of greyscale, solarize (threshold 128), Gaussian blur
    (sigma uniform in [0.1, 2]). Python op on HxWx3 uint8."""

    def __init__(self, seed=None):
        self.set_seed(seed)

    def __call__(self, image):
        from PIL import Image, ImageFilter, ImageOps

        self.check_process()
        img = Image.fromarray(np.asarray(image, dtype=np.uint8))
        choice = int(self.rng.integers(0, 3))
        if choice == 0:
            img = ImageOps.grayscale(img).convert("RGB")
        elif choice == 1:
            img = ImageOps.solarize(img, 128)
        else:
            img = img.filter(ImageFilter.GaussianBlur(radius=float(self.rng.uniform(0.1, 2.0))))
        return np.asarray(img, dtype=np.uint8)


def _auto_augment_op(policy, mean255, interpolation):
    policy = str(policy).strip()
    fill = tuple(int(min(255, round(v))) for v in mean255)
    if policy.startswith("randaug"):
        return RandAugment(policy, fill=fill, interpolation=interpolation)
    if policy.startswith("augmix"):
        return AugMix(policy, fill=fill, interpolation=interpolation)
    inter = Inter.BICUBIC if interpolation == "bicubic" else Inter.BILINEAR
    if policy == "3a":
        return ThreeAugment()
    if policy.split("-")[0] in ("autoaug", "autoaugr", "autoaugment", "v0", "original") and \
            policy.split("-")[-1] not in ("cifar10", "svhn"):
        return vision.AutoAugment(vision.AutoAugmentPolicy.IMAGENET, interpolation=inter, fill_value=fill)
    if policy == "autoaug-cifar10":
        return vision.AutoAugment(vision.AutoAugmentPolicy.CIFAR10, interpolation=inter, fill_value=fill)
    if policy == "autoaug-svhn":
        return vision.AutoAugment(vision.AutoAugmentPolicy.SVHN, interpolation=inter, fill_value=fill)
    if policy in ("trivialaugwide", "trivialaug"):
        return vision.TrivialAugmentWide(interpolation=inter, fill_value=fill)
    raise UserError(f"unknown auto_augment policy: {policy!r}. Supported: {AUTO_AUGMENT_HELP}")


def _color_jitter_op(color_jitter):
    if isinstance(color_jitter, (list, tuple)):
        if len(color_jitter) not in (3, 4):
            raise UserError(f"color_jitter needs 1, 3 or 4 numbers, got {color_jitter!r}")
        values = [float(v) for v in color_jitter]
    else:
        values = [float(color_jitter)] * 3
    b, c, s = values[:3]
    hue = values[3] if len(values) == 4 else 0.0
    if not 0 <= hue <= 0.5:
        raise UserError(f"color_jitter hue must be in [0, 0.5], got {hue}")
    return vision.RandomColorAdjust(brightness=(max(0.0, 1 - b), 1 + b), contrast=(max(0.0, 1 - c), 1 + c),
                                    saturation=(max(0.0, 1 - s), 1 + s), hue=(-hue, hue))


def create_transforms(dataset_name="imagenet", image_resize=224, is_training=False,
                      scale=(0.08, 1.0), ratio=(0.75, 1.333), hflip=None, vflip=0.0,
                      color_jitter=None, interpolation="bilinear", crop_pct=DEFAULT_CROP_PCT,
                      auto_augment=None, re_prob=0.0, re_scale=(0.02, 0.33), re_ratio=(0.3, 3.3),
                      re_value=0, re_max_attempts=10, mean=None, std=None, separate=False,
                      in_channels=3):
    """List of image-column operations (see the module docstring).

    ``hflip=None`` means 0.5, except 0 for MNIST (mirrored digits are other digits).
    ``separate=True`` returns ``(primary, secondary, final)`` lists: crop/flip, auto-augment or
    colour jitter, normalise/CHW/erasing (empty lists where a stage has nothing).
    Python ops in the lists (RandAugment, AugMix, RandomErasing) have ``set_seed(seed)``;
    :func:`create_loader` seeds them with ``seed + rank``.
    """
    key = canonical_name(dataset_name)
    if isinstance(image_resize, (list, tuple)):
        if len(image_resize) != 2 or image_resize[0] != image_resize[1]:
            raise UserError(f"image_resize must be one number (square images), got {image_resize!r}")
        image_resize = image_resize[0]
    image_resize = int(image_resize)
    if image_resize < 1:
        raise UserError(f"image_resize must be positive, got {image_resize}")
    if not 0 < float(crop_pct) <= 1.0:
        raise UserError(f"crop_pct must be in (0, 1], got {crop_pct}")
    for pname, p in (("hflip", hflip), ("vflip", vflip), ("re_prob", re_prob)):
        if p is not None and not 0.0 <= float(p) <= 1.0:
            raise UserError(f"{pname} is a probability in [0, 1], got {p}")
    inter = parse_interpolation(interpolation)
    interp_name = str(interpolation).lower() if not isinstance(interpolation, Inter) else "bilinear"

    if key in MNIST_FAMILY:
        if in_channels not in (1, 3):
            raise UserError(f"in_channels must be 1 or 3 for {key}, got {in_channels}")
        d_mean, d_std = DATASET_MEAN_STD[key]
        mean, std = mean_std_255(d_mean if mean is None else mean, d_std if std is None else std, in_channels)
        if hflip is None:
            hflip = 0.0 if key == "mnist" else 0.5
        secondary = []
        if is_training:
            primary = [vision.RandomResizedCrop(image_resize, scale=_pair(scale, "scale"),
                                                ratio=_pair(ratio, "ratio"), interpolation=inter)]
            if hflip > 0:
                primary.append(vision.RandomHorizontalFlip(prob=float(hflip)))
            if vflip and vflip > 0:
                primary.append(vision.RandomVerticalFlip(prob=float(vflip)))
        else:
            primary = [vision.Resize((image_resize, image_resize), interpolation=inter)]
        final = []
        if in_channels == 3:
            final.append(vision.ConvertColor(vision.ConvertMode.COLOR_GRAY2RGB))  # repeat grey
        final += [vision.Normalize(mean=mean, std=std), vision.HWC2CHW()]
        if is_training and re_prob and re_prob > 0:
            final.append(RandomErasing(re_prob, re_scale, re_ratio, re_value, re_max_attempts))
        return (primary, secondary, final) if separate else primary + secondary + final

    if in_channels != 3:
        raise UserError(f"in_channels={in_channels} is only supported for mnist / fashion_mnist; "
                        f"{key} images are RGB")
    mean, std = mean_std_255(IMAGENET_MEAN if mean is None else mean, IMAGENET_STD if std is None else std, 3)
    if hflip is None:
        hflip = 0.5
    if is_training:
        primary = [vision.RandomCropDecodeResize(image_resize, scale=_pair(scale, "scale"),
                                                 ratio=_pair(ratio, "ratio"), interpolation=inter)]
        if hflip > 0:
            primary.append(vision.RandomHorizontalFlip(prob=float(hflip)))
        if vflip and vflip > 0:
            primary.append(vision.RandomVerticalFlip(prob=float(vflip)))
        secondary = []
        if auto_augment:
            secondary.append(_auto_augment_op(auto_augment, mean, interp_name))
        elif color_jitter is not None and color_jitter is not False:
            secondary.append(_color_jitter_op(color_jitter))
        final = [vision.Normalize(mean=mean, std=std), vision.HWC2CHW()]
        if re_prob and re_prob > 0:
            final.append(RandomErasing(re_prob, re_scale, re_ratio, re_value, re_max_attempts))
    else:
        scale_size = int(math.floor(image_resize / float(crop_pct)))
        primary = [vision.Decode(), vision.Resize(scale_size, interpolation=inter),
                   vision.CenterCrop(image_resize)]
        secondary = []
        final = [vision.Normalize(mean=mean, std=std), vision.HWC2CHW()]
    return (primary, secondary, final) if separate else primary + secondary + final


# ----------------------------------------------------------------------------------------------
# the evaluation preprocessing: one definition for validate.py, predict.py and exported files
# ----------------------------------------------------------------------------------------------

# The config keys that decide the evaluation transform (MindCV's names), in display order.
EVAL_KEYS = ("dataset", "image_resize", "crop_pct", "interpolation", "mean", "std", "in_channels")


def eval_dataset(name):
    """The data set family that decides how an image is read for evaluation: ``fashion_mnist`` /
    ``mnist`` (decoded as grey, resized to a square), else ``imagenet`` (RGB, shorter side resized,
    centre crop): ImageFolder and MindRecord sets are read as ImageNet is."""
    key = canonical_name(name)
    return key if key in MNIST_FAMILY else "imagenet"


def _number_list(value, key):
    if value is None:
        return None
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise UserError(f"{key} must be a list of numbers, got {value!r}")
    return tuple(float(v) for v in values)


def _whole_number(value, key):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < 1:
        raise UserError(f"{key} must be a positive whole number, got {value!r}")
    return int(value)


class EvalPreprocessing:
    """How an image file becomes a model input at evaluation: the config keys of ``EVAL_KEYS``.

    ``validate.py`` builds its evaluation pipeline from them, ``predict.py`` preprocesses each file
    with the same ``transforms()``, ``train.py`` stores ``keys()`` in every checkpoint and
    ``export.py`` in the exported file, so all of them feed a model alike.

    ``dataset``: ``imagenet`` (every RGB image folder: decoded as RGB, the shorter side resized to
    ``floor(image_resize / crop_pct)``, centre crop) or ``fashion_mnist`` / ``mnist`` (decoded as
    grey, resized to ``image_resize`` square, repeated to ``in_channels``). ``mean`` / ``std``:
    as in the config (fractions or 0-255, see the module docstring); None: the data set's own.
    A value that cannot be used raises ``UserError``; ``source`` names where it came from.
    """

    def __init__(self, dataset="imagenet", image_resize=224, crop_pct=DEFAULT_CROP_PCT, interpolation="bilinear",
                 mean=None, std=None, in_channels=3, source=""):
        where = f" (in {source})" if source else ""
        try:
            self.dataset = eval_dataset(dataset)
            self.image_resize = _whole_number(image_resize, "image_resize")
            if isinstance(crop_pct, bool) or not isinstance(crop_pct, (int, float)) or not 0 < crop_pct <= 1:
                raise UserError(f"crop_pct must be a number in (0, 1], got {crop_pct!r}")
            self.crop_pct = float(crop_pct)
            parse_interpolation(interpolation)
            self.interpolation = str(interpolation).strip().lower()
            self.mean, self.std = _number_list(mean, "mean"), _number_list(std, "std")
            self.in_channels = _whole_number(in_channels, "in_channels")
            if self.in_channels not in ((1, 3) if self.grey else (3,)):
                raise UserError(f"in_channels {self.in_channels} does not fit dataset {self.dataset} (RGB images "
                                f"take 3; fashion_mnist / mnist take 1 or 3)")
            self.normalisation()
        except UserError as exc:
            raise UserError(f"preprocessing{where}: {exc}") from None

    @classmethod
    def from_keys(cls, keys, source=""):
        """From a ``{config key: value}`` mapping (``keys()``'s); keys outside ``EVAL_KEYS`` are ignored."""
        if not isinstance(keys, dict):
            raise UserError(f"preprocessing{f' (in {source})' if source else ''}: expected a mapping of config "
                            f"keys, got {type(keys).__name__}")
        return cls(**{k: keys[k] for k in EVAL_KEYS if k in keys}, source=source)

    @classmethod
    def from_model_cfg(cls, cfg, in_channels=3):
        """A model's own evaluation (``net.default_cfg``: input size, crop, interpolation, mean, std),
        for a checkpoint that stores none. A grey model (``in_channels`` 1) reads images as
        Fashion-MNIST does, with that data set's mean and std."""
        cfg = dict(cfg or {})
        grey = int(in_channels) == 1
        return cls(dataset="fashion_mnist" if grey else "imagenet",
                   image_resize=tuple(cfg.get("input_size", (3, 224, 224)))[-1],
                   crop_pct=cfg.get("crop_pct", DEFAULT_CROP_PCT), interpolation=cfg.get("interpolation", "bilinear"),
                   mean=None if grey else cfg.get("mean"), std=None if grey else cfg.get("std"),
                   in_channels=in_channels)

    @property
    def grey(self):
        """Whether images are decoded as grey (the MNIST family)."""
        return self.dataset in MNIST_FAMILY

    @property
    def input_size(self):
        """``(channels, height, width)`` of the model input."""
        return (self.in_channels, self.image_resize, self.image_resize)

    def keys(self):
        """``{config key: value}``: what a checkpoint and an exported file store (JSON-friendly)."""
        return {"dataset": self.dataset, "image_resize": self.image_resize, "crop_pct": self.crop_pct,
                "interpolation": self.interpolation, "mean": None if self.mean is None else list(self.mean),
                "std": None if self.std is None else list(self.std), "in_channels": self.in_channels}

    def _given_mean_std(self):
        """The mean and std as configured, the data set's own where None."""
        d_mean, d_std = DATASET_MEAN_STD[self.dataset] if self.grey else (IMAGENET_MEAN, IMAGENET_STD)
        return (d_mean if self.mean is None else self.mean), (d_std if self.std is None else self.std)

    def normalisation(self):
        """``(mean, std)`` per channel on the 0-255 scale, as ``Normalize`` applies them."""
        return mean_std_255(*self._given_mean_std(), self.in_channels)

    def normalisation_fractions(self):
        """``(mean, std)`` per channel as fractions of the pixel range (what exported files state):
        the values as given when they are fractions already, else divided by 255."""
        mean, std = self._given_mean_std()
        if max(list(mean) + list(std)) > 1.0:
            return tuple([v / 255.0 for v in values] for values in self.normalisation())
        return tuple([float(v) for v in values] * (self.in_channels if len(values) == 1 else 1)
                     for values in (mean, std))

    def transforms(self):
        """The evaluation transform: ``create_transforms(..., is_training=False)`` on these keys.
        The RGB list starts with ``Decode`` (the image column holds encoded bytes); the grey one works
        on decoded HxWx1 arrays."""
        return create_transforms(self.dataset, self.image_resize, is_training=False,
                                 interpolation=self.interpolation, crop_pct=self.crop_pct, mean=self.mean,
                                 std=self.std, in_channels=self.in_channels)

    def __eq__(self, other):
        return isinstance(other, EvalPreprocessing) and self.keys() == other.keys()

    def __repr__(self):
        return f"EvalPreprocessing({', '.join(f'{k}={v!r}' for k, v in self.keys().items())})"


def _shown(value):
    if isinstance(value, float):
        text = f"{value:.6g}"
        return text if any(c in text for c in ".en") else text + ".0"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    return "(the data set's)" if value is None else str(value)


def resolve_eval_preprocessing(layers):
    """The evaluation preprocessing from ``layers``: ``(source, {config key: value})`` pairs, the
    first that sets a key decides it (an explicit flag or ``-c`` file first, then the checkpoint or
    exported file, then the model's defaults). The last layer should set every key of ``EVAL_KEYS``.

    Returns ``(EvalPreprocessing, {key: source})``.
    """
    chosen, sources = {}, {}
    for source, keys in layers:
        for key in EVAL_KEYS:
            if key not in chosen and key in (keys or {}):
                chosen[key], sources[key] = keys[key], source
    where = ", ".join(dict.fromkeys(sources[k] for k in EVAL_KEYS if k in sources))
    return EvalPreprocessing.from_keys(chosen, source=where), sources


def describe_preprocessing(prep, sources):
    """One line saying where each key of the preprocessing came from, e.g. ``preprocessing from
    checkpoint best.ckpt: dataset fashion_mnist, image_resize 28, crop_pct 1, ...``."""
    keys = prep.keys()
    groups = {}
    for key in EVAL_KEYS:
        groups.setdefault(sources.get(key, "the defaults"), []).append(f"{key} {_shown(keys[key])}")
    if len(groups) == 1:
        (source, items), = groups.items()
        return f"preprocessing from {source}: {', '.join(items)}"
    return "preprocessing: " + "; ".join(f"{', '.join(items)} from {source}" for source, items in groups.items())
