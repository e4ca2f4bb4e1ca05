"""``create_loader``: transforms, batching, mixup / cutmix, resume position.

Steps per epoch (what the trainer should use)::

    loader.steps_per_epoch == loader.get_dataset_size()
        == samples_per_epoch // batch_size            (drop_remainder=True)
        == ceil(samples_per_epoch / batch_size)        (drop_remainder=False)

with ``samples_per_epoch = dataset.dataset_info.samples_per_epoch``. In training
(``shuffle=True`` data set) ``samples_per_epoch = n // num_shards`` on every rank, so with
``drop_remainder=True`` all ranks run the same number of steps. In evaluation (``shuffle=False``)
ranks may differ by one sample (no padding); sum per-rank correct/total counts at the end.

Resume: ``create_loader(..., start_epoch=k, skip_steps=s)`` reads epoch k's order from batch
s on (MindSpore's ``set_init_step``: the skipped batches are not read or decoded); the first
epoch then has ``steps_per_epoch - s`` batches, later ones ``steps_per_epoch``. Iterate either
one iterator with ``num_epochs = epochs - k`` or a new iterator per epoch; the sampler moves on
one epoch per pass in both cases. ``loader.set_epoch(e)`` re-positions it.

Labels: int32 [B] without mixup; float32 [B, num_classes] (rows sum to 1) with mixup/cutmix.
Evaluation labels may hold -1 for unreadable files (see :mod:`.dataset`).

Augmentation splits (``aug_splits=3``, AugMix's JSD training; MindCV's ``separate=True``): the
transform is ``create_transforms(..., separate=True)``'s ``(primary, secondary, final)``. Each
image goes once through ``primary`` (random resized crop, flips); the result is the clean split
(``primary`` + ``final``) and, ``aug_splits - 1`` times, an augmented split (``primary`` +
``secondary``, an independent draw of the auto-augment policy each, + ``final``). A batch of B
images leaves the loader as ``[B clean; B aug1; B aug2]`` (3B images) with the B labels repeated
in the same layout (3B labels; the JSD loss reads the first B), as in MindCV. Steps per epoch do
not change. Not with mixup / cutmix.
"""
import copy

import numpy as np

import mindspore as ms
import mindspore.dataset as ds
import mindspore.dataset.transforms as ctrans

from ..errors import UserError
from .dataset import MNIST_FAMILY, attach_info, get_dataset_info, resolve_workers
from .mixup import MixupCutmix
from .transforms import create_transforms


class _UserErrorIterator:
    """Wraps a MindSpore iterator: a strict-mode bad file surfaces as the original UserError."""

    def __init__(self, iterator, counter):
        self._it = iterator
        self._counter = counter

    def __iter__(self):
        return self

    def __next__(self):
        try:
            return next(self._it)
        except RuntimeError as exc:
            if self._counter.fatal is not None:
                raise self._counter.fatal from exc
            raise

    def __getattr__(self, name):
        return getattr(self._it, name)


def _wrap_iterators(loader, counter):
    """Iterators made from ``loader`` translate strict-mode errors; the resume skip applies to
    the first iterator only (a trainer making one iterator per epoch must not skip again)."""
    for meth in ("create_tuple_iterator", "create_dict_iterator"):
        original = getattr(loader, meth)

        def wrapped(*args, _original=original, **kwargs):
            iterator = _original(*args, **kwargs)
            if getattr(loader, "_skip_pending", False):
                loader._skip_pending = False
                loader.set_init_step(0)
            return _UserErrorIterator(iterator, counter)

        setattr(loader, meth, wrapped)


def raise_data_error(loader_or_dataset, exc=None):
    """Call from an ``except RuntimeError`` around a pipeline: re-raise a pending strict-mode
    ``UserError`` (naming the bad file) instead of MindSpore's generic RuntimeError."""
    info = getattr(loader_or_dataset, "dataset_info", None)
    if info is not None and info.bad_images.fatal is not None:
        raise info.bad_images.fatal from exc


def pop_bad_image_count(loader_or_dataset):
    """Unreadable files met since the last call (read-and-reset); call once per epoch."""
    return get_dataset_info(loader_or_dataset).bad_images.pop_count()


def _seed_python_ops(ops, seed):
    for op in ops:
        if hasattr(op, "set_seed"):
            op.set_seed(seed)


def check_aug_splits(aug_splits):
    """``aug_splits`` as an int: 0 (off) or 3; ``UserError`` otherwise."""
    try:
        value = int(aug_splits or 0)
    except (TypeError, ValueError):
        value = -1
    if value not in (0, 3) or value != float(aug_splits or 0):
        raise UserError(f"aug_splits must be 0 (off) or 3 (clean + 2 augmented splits, the only value MindCV "
                        f"supports), got {aug_splits!r}")
    return value


