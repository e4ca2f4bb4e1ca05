"""Build the training and validation data of a run from the resolved config.

The training pipeline is rebuilt for every epoch with seeds derived from (seed, epoch, rank): the
order is ``RandomState(seed + epoch)`` and the augmentation randomness is seeded per epoch, so a
run resumed at epoch k reads exactly the batches an uninterrupted run reads from epoch k on.
"""
import logging
import os
import time
from dataclasses import dataclass

from ..data import create_dataset, create_loader, create_transforms
from ..data.dataset import check_data_dir, is_mnist_family
from ..errors import UserError

_EPOCH_SEED_STRIDE = 7919  # a prime: per-epoch augmentation seeds never collide with seed + rank


@dataclass
class DataSplit:
    """A batched data set and what the loop needs to know about it."""

    loader: object
    class_names: list
    num_samples: int
    steps_per_epoch: int
    root: str

    def __iter__(self):
        return self.loader.create_tuple_iterator(num_epochs=1, output_numpy=False)

    def take_skipped_count(self):
        """Unreadable images met since the last call."""
        return self.loader.pop_bad_image_count()


def check_data_dirs(args, splits):
    """The cheap data checks before anything is built: the folders of ``splits`` exist, or
    ``dataset_download`` will fetch them (Fashion-MNIST / MNIST only, as in MindCV)."""
    if args.dataset_download:
        if not is_mnist_family(args.dataset):
            raise UserError(f"dataset_download: only fashion_mnist and mnist can be downloaded, not "
                            f"{args.dataset} (as in MindCV). Put the data in --data_dir yourself and set "
                            "dataset_download false.")
        return  # fetched into data_dir when the data set is built
    lists = {args.train_split: getattr(args, "train_list", None), args.val_split: getattr(args, "val_list", None)}
    for split in splits:
        if lists.get(split):  # a list file names its images; they are checked when it is read
            if not os.path.isfile(lists[split]):
                key = "train_list" if split == args.train_split else "val_list"
                raise UserError(f"{key} file not found: {lists[split]}. Pass a text file of 'path<TAB>label' "
                                "lines (paths relative to --data_dir)")
            continue
        check_data_dir(args.dataset, args.data_dir, split)


def _shards(dist):
    if dist.world_size > 1:
        return dist.world_size, dist.rank
    return None, None


def _transform_kwargs(args):
    return dict(image_resize=args.image_resize, scale=args.scale, ratio=args.ratio, hflip=args.hflip,
                vflip=args.vflip, color_jitter=args.color_jitter, interpolation=args.interpolation,
                crop_pct=args.crop_pct, auto_augment=args.auto_augment, re_prob=args.re_prob,
                re_scale=args.re_scale, re_ratio=args.re_ratio, re_value=args.re_value,
                re_max_attempts=args.re_max_attempts, mean=args.mean,
                std=args.std, in_channels=args.in_channels)


def _split(loader, root):
    info = loader.dataset_info
    return DataSplit(loader=loader, class_names=list(loader.class_names), num_samples=info.num_samples,
                     steps_per_epoch=int(loader.steps_per_epoch), root=f"{root}/{info.split}")


def build_train(args, dist, epoch=0):
    num_shards, shard_id = _shards(dist)
    dataset = create_dataset(
        args.dataset, root=args.data_dir, split=args.train_split, shuffle=args.shuffle,
        num_samples=args.num_samples, num_shards=num_shards, shard_id=shard_id,
        num_parallel_workers=args.num_parallel_workers, class_list=args.class_list, seed=args.seed,
        strict_data=args.strict_data, start_epoch=epoch, download=args.dataset_download,
        aug_repeats=args.aug_repeats, list_file=getattr(args, "train_list", None),
        sampler=getattr(args, "sampler", "default"))
    transform = create_transforms(args.dataset, is_training=True, separate=args.aug_splits > 0,
                                  **_transform_kwargs(args))
    loader = create_loader(
        dataset, args.batch_size, drop_remainder=args.drop_remainder, is_training=True, mixup=args.mixup,
        cutmix=args.cutmix, cutmix_prob=args.cutmix_prob, num_classes=args.num_classes, transform=transform,
        num_parallel_workers=args.num_parallel_workers, label_smoothing=0.0,  # the loss smooths
        seed=int(args.seed) + _EPOCH_SEED_STRIDE * epoch, start_epoch=epoch, image_resize=args.image_resize,
        aug_splits=args.aug_splits)
    return _split(loader, args.data_dir)


