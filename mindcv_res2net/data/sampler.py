"""The samplers of the data sets: :class:`EpochSampler`, the per-epoch seeded order with sharding
(described in :mod:`.dataset`), :class:`RepeatAugSampler` and :class:`BalancedSampler` (``sampler:
balanced``, class-balanced sampling with replacement).

Repeated augmentation (``aug_repeats``): MindCV's ``RepeatAugSampler`` (after DeiT / timm's
``RASampler``, Hoffer et al. 2020 and Berman et al. 2019), with this package's per-epoch seeding.

For an epoch of ``n`` images, ``R = num_repeats`` and ``W = num_shards`` ranks::

    order   = RandomState(seed + epoch).permutation(n)       # arange(n) when shuffle=False
    rep     = [i for i in order for _ in range(R)]           # each index R times, side by side
    rep    += rep[:W * ceil(n * R / W) - n * R]              # pad to a multiple of W
    rank r  = rep[r::W][:samples_per_epoch]

so the R copies of an image go to R different ranks (when ``W >= R``) and each copy passes
through the random transforms on its own, i.e. with an independent augmentation. Each rank then
keeps the first ``samples_per_epoch`` of its list, which keeps the epoch as long as without
repetition (about ``n / R`` distinct images per epoch):

* ``selected_round > 0`` (timm / ``RepeatAugSampler``'s own default, 256):
  ``floor((n // selected_round) * selected_round / W)``; below ``selected_round * W`` images this
  would be 0 and ``selected_round = 1`` is used instead.
* ``selected_round = 0`` (what ``create_dataset(..., aug_repeats=R)`` uses): ``n // W``, the
  sample count of the plain training order (:class:`EpochSampler`), so steps per epoch
  do not change with ``aug_repeats``. MindCV's ``create_dataset`` passes ``selected_round=0``,
  which in MindCV means ``ceil(n / W)``: our lists are MindCV's lists, one sample shorter on every
  rank when ``n`` is not a multiple of ``W``.

Seeding: MindCV draws the permutation from ``RandomState(epoch)``; here ``RandomState(seed +
epoch)`` as in :class:`EpochSampler` (identical for ``seed=0``). The order of epoch k is
a pure function of (seed, epoch, rank), so a resumed run reads the same samples.
"""
import math
import threading

import numpy as np

import mindspore.dataset as ds

from ..errors import UserError


def check_aug_repeats(aug_repeats):
    """``aug_repeats`` as an int (0 and 1 mean off); ``UserError`` for a negative or non-integer value."""
    try:
        value = int(aug_repeats or 0)
    except (TypeError, ValueError):
        raise UserError(f"aug_repeats must be an integer (0 or 1 = off, e.g. 3), got {aug_repeats!r}") from None
    if value != float(aug_repeats or 0) or value < 0:
        raise UserError(f"aug_repeats must be a non-negative integer (0 or 1 = off, e.g. 3), got {aug_repeats!r}")
    return value