def _is_separated(transform):
    return isinstance(transform, tuple) and len(transform) == 3 and all(isinstance(t, list) for t in transform)


def _split_stages(transform, num_splits, dataset_name):
    if not _is_separated(transform):
        raise UserError(f"aug_splits={num_splits} needs the transforms as (primary, secondary, final): build them "
                        f"with create_transforms(..., auto_augment=POLICY, separate=True)")
    primary, secondary, final = (list(t) for t in transform)
    if not secondary:
        if dataset_name in MNIST_FAMILY:
            raise UserError(f"aug_splits={num_splits} needs an auto_augment policy, and {dataset_name} training "
                            f"transforms have none (auto_augment applies to imagenet / imagefolder): set aug_splits "
                            f"to 0")
        raise UserError(f"aug_splits={num_splits} needs an auto_augment policy (e.g. --auto_augment augmix-m3-w3) "
                        f"in the {dataset_name} training transforms: the augmented splits would equal the clean one")
    return primary, secondary, final


def _split_columns(num_splits):
    return ["image_clean"] + [f"image_aug{k}" for k in range(1, num_splits)]


_SPLIT_SEED_STRIDE = 1_000_003  # split k's Python ops: seed + rank + k * stride


def _split_copy(ops, base_seed, split):
    """The ops of one split: Python ops copied and seeded for that split (each split draws its own
    augmentation); MindSpore's C++ ops are shared (their state lives in the pipeline)."""
    out = []
    for op in ops:
        if hasattr(op, "set_seed"):
            op = copy.deepcopy(op)
            op.set_seed(None if base_seed is None else base_seed + _SPLIT_SEED_STRIDE * split)
        out.append(op)
    return out


def _map_splits(dataset, stages, num_splits, base_seed, workers, python_multiprocessing):
    """primary once, then per split: (secondary,) final, in columns image_clean, image_aug1, ..."""
    primary, secondary, final = stages
    _seed_python_ops(primary, base_seed)
    mp = dict(num_parallel_workers=workers, python_multiprocessing=python_multiprocessing)
    loader = dataset.map(operations=primary, input_columns="image", **mp)
    columns = _split_columns(num_splits)
    loader = loader.map(operations=ctrans.Duplicate(), input_columns="image",
                        output_columns=["image_clean", columns[-1]], num_parallel_workers=1)
    for k in range(num_splits - 2, 0, -1):
        loader = loader.map(operations=ctrans.Duplicate(), input_columns="image_clean",
                            output_columns=["image_clean", columns[k]], num_parallel_workers=1)
    _seed_python_ops(final, base_seed)  # the clean split: the plain pipeline's ops and seeds
    loader = loader.map(operations=final, input_columns="image_clean", **mp)
    for k in range(1, num_splits):
        ops = _split_copy(secondary, base_seed, k) + _split_copy(final, base_seed, k)
        loader = loader.map(operations=ops, input_columns=columns[k], **mp)
    return loader


def _concat_splits(*columns):
    """Batched split columns + label -> ([clean; aug1; ...], labels repeated per split)."""
    *images, label = columns
    return np.concatenate(images), np.concatenate([label] * len(images))