def measure_loader(split, max_batches=20, max_seconds=3.0):
    """Images per second that a training loader delivers on its own (nothing else running).

    The first batch (pipeline start-up) is not timed; then up to ``max_batches`` batches or
    ``max_seconds``. The loader is used up: build a new one for training. Returns None when the
    loader had fewer than two batches.
    """
    iterator = split.loader.create_tuple_iterator(num_epochs=1, output_numpy=True)
    images, start, elapsed = 0, None, 0.0
    try:
        for batch, _labels in iterator:
            if start is None:
                start = time.perf_counter()
                continue
            images += batch.shape[0]
            elapsed = time.perf_counter() - start
            if images >= max_batches * batch.shape[0] or elapsed >= max_seconds:
                break
    finally:
        stop = getattr(iterator, "stop", None)
        if stop is not None:
            stop()
    return images / elapsed if images and elapsed > 0 else None


def build_val(args, dist, class_names=None):
    """The validation split, labelled by the training classes when ``class_names`` is given (the
    training split's class names, or those stored in the checkpoint): a val folder that is not a
    training class is a ``UserError`` naming it; a training class without a val folder is a
    warning, and every other image keeps its training label. Without ``class_names`` the labels
    come from ``--class_list`` or the val folders themselves."""
    num_shards, shard_id = _shards(dist)
    dataset = create_dataset(
        args.dataset, root=args.data_dir, split=args.val_split, shuffle=False,
        num_samples=None, num_shards=num_shards, shard_id=shard_id,
        num_parallel_workers=args.num_parallel_workers, class_list=args.class_list, seed=args.seed,
        strict_data=args.strict_data, class_names=class_names, eval_shuffle=args.eval_shuffle,
        download=args.dataset_download, list_file=getattr(args, "val_list", None))
    transform = create_transforms(args.dataset, is_training=False, **_transform_kwargs(args))
    loader = create_loader(dataset, args.batch_size, drop_remainder=False, is_training=False,
                           num_classes=args.num_classes, transform=transform,
                           num_parallel_workers=args.num_parallel_workers, seed=args.seed,
                           image_resize=args.image_resize)
    return _split(loader, args.data_dir)


def check_num_classes(args, class_names):
    """``num_classes`` from the data when not given; an error when the data has more classes."""
    found = len(class_names)
    if args.num_classes is None:
        args.num_classes = found
    elif args.num_classes < found:
        raise UserError(f"num_classes is {args.num_classes} but the training data in {args.data_dir} has {found} "
                        f"classes: pass --num_classes {found} (or --class_list to choose the classes)")
    return args.num_classes


def convert_sync_bn(net, args, logger=None):
    """Replace BatchNorm2d by SyncBatchNorm across all ranks (GPU / Ascend with several ranks only)."""
    logger = logger or logging.getLogger("mindcv_res2net")
    from mindspore import communication, nn

    if args.device_target == "CPU":
        logger.warning("sync_bn: SyncBatchNorm is not available on CPU; BatchNorm statistics stay per device")
        return net
    try:
        world = communication.get_group_size()
    except Exception:  # not initialised: a single process
        world = 1
    if world < 2:
        logger.warning("sync_bn: a single rank; plain BatchNorm is used")
        return net
    for _name, cell in list(net.cells_and_names()):
        for child_name, child in list(cell.name_cells().items()):
            if isinstance(child, nn.BatchNorm2d):
                sync = nn.SyncBatchNorm(child.num_features, eps=child.eps, momentum=child.momentum)
                if child_name.isdigit():
                    cell.insert_child_to_cell(child_name, sync)
                else:
                    setattr(cell, child_name, sync)
                # after the insertion, which renames the new parameters after the attribute alone
                for attr in ("gamma", "beta", "moving_mean", "moving_variance"):
                    getattr(sync, attr).set_data(getattr(child, attr).data)
                    getattr(sync, attr).name = getattr(child, attr).name
                if hasattr(cell, "cell_list"):  # a SequentialCell runs its cached list: refresh it
                    cell.cell_list = list(cell.name_cells().values())
    logger.info("sync_bn: BatchNorm statistics synchronised across %d ranks", world)
    return net