def repeat_aug_samples_per_rank(num_items, num_shards, selected_round=0):
    """Samples each rank reads per epoch (see the module docstring)."""
    n, w = int(num_items), int(num_shards)
    if selected_round and (n // selected_round) * selected_round >= w:
        return (n // selected_round) * selected_round // w
    return n // w


class EpochSampler(ds.Sampler):
    """Per-epoch seeded order with sharding; see :mod:`.dataset`'s module docstring.

    Deep copies return the same object (MindSpore deep-copies the pipeline for every iterator;
    the epoch counter must survive that).
    """

    def __init__(self, num_items, shuffle=True, seed=0, num_shards=1, shard_id=0, start_epoch=0,
                 limit=None, eval_shuffle=False):
        self.eval_shuffle = bool(eval_shuffle) and not shuffle
        self.num_items = int(num_items)
        self.limit = self.num_items if limit is None else min(int(limit), self.num_items)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.num_shards = int(num_shards)
        self.shard_id = int(shard_id)
        self._lock = threading.Lock()
        self.epoch = int(start_epoch)
        super().__init__(num_samples=self.samples_per_epoch())

    def samples_per_epoch(self):
        if self.shuffle:
            return self.limit // self.num_shards
        return len(range(self.shard_id, self.limit, self.num_shards))

    def __len__(self):
        return self.samples_per_epoch()

    def set_epoch(self, epoch):
        """The next epoch MindSpore starts reads the order of ``epoch``."""
        with self._lock:
            self.epoch = int(epoch)

    def indices(self, epoch):
        """This rank's sample indices of ``epoch`` (numpy int64 array); a pure function."""
        if self.shuffle:
            rng = np.random.RandomState((self.seed + int(epoch)) % (2 ** 32))
            order = rng.permutation(self.num_items)[:self.limit]
            per = self.limit // self.num_shards
            return order[self.shard_id * per:(self.shard_id + 1) * per]
        if self.limit == self.num_items:
            base = np.arange(self.num_items, dtype=np.int64)
        else:  # an evenly spread, fixed subset (file order is class order)
            base = np.arange(self.limit, dtype=np.int64) * self.num_items // self.limit
        if self.eval_shuffle:  # a seeded order of the same images; the shards stay disjoint and complete
            base = np.random.RandomState(self.seed % (2 ** 32)).permutation(base)
        return base[self.shard_id::self.num_shards]

    def __iter__(self):
        with self._lock:
            epoch = self.epoch
            self.epoch += 1
        return iter(self.indices(epoch).tolist())

    def __deepcopy__(self, memo):
        return self


class RepeatAugSampler(EpochSampler):
    """:class:`EpochSampler` with repeated augmentation (see the module docstring); the same
    interface (``indices(epoch)``, ``set_epoch``, ``samples_per_epoch``, shared deep copies)."""

    def __init__(self, num_items, num_repeats=3, shuffle=True, seed=0, num_shards=1, shard_id=0,
                 start_epoch=0, selected_round=0):
        self.num_repeats = int(num_repeats)
        if self.num_repeats < 1:
            raise UserError(f"aug_repeats must be at least 1 for repeated augmentation, got {num_repeats}")
        self.selected_round = int(selected_round or 0)
        self._per_rank = repeat_aug_samples_per_rank(num_items, num_shards, self.selected_round)
        if self._per_rank < 1:
            raise UserError(f"{num_items} images cannot be shared by {num_shards} ranks. Use more data")
        super().__init__(num_items, shuffle=shuffle, seed=seed, num_shards=num_shards, shard_id=shard_id,
                         start_epoch=start_epoch)

    def samples_per_epoch(self):
        return self._per_rank

    def indices(self, epoch):
        """This rank's sample indices of ``epoch`` (numpy int64 array); a pure function."""
        n, w = self.num_items, self.num_shards
        if self.shuffle:
            order = np.random.RandomState((self.seed + int(epoch)) % (2 ** 32)).permutation(n)
        else:
            order = np.arange(n, dtype=np.int64)
        rep = np.repeat(order.astype(np.int64), self.num_repeats)
        total = int(math.ceil(n * self.num_repeats / w)) * w
        if total > rep.size:
            rep = np.concatenate([rep, rep[:total - rep.size]])
        return rep[self.shard_id::w][:self._per_rank]


class BalancedSampler(EpochSampler):
    """Class-balanced sampling with replacement (``sampler: balanced``): every class is drawn with the
    same probability, and an image of the class uniformly, so that each class fills about ``1 / C``
    of every epoch whatever its size. The same interface as :class:`EpochSampler`.

    Epoch ``e`` draws ``samples_per_epoch * num_shards`` indices from ``RandomState(seed + e)`` with
    probability ``1 / (C * n_c)`` for an image of class ``c`` (``C``: the classes present, ``n_c``:
    their image counts); rank ``r`` reads the ``r``-th contiguous slice. The order is a pure function
    of (seed, epoch, rank): a resumed run reads the same samples.
    """

    def __init__(self, labels, seed=0, num_shards=1, shard_id=0, start_epoch=0, limit=None):
        labels = np.asarray(labels, np.int64).reshape(-1)
        classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        self.num_classes_present = int(classes.size)
        self.weights = 1.0 / (classes.size * counts[inverse].astype(np.float64))
        super().__init__(labels.size, shuffle=True, seed=seed, num_shards=num_shards, shard_id=shard_id,
                         start_epoch=start_epoch, limit=limit)

    def indices(self, epoch):
        """This rank's sample indices of ``epoch`` (numpy int64 array); a pure function."""
        rng = np.random.RandomState((self.seed + int(epoch)) % (2 ** 32))
        per = self.limit // self.num_shards
        drawn = rng.choice(self.num_items, size=per * self.num_shards, replace=True, p=self.weights)
        return drawn[self.shard_id * per:(self.shard_id + 1) * per].astype(np.int64)
