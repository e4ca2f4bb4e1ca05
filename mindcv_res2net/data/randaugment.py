"""RandAugment with magnitude noise, as used to train the timm / MindCV Res2Net weights.

Policy strings: ``randaug-m9-mstd0.5`` (magnitude 9 of 10, Gaussian magnitude noise with std
0.5), ``-n2`` (ops per image, default 2), ``-inc1`` (the "increasing" op variants, whose
strength grows with the magnitude), ``-mmax10`` (upper clip of the noisy magnitude), ``-p0.5``
(probability of each chosen op, default 0.5). ``mstd`` of ``inf`` draws the magnitude
uniformly from [0, m]. Each op is picked with replacement from the op list.

MindSpore's own ``vision.RandAugment`` has neither magnitude noise nor the increasing variants,
so this is a Python op on HxWx3 uint8 arrays (Pillow does the pixel work).
"""
import math

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from ..errors import UserError
from .seeded_op import PythonSeededOp

_LEVEL_DENOM = 10.0
_TRANSLATE_PCT = 0.45


def _signed(rng, value):
    return -value if rng.random() < 0.5 else value


def _affine(img, matrix, ctx):
    return img.transform(img.size, Image.AFFINE, matrix, resample=ctx["resample"](),
                         fillcolor=ctx["fill"])


def _rotate(img, m, ctx):
    return img.rotate(_signed(ctx["rng"], m / _LEVEL_DENOM * 30.0), resample=ctx["resample"](),
                      fillcolor=ctx["fill"])


def _shear_x(img, m, ctx):
    return _affine(img, (1, _signed(ctx["rng"], m / _LEVEL_DENOM * 0.3), 0, 0, 1, 0), ctx)


def _shear_y(img, m, ctx):
    return _affine(img, (1, 0, 0, _signed(ctx["rng"], m / _LEVEL_DENOM * 0.3), 1, 0), ctx)


def _translate_x(img, m, ctx):
    pixels = _signed(ctx["rng"], m / _LEVEL_DENOM * _TRANSLATE_PCT) * img.size[0]
    return _affine(img, (1, 0, pixels, 0, 1, 0), ctx)


def _translate_y(img, m, ctx):
    pixels = _signed(ctx["rng"], m / _LEVEL_DENOM * _TRANSLATE_PCT) * img.size[1]
    return _affine(img, (1, 0, 0, 0, 1, pixels), ctx)


def _enhance(cls, increasing):
    def op(img, m, ctx):
        if increasing:
            factor = 1.0 + _signed(ctx["rng"], m / _LEVEL_DENOM * 0.9)
        else:
            factor = m / _LEVEL_DENOM * 1.8 + 0.1
        return cls(img).enhance(factor)
    return op


def _posterize(increasing):
    def op(img, m, ctx):
        bits = int(m / _LEVEL_DENOM * 4)
        if increasing:
            bits = 4 - bits
        if bits >= 8:
            return img
        # keep the `bits` most significant bits; 0 bits gives black (Pillow >= 11 refuses 0)
        mask = (0xFF << (8 - max(bits, 0))) & 0xFF
        return Image.fromarray(np.asarray(img) & np.uint8(mask))
    return op


def _solarize(increasing):
    def op(img, m, ctx):
        thresh = int(m / _LEVEL_DENOM * 256)
        if increasing:
            thresh = 256 - thresh
        return ImageOps.solarize(img, thresh)
    return op


def _solarize_add(img, m, ctx):
    add = int(m / _LEVEL_DENOM * 110)
    arr = np.asarray(img).astype(np.int16)
    arr = np.where(arr < 128, np.minimum(arr + add, 255), arr)
    return Image.fromarray(arr.astype(np.uint8))


_OPS = {
    "AutoContrast": lambda img, m, ctx: ImageOps.autocontrast(img),
    "Equalize": lambda img, m, ctx: ImageOps.equalize(img),
    "Invert": lambda img, m, ctx: ImageOps.invert(img),
    "Rotate": _rotate,
    "Posterize": _posterize(False),
    "PosterizeIncreasing": _posterize(True),
    "Solarize": _solarize(False),
    "SolarizeIncreasing": _solarize(True),
    "SolarizeAdd": _solarize_add,
    "Color": _enhance(ImageEnhance.Color, False),
    "ColorIncreasing": _enhance(ImageEnhance.Color, True),
    "Contrast": _enhance(ImageEnhance.Contrast, False),
    "ContrastIncreasing": _enhance(ImageEnhance.Contrast, True),
    "Brightness": _enhance(ImageEnhance.Brightness, False),
    "BrightnessIncreasing": _enhance(ImageEnhance.Brightness, True),
    "Sharpness": _enhance(ImageEnhance.Sharpness, False),
    "SharpnessIncreasing": _enhance(ImageEnhance.Sharpness, True),
    "ShearX": _shear_x,
    "ShearY": _shear_y,
    "TranslateXRel": _translate_x,
    "TranslateYRel": _translate_y,
}