def create_loader(dataset, batch_size, drop_remainder=False, is_training=False, mixup=0.0,
                  cutmix=0.0, cutmix_prob=1.0, switch_prob=0.5, num_classes=None, transform=None,
                  target_transform=None, num_parallel_workers=None, python_multiprocessing=False,
                  label_smoothing=0.0, seed=None, start_epoch=None, skip_steps=0,
                  image_resize=224, aug_splits=0):
    """Map the transforms, batch, and (training only) mix; return the batched data set.

    Args:
        dataset: from :func:`create_dataset`.
        batch_size: per rank. drop_remainder: use True for training.
        is_training: enables mixup / cutmix (and picks the train transforms when
            ``transform`` is None).
        mixup, cutmix: Beta alphas (0 = off). cutmix_prob: probability that a batch is mixed
            at all (MindCV's name). switch_prob: CutMix instead of Mixup when both are on.
        num_classes: soft-label width (None -> number of class names).
        transform: list of image operations (None -> ``create_transforms`` defaults for the
            data set, with ``image_resize``).
        target_transform: extra label operations (after the int32 cast).
        num_parallel_workers: map / batch workers. python_multiprocessing: run the Python image
            ops (RandAugment, erasing) in worker processes instead of threads (mixup always
            runs in threads: it is numpy on whole batches and releases the GIL).
        label_smoothing: applied inside the soft labels when mixing is on (otherwise leave it
            to the loss).
        seed: augmentation randomness is seeded with ``seed + rank`` (C++ ops via
            ``mindspore.dataset.config.set_seed``, Python ops via ``set_seed``; mixup draws
            from (seed, rank, epoch, batch)). The sample order never depends on it. With
            several workers the augmentation of a given sample depends on thread timing;
            bit-exact augmentation replay needs ``num_parallel_workers=1``.
        start_epoch: epoch whose order the first pass reads (None: leave the data set's).
        skip_steps: batches of that first epoch to skip (resume mid-epoch).
        aug_splits: 0 (off) or 3 (training only): clean + 2 auto-augmented versions of every
            image, concatenated per batch (see the module docstring); ``transform`` must be the
            ``(primary, secondary, final)`` tuple of ``create_transforms(..., separate=True)``
            with an auto-augment policy in ``secondary``.

    Returns:
        the batched ``mindspore.dataset`` object, with ``.steps_per_epoch``, ``.class_names``,
        ``.dataset_info``, ``.set_epoch(e)``, ``.pop_bad_image_count()``.
    """
    info = get_dataset_info(dataset)
    batch_size = int(batch_size)
    if batch_size < 1:
        raise UserError(f"batch_size must be positive, got {batch_size}")
    workers = resolve_workers(num_parallel_workers)
    rank = info.shard_id
    if num_classes is None:
        num_classes = info.num_classes
    num_classes = int(num_classes)
    if num_classes < info.num_classes:
        raise UserError(f"num_classes={num_classes} but the data set has {info.num_classes} classes "
                        f"({info.root}/{info.split}). Set num_classes to at least {info.num_classes}")
    base_seed = None
    if seed is not None:
        base_seed = int(seed) + rank
        ds.config.set_seed(base_seed)

    steps = info.samples_per_epoch // batch_size if drop_remainder else \
        -(-info.samples_per_epoch // batch_size)
    if steps < 1:
        raise UserError(f"{info.samples_per_epoch} samples per rank make no batch of {batch_size} "
                        f"(drop_remainder={drop_remainder}). Lower batch_size or add data")
    skip_steps = int(skip_steps or 0)
    if not 0 <= skip_steps < steps:
        raise UserError(f"skip_steps={skip_steps} must be in [0, {steps}) (steps per epoch)")

    use_mix = is_training and (float(mixup) > 0 or float(cutmix) > 0) and float(cutmix_prob) > 0
    num_splits = check_aug_splits(aug_splits) if is_training else 0
    if num_splits and use_mix:
        raise UserError(f"aug_splits={num_splits} cannot be used with mixup / cutmix (MindCV would mix images "
                        f"across the clean and augmented splits): set mixup and cutmix to 0, or aug_splits to 0")
    if transform is None:
        transform = create_transforms(info.name, image_resize=image_resize, is_training=is_training,
                                      separate=bool(num_splits))
    if num_splits:
        stages = _split_stages(transform, num_splits, info.name)
        loader = _map_splits(dataset, stages, num_splits, base_seed, workers, python_multiprocessing)
    else:
        if _is_separated(transform):
            transform = transform[0] + transform[1] + transform[2]
        transform = list(transform)
        _seed_python_ops(transform, base_seed)
        loader = dataset.map(operations=transform, input_columns="image", num_parallel_workers=workers,
                             python_multiprocessing=python_multiprocessing)
    label_ops = [ctrans.TypeCast(ms.int32)] + list(target_transform or [])
    loader = loader.map(operations=label_ops, input_columns="label", num_parallel_workers=1)

    if num_splits:
        columns = _split_columns(num_splits)
        loader = loader.batch(batch_size, drop_remainder=drop_remainder, num_parallel_workers=workers)
        loader = loader.map(operations=_concat_splits, input_columns=columns + ["label"],
                            output_columns=["image", "label"], num_parallel_workers=1)
    elif use_mix:
        mixer = MixupCutmix(mixup, cutmix, prob=cutmix_prob, switch_prob=switch_prob,
                            label_smoothing=label_smoothing, num_classes=num_classes,
                            seed=0 if seed is None else int(seed), rank=rank)
        # Threads, not processes, for the batch op: with worker processes in both the map and
        # the batch op, MindSpore 2.8 sometimes hands a map worker the batch function.
        loader = loader.batch(batch_size, drop_remainder=drop_remainder, num_parallel_workers=workers,
                              per_batch_map=mixer, input_columns=["image", "label"],
                              python_multiprocessing=False)
    else:
        loader = loader.batch(batch_size, drop_remainder=drop_remainder, num_parallel_workers=workers)

    if start_epoch is not None:
        info.sampler.set_epoch(int(start_epoch))
    if skip_steps:
        loader.set_init_step(skip_steps)
        loader._skip_pending = True
    attach_info(loader, info)
    loader.steps_per_epoch = steps
    loader.pop_bad_image_count = info.bad_images.pop_count
    _wrap_iterators(loader, info.bad_images)
    return loader
