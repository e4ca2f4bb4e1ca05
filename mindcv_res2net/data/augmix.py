"""AugMix ("AugMix: A Simple Data Processing Method to Improve Robustness and Uncertainty", ICLR 2020)
with the policy strings of timm / MindCV: ``augmix-m3-w3-d-1-a1.0-mstd<inf>-b0``.

Per image: ``width`` chains of ``depth`` ops each (``depth`` <= 0: 1 to 3 ops, drawn per chain),
each op picked with replacement from ``AUGMIX_OPS`` (the "increasing" variants of RandAugment's
ops, applied with probability 1 at a magnitude drawn per op: Gaussian around ``m`` with std
``mstd``, or uniform in [0, m] when ``mstd`` is ``inf``, the default). The chains are mixed with
Dirichlet(alpha) weights ``w`` and the mixture is blended with the original by ``m ~ Beta(alpha,
alpha)``::

    out = (1 - m) * image + m * sum_i w_i * chain_i(image)

``-b1`` (blended) gets the same mixture by blending each chain into the running image in turn,
``x <- (1 - a_i) * x + a_i * chain_i(image)``, with the ``a_i`` solved from the end so that
chain i's final coefficient is ``m * w_i``; it rounds to uint8 after each blend.

Parts: ``m`` magnitude (0-10, default 3), ``w`` chains (default 3), ``d`` ops per chain (default
-1: random 1-3), ``a`` alpha (default 1.0), ``mstd`` magnitude noise (default inf), ``mmax``
upper clip of the magnitude (default 10), ``b`` blended (0 or 1, default 0).
"""
import math

import numpy as np
from PIL import Image

from ..errors import UserError
from .randaugment import _OPS, PillowAugmentOp

AUGMIX_OPS = ["AutoContrast", "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
              "SharpnessIncreasing", "Equalize", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing",
              "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"]


def parse_augmix(policy):
    """'augmix-m5-w4-d2' -> dict(magnitude=5, width=4, depth=2, alpha=1.0, mstd=inf, mmax=10, blended=False)."""
    text = str(policy).strip()
    if text != "augmix" and not text.startswith("augmix-"):
        raise UserError(f"not an AugMix policy: {policy!r}. Use e.g. augmix-m3-w3")
    cfg = dict(magnitude=3.0, width=3, depth=-1, alpha=1.0, mstd=math.inf, mmax=10.0, blended=False)
    # 'd-1' (a negative depth) arrives as the parts 'd' and '1' after splitting on '-'
    parts = text.split("-")[1:]
    i = 0
    while i < len(parts):
        part = parts[i]
        if part == "d" and i + 1 < len(parts):
            part, i = "d-" + parts[i + 1], i + 1
        try:
            if part.startswith("mstd"):
                cfg["mstd"] = float(part[4:])
            elif part.startswith("mmax"):
                cfg["mmax"] = float(part[4:])
            elif part.startswith("m"):
                cfg["magnitude"] = float(part[1:])
            elif part.startswith("w"):
                cfg["width"] = int(part[1:])
            elif part.startswith("d"):
                cfg["depth"] = int(part[1:])
            elif part.startswith("a"):
                cfg["alpha"] = float(part[1:])
            elif part.startswith("b"):
                cfg["blended"] = bool(int(part[1:]))
            else:
                raise ValueError(part)
        except ValueError:
            raise UserError(f"cannot read {part!r} in auto_augment policy {policy!r}. Known parts: "
                            f"m<magnitude>, w<chains>, d<ops per chain>, a<alpha>, mstd<std>, mmax<max>, "
                            f"b<0|1>") from None
        i += 1
    if cfg["width"] < 1:
        raise UserError(f"AugMix needs at least one chain (w >= 1), got {policy!r}")
    if not cfg["alpha"] > 0:
        raise UserError(f"AugMix alpha must be > 0, got {policy!r}")
    return cfg


def sequential_blend_weights(coefficients):
    """The ``a_i`` of ``x <- (1 - a_i) x + a_i y_i`` (i = 1..k, in order) that leave ``y_i`` with
    final coefficient ``coefficients[i]`` (which must sum to at most 1)."""
    alphas = [0.0] * len(coefficients)
    kept = 1.0  # product of (1 - a_j) over the blends after i
    for i in range(len(coefficients) - 1, -1, -1):
        alphas[i] = coefficients[i] / kept if kept > 0 else 0.0
        kept *= 1.0 - alphas[i]
    return alphas


class AugMix(PillowAugmentOp):
    """Python op: HxWx3 uint8 -> HxWx3 uint8. ``set_seed`` reseeds (per rank)."""

    def __init__(self, policy="augmix-m3-w3", fill=(124, 116, 104), interpolation="bilinear", seed=None):
        cfg = parse_augmix(policy)
        self.policy = policy
        self.magnitude, self.width, self.depth = cfg["magnitude"], cfg["width"], cfg["depth"]
        self.alpha, self.mstd, self.mmax, self.blended = cfg["alpha"], cfg["mstd"], cfg["mmax"], cfg["blended"]
        self.ops = list(AUGMIX_OPS)
        super().__init__(fill=fill, interpolation=interpolation, seed=seed)

    def _chain(self, img, ctx):
        rng = self.rng
        depth = self.depth if self.depth > 0 else rng.randint(1, 3)
        for _ in range(depth):
            name = rng.choice(self.ops)
            img = _OPS[name](img, self.draw_magnitude(self.magnitude, self.mstd, self.mmax), ctx)
        return img

    def __call__(self, image):
        self.check_process()
        rng = self.rng
        img = Image.fromarray(np.asarray(image, dtype=np.uint8))
        ctx = self.context()
        gammas = [rng.gammavariate(self.alpha, 1.0) for _ in range(self.width)]
        total = sum(gammas)
        weights = [g / total for g in gammas] if total > 0 else [1.0 / self.width] * self.width
        m = rng.betavariate(self.alpha, self.alpha)
        if self.blended:
            out = img
            for a in sequential_blend_weights([m * w for w in weights]):
                out = Image.blend(out, self._chain(img, ctx), a)
            return np.asarray(out, dtype=np.uint8)
        mixed = np.zeros(np.asarray(img).shape, np.float32)
        for w in weights:
            mixed += np.float32(w) * np.asarray(self._chain(img, ctx), np.float32)
        mixed = Image.fromarray(np.clip(mixed, 0, 255).astype(np.uint8))
        return np.asarray(Image.blend(img, mixed, m), dtype=np.uint8)

    def __repr__(self):
        return f"AugMix({self.policy!r})"