RAND_OPS = ["AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize",
            "SolarizeAdd", "Color", "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY",
            "TranslateXRel", "TranslateYRel"]
RAND_OPS_INCREASING = ["AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing",
                       "SolarizeIncreasing", "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing",
                       "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY",
                       "TranslateXRel", "TranslateYRel"]


def parse_randaug(policy):
    """'randaug-m9-mstd0.5-inc1' -> dict(magnitude=9, num_ops=2, mstd=0.5, mmax=10, prob=0.5, increasing=True)."""
    parts = str(policy).split("-")
    if parts[0] != "randaug":
        raise UserError(f"not a RandAugment policy: {policy!r}. Use e.g. randaug-m9-mstd0.5-inc1")
    cfg = dict(magnitude=10.0, num_ops=2, mstd=0.0, mmax=10.0, prob=0.5, increasing=False)
    for part in parts[1:]:
        try:
            if part.startswith("mstd"):
                cfg["mstd"] = float(part[4:])
            elif part.startswith("mmax"):
                cfg["mmax"] = float(part[4:])
            elif part.startswith("inc"):
                cfg["increasing"] = bool(int(part[3:]))
            elif part.startswith("m"):
                cfg["magnitude"] = float(part[1:])
            elif part.startswith("n"):
                cfg["num_ops"] = int(part[1:])
            elif part.startswith("p"):
                cfg["prob"] = float(part[1:])
            else:
                raise ValueError(part)
        except ValueError:
            raise UserError(f"cannot read {part!r} in auto_augment policy {policy!r}. Known parts: "
                            f"m<magnitude>, n<ops>, mstd<std>, mmax<max>, inc<0|1>, p<prob>") from None
    return cfg


class PillowAugmentOp(PythonSeededOp):
    """Fill colour, resampling filters and magnitude noise shared by RandAugment and AugMix."""

    def __init__(self, fill=(124, 116, 104), interpolation="bilinear", seed=None):
        self.fill = tuple(int(v) for v in fill)
        if interpolation == "random":
            self._resamples = (Image.BILINEAR, Image.BICUBIC)
        else:
            self._resamples = ({"nearest": Image.NEAREST, "bicubic": Image.BICUBIC}
                               .get(str(interpolation).lower(), Image.BILINEAR),)
        self.set_seed(seed)

    def context(self):
        """What the ops in ``_OPS`` read: the random stream, the fill colour, a resampling filter."""
        rng = self.rng
        return {"rng": rng, "fill": self.fill, "resample": lambda: rng.choice(self._resamples)}

    def draw_magnitude(self, magnitude, mstd, mmax):
        """``magnitude`` with Gaussian noise of std ``mstd`` (uniform in [0, magnitude] for inf),
        clipped to [0, mmax]."""
        m = magnitude
        if mstd == math.inf:
            m = self.rng.uniform(0.0, m)
        elif mstd > 0:
            m = self.rng.gauss(m, mstd)
        return min(max(0.0, m), mmax)


class RandAugment(PillowAugmentOp):
    """Python op: HxWx3 uint8 -> HxWx3 uint8. ``set_seed`` reseeds (per rank)."""

    def __init__(self, policy="randaug-m9-mstd0.5-inc1", fill=(124, 116, 104), interpolation="bilinear",
                 seed=None):
        cfg = parse_randaug(policy)
        self.policy = policy
        self.magnitude = cfg["magnitude"]
        self.num_ops = cfg["num_ops"]
        self.mstd = cfg["mstd"]
        self.mmax = cfg["mmax"]
        self.prob = cfg["prob"]
        self.ops = RAND_OPS_INCREASING if cfg["increasing"] else RAND_OPS
        super().__init__(fill=fill, interpolation=interpolation, seed=seed)

    def __call__(self, image):
        self.check_process()
        img = Image.fromarray(np.asarray(image, dtype=np.uint8))
        rng = self.rng
        ctx = self.context()
        for _ in range(self.num_ops):
            name = rng.choice(self.ops)
            if self.prob < 1.0 and rng.random() > self.prob:
                continue
            img = _OPS[name](img, self.draw_magnitude(self.magnitude, self.mstd, self.mmax), ctx)
        return np.asarray(img, dtype=np.uint8)

    def __repr__(self):
        return f"RandAugment({self.policy!r})"
