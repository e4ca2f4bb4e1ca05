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
"""


import mindspore as ms
import mindspore.dataset as ds
import mindspore.dataset.transforms as ctrans

from ..errors import UserError
from .dataset import attach_info, get_dataset_info, resolve_workers
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


def create_loader(dataset, batch_size, drop_remainder=False, is_training=False, mixup=0.0,
                  cutmix=0.0, cutmix_prob=1.0, switch_prob=0.5, num_classes=None, transform=None,
                  target_transform=None, num_parallel_workers=None, python_multiprocessing=False,
                  label_smoothing=0.0, seed=None, start_epoch=None, skip_steps=0,
                  image_resize=224):
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

    if transform is None:
        transform = create_transforms(info.name, image_resize=image_resize, is_training=is_training)
    elif isinstance(transform, tuple) and len(transform) == 3 and all(isinstance(t, list) for t in transform):
        transform = transform[0] + transform[1] + transform[2]
    transform = list(transform)
    _seed_python_ops(transform, base_seed)

    loader = dataset.map(operations=transform, input_columns="image", num_parallel_workers=workers,
                         python_multiprocessing=python_multiprocessing)
    label_ops = [ctrans.TypeCast(ms.int32)] + list(target_transform or [])
    loader = loader.map(operations=label_ops, input_columns="label", num_parallel_workers=1)

    use_mix = is_training and (float(mixup) > 0 or float(cutmix) > 0) and float(cutmix_prob) > 0
    if use_mix:
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
