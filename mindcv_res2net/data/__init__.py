"""Data: datasets (ImageFolder, MindRecord, MNIST), transforms, loader, mixup, data preparation.

Public API (see each module's docstring)::

    ds = create_dataset(name, root, split, shuffle, ..., seed=..., strict_data=...)
    ds.class_names, ds.dataset_info              # label-ordered class names, DatasetInfo
    transform = create_transforms(name, image_resize, is_training, ...)
    loader = create_loader(ds, batch_size, drop_remainder, is_training, mixup, cutmix, ...,
                           transform=transform, seed=seed, start_epoch=k, skip_steps=s)
    loader.steps_per_epoch                        # == loader.get_dataset_size()
    loader.pop_bad_image_count()                  # unreadable files since the last call

Names are imported lazily so that ``python -m mindcv_res2net.data.prepare`` and light users
(class-name constants) do not pay for importing MindSpore.
"""
from ..lazy_exports import lazy_exports

# the one lists of these names: train.py's ``dataset``, ``interpolation`` and ``sampler`` keys offer exactly these
DATASETS = ("imagenet", "imagefolder", "mindrecord", "fashion_mnist", "mnist")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "area")
SAMPLERS = ("default", "balanced")

_EXPORTS = {
    "create_dataset": "dataset", "get_dataset_info": "dataset", "DatasetInfo": "dataset",
    "EpochSampler": "sampler", "RepeatAugSampler": "sampler",
    "read_class_list": "dataset", "resolve_workers": "dataset", "read_idx": "readers.idx",
    "FASHION_MNIST_CLASSES": "readers.idx", "MNIST_CLASSES": "readers.idx",
    "BadImageCounter": "decode", "prepare_mindrecord": "readers.mindrecord_writer",
    "create_loader": "loader", "pop_bad_image_count": "loader", "raise_data_error": "loader",
    "MixupCutmix": "mixup",
    "create_transforms": "transforms",
    "measure_pipeline_throughput": "throughput", "make_synthetic_jpegs": "throughput",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = ["DATASETS", "INTERPOLATIONS", "SAMPLERS", *sorted(_EXPORTS)]
