"""Data sets: ImageFolder (ImageNet layout), MNIST and Fashion-MNIST; per-epoch seeded order.

``create_dataset`` returns a ``mindspore.dataset.GeneratorDataset`` with two columns:

* ``image``: for ImageFolder data sets, the encoded file (1-D uint8: the original JPEG bytes,
  or an RGB PPM for anything else, see :mod:`.decode`); for MNIST / Fashion-MNIST, the decoded
  HxWx1 uint8 array.
* ``label``: int32 scalar (``-1`` marks an unreadable file in evaluation, see below).

Extra attributes on the returned object: ``class_names`` (list of str, index = label),
``dataset_info`` (:class:`DatasetInfo`), ``set_epoch(epoch)``.

Order. The order of an epoch is a pure function of (seed, epoch): training order is
``numpy.random.RandomState(seed + epoch).permutation(n)``; each ``__iter__`` of the sampler
(one per epoch; MindSpore asks once per epoch, possibly while the previous epoch is still
being consumed) takes the current epoch and moves it on by one. ``set_epoch(k)`` (or
``start_epoch`` in :func:`create_loader`) positions it, so a resumed run sees the same order
from epoch k on.

Sharding. ``shuffle=True`` (training): every rank draws the same permutation and takes a
disjoint contiguous slice of ``n // num_shards`` samples, so all ranks have the same number of
samples, hence the same number of batches (required by data-parallel all-reduce); up to
``num_shards - 1`` samples, a different few each epoch, are left out. ``shuffle=False``
(evaluation): rank r takes indices ``r, r + world, r + 2*world, ...`` in file order, no padding
and no duplicates, so summing per-rank correct/total counts gives the exact figure; ranks may
differ by one sample.

Unreadable files (zero bytes, truncated, not an image, ...). ``strict_data=True``: a
``UserError`` naming the file. Otherwise the file is logged once, counted in
``dataset_info.bad_images`` (:class:`~.decode.BadImageCounter`) every time it is met, and:
training (``shuffle=True``) replaces it by the next readable file in file order, so batch
counts stay equal on every rank; evaluation (``shuffle=False``) yields a small grey placeholder
with label ``-1``, which metrics must leave out (``label >= 0``). Neither changes the order of
the other samples.
"""
import logging
import os
from dataclasses import dataclass, field

import numpy as np

import mindspore.dataset as ds

from ..errors import UserError
from . import SAMPLERS
from . import decode as _decode
from .readers import mindrecord_writer as _mindrecord
from .readers.mindrecord_reader import build_pipeline as _mindrecord_pipeline
from .readers.idx import FASHION_MNIST_CLASSES, MNIST_CLASSES, read_idx
from .readers.image_folder import _split_dir, read_class_list, scan_image_folder
from .readers.list_file import read_list_file
from .readers.mnist_files import fetch_raw_files
from .sampler import BalancedSampler, EpochSampler, RepeatAugSampler, check_aug_repeats

_logger = logging.getLogger(__name__)

MNIST_FAMILY = {"mnist": MNIST_CLASSES, "fashion_mnist": FASHION_MNIST_CLASSES}
IMAGEFOLDER_NAMES = ("imagenet", "imagefolder")
MINDRECORD_NAME = "mindrecord"  # a MindRecord set written by ``prepare mindrecord`` (see :mod:`.readers.mindrecord_writer`)
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_MAX_SUBSTITUTE_TRIES = 64


def canonical_name(name):
    """'ImageFolder' -> 'imagefolder', 'Fashion-MNIST' -> 'fashion_mnist'; UserError if unknown."""
    key = str(name).strip().lower().replace("-", "_")
    key = {"fashionmnist": "fashion_mnist", "image_folder": "imagefolder", "mind_record": "mindrecord"}.get(key, key)
    if key not in IMAGEFOLDER_NAMES and key not in MNIST_FAMILY and key != MINDRECORD_NAME:
        raise UserError(f"unknown dataset name: {name!r}. Use one of imagenet, imagefolder, "
                        f"mindrecord, fashion_mnist, mnist")
    return key


def is_mnist_family(name):
    return canonical_name(name) in MNIST_FAMILY


@dataclass
class DatasetInfo:
    """What the trainer, validator and predictor need to know about a data set."""
    name: str
    root: str
    split: str
    class_names: list
    num_samples: int  # images in the split (after the num_samples cap), all ranks together
    samples_per_epoch: int  # what this rank reads per epoch
    num_shards: int
    shard_id: int
    shuffle: bool
    seed: int
    bad_images: _decode.BadImageCounter = field(repr=False)
    sampler: "EpochSampler" = field(repr=False)
    source: object = field(repr=False)

    @property
    def num_classes(self):
        return len(self.class_names)


# ----------------------------------------------------------------------------------------------
# Sampler

# ----------------------------------------------------------------------------------------------
# Sources (random access, called from MindSpore's source threads)

class _SourceBase:
    def __init__(self, num_items, strict, replace_bad, bad_images):
        self.num_items = num_items
        self.strict = strict
        self.replace_bad = replace_bad
        self.bad_images = bad_images
        self.known_bad = {}

    def __len__(self):
        return self.num_items

    def _name(self, index):
        raise NotImplementedError

    def _load(self, index):
        """Return the image column for ``index`` or raise BadImage."""
        raise NotImplementedError

    def _placeholder(self):
        raise NotImplementedError

    def _label(self, index):
        raise NotImplementedError

    def _try(self, index, record=True):
        reason = self.known_bad.get(index)
        if reason is None:
            try:
                return self._load(index)
            except _decode.BadImage as exc:
                reason = str(exc)
                if not exc.transient:  # a read error may pass (network file systems): retry later
                    self.known_bad[index] = reason
        name = self._name(index)
        if self.strict:
            err = UserError(f"unreadable image: {name} ({reason}). Remove or replace the file, "
                            f"or run without strict_data to skip unreadable images")
            self.bad_images.fatal = err
            raise err
        if record:
            self.bad_images.record(name, reason)
        return None

    def __getitem__(self, index):
        index = int(index)
        image = self._try(index)
        if image is not None:
            return image, np.array(self._label(index), dtype=np.int32)
        if not self.replace_bad:
            return self._placeholder(), np.array(-1, dtype=np.int32)
        for step in range(1, min(_MAX_SUBSTITUTE_TRIES, self.num_items)):
            other = (index + step) % self.num_items
            image = self._try(other, record=False)  # counted when read for its own index
            if image is not None:
                return image, np.array(self._label(other), dtype=np.int32)
        raise UserError(f"no readable image among {_MAX_SUBSTITUTE_TRIES} files after "
                        f"{self._name(index)}. Check the data set (see the warnings above)")


class ImageFileSource(_SourceBase):
    """Files on disk -> encoded bytes (``mode='encoded'``) or HxWx1 arrays (``mode='grey'``)."""

    def __init__(self, paths, labels, mode="encoded", strict=False, replace_bad=True,
                 bad_images=None, large_pixels=None):
        super().__init__(len(paths), strict, replace_bad, bad_images or _decode.BadImageCounter())
        self.paths = list(paths)
        self.labels = np.asarray(labels, dtype=np.int32)
        self.mode = mode
        self.large_pixels = large_pixels

    def _name(self, index):
        return self.paths[index]

    def _label(self, index):
        return self.labels[index]

    def _load(self, index):
        data = _decode.read_file(self.paths[index])
        if self.mode == "grey":
            if not data:
                raise _decode.BadImage("empty file (0 bytes)")
            return _decode.decode_with_pil(data, self.large_pixels, mode="L")[:, :, None]
        return np.frombuffer(_decode.prepare_encoded(data, self.large_pixels), dtype=np.uint8)

    def _placeholder(self):
        if self.mode == "grey":
            return np.zeros((28, 28, 1), np.uint8)
        return np.frombuffer(_decode.PLACEHOLDER_PPM, dtype=np.uint8)


class ArraySource(_SourceBase):
    """In-memory NxHxW uint8 images (idx files) -> HxWx1 arrays."""

    def __init__(self, images, labels, names_prefix=""):
        super().__init__(len(images), False, True, _decode.BadImageCounter())
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int32)
        self.names_prefix = names_prefix

    def _name(self, index):
        return f"{self.names_prefix}[{index}]"

    def _label(self, index):
        return self.labels[index]

    def _load(self, index):
        return self.images[index][:, :, None]


# ----------------------------------------------------------------------------------------------
# Folder scanning

def check_data_dir(name, root, split):
    """The cheap part of :func:`create_dataset`'s checks: the data folder (and, for image
    folders, the split folder) exists. ``UserError`` naming the folder and the fix; nothing is
    scanned or read. For MNIST / Fashion-MNIST the split may also be idx files in ``root``."""
    key = canonical_name(name)
    if key in MNIST_FAMILY:
        root = os.fspath(root) if root is not None else None
        if not root or not os.path.isdir(root):
            raise UserError(f"data directory not found: {root}. Point --data_dir at the folder with the "
                            f"{key} idx files, or prepare class folders with 'python -m "
                            f"mindcv_res2net.data.prepare {key} --out DIR'")
        if find_idx_files(root, split) is None and not os.path.isdir(os.path.join(root, split)):
            raise UserError(f"no {key} data in {root}: neither idx files (train-images-idx3-ubyte[.gz], "
                            f"...) nor a class-folder split {os.path.join(root, split)}. Run 'python -m "
                            f"mindcv_res2net.data.prepare {key} --out {root}'")
        return
    if _find_mindrecord(key, root, split) is None:
        _split_dir(root, split)


def _find_mindrecord(key, root, split):
    """The MindRecord folder of ``split`` (``dataset: mindrecord``, or an ImageFolder name whose
    ``root/split`` holds a set written by ``prepare mindrecord``), else None."""
    if key in MNIST_FAMILY:
        return None
    found = _mindrecord.find_split(root, split)
    if found is None and key == MINDRECORD_NAME:
        where = os.path.join(os.fspath(root), split) if root is not None else None
        raise UserError(f"no MindRecord set for split {split!r}: {where}/{_mindrecord.META_NAME} not found. "
                        f"Write one with 'python -m mindcv_res2net.data.prepare mindrecord --src IMAGEFOLDER "
                        f"--out {root}', or use --dataset imagefolder")
    return found


def find_idx_files(root, split):
    """(images_path, labels_path) in ``root`` or ``root/raw`` for split train / val|test, or None."""
    key = "train" if split == "train" else "test"
    for folder in (root, os.path.join(root, "raw")):
        found = []
        for stem in IDX_FILES[key]:
            for cand in (stem + ".gz", stem, stem.replace("-idx", ".idx"),
                         stem.replace("-idx", ".idx") + ".gz"):
                if os.path.isfile(os.path.join(folder, cand)):
                    found.append(os.path.join(folder, cand))
                    break
        if len(found) == 2:
            return tuple(found)
    return None


def load_idx_split(root, split):
    """(images NxHxW uint8, labels N int32) from idx files; UserError if missing or mismatched."""
    files = find_idx_files(root, split)
    if files is None:
        return None
    images, labels = read_idx(files[0]), read_idx(files[1])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise UserError(f"idx files do not match: {files[0]} holds {images.shape}, {files[1]} "
                        f"holds {labels.shape}. Re-download them")
    return images, labels.astype(np.int32)


# ----------------------------------------------------------------------------------------------

def available_cores():
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    cores = None
    if hasattr(os, "sched_getaffinity"):
        try:
            cores = len(os.sched_getaffinity(0))
        except OSError:
            cores = None
    total = os.cpu_count() or 1
    # MindSpore refuses more workers than os.cpu_count(); the affinity mask can only lower that
    return max(1, min(cores or total, total))


_WORKERS_WARNED = set()


def resolve_workers(num_parallel_workers):
    """Data pipeline workers: the requested number (None or 0: up to 8), clamped to the cores
    this process may use. MindSpore raises ``ValueError`` for more workers than cores, and the
    published recipes ask for 8; a clamp is logged once per process (one line)."""
    cores = available_cores()
    if not num_parallel_workers:
        return min(8, cores)
    requested = int(num_parallel_workers)
    if requested < 1:
        raise UserError(f"num_parallel_workers must be at least 1, got {requested}")
    if requested <= cores:
        return requested
    if (requested, cores) not in _WORKERS_WARNED:
        _WORKERS_WARNED.add((requested, cores))
        _logger.warning("num_parallel_workers=%d but this machine gives the process %d CPU core(s): "
                        "using %d data workers (set --num_parallel_workers %d to silence this)",
                        requested, cores, cores, cores)
    return cores


def _check_shards(num_shards, shard_id):
    if num_shards is None and shard_id is None:
        return 1, 0
    if num_shards is None or shard_id is None:
        raise UserError("num_shards and shard_id must be given together (or neither)")
    num_shards, shard_id = int(num_shards), int(shard_id)
    if num_shards < 1 or not 0 <= shard_id < num_shards:
        raise UserError(f"bad sharding: shard_id={shard_id}, num_shards={num_shards}. "
                        f"Need 0 <= shard_id < num_shards")
    return num_shards, shard_id


def _check_training_classes(class_names, class_list):
    """Check ``class_list`` against the training classes; return the class names as strings."""
    class_names = [str(c) for c in class_names]
    if class_list is not None and read_class_list(class_list) != class_names:
        raise UserError(f"--class_list {class_list if isinstance(class_list, str) else ''} does not match "
                        f"the classes the model was trained on ({', '.join(class_names[:10])}"
                        f"{' ...' if len(class_names) > 10 else ''}): drop --class_list, or use the "
                        f"list the model was trained with")
    return class_names


def _mnist_source(key, root, split, download, class_list, class_names, file_options):
    """Open an MNIST-family split (idx files, downloaded if asked, or class folders); return source and classes."""
    if root is None or not os.path.isdir(os.fspath(root)):
        if download and root is not None:
            os.makedirs(root, exist_ok=True)
        else:
            raise UserError(f"data directory not found: {root}. Point --data_dir at the folder "
                            f"with the {key} idx files, or prepare class folders with "
                            f"'python -m mindcv_res2net.data.prepare {key} --out DIR'")
    root = os.fspath(root)
    loaded = load_idx_split(root, split)
    if loaded is None and not os.path.isdir(os.path.join(root, split)) and download:
        fetch_raw_files(key, root)
        loaded = load_idx_split(root, split)
    if loaded is not None:
        images, labels = loaded
        if class_names is None:
            class_names = list(MNIST_FAMILY[key]) if class_list is None else read_class_list(class_list)
        if labels.size and labels.max() >= len(class_names):
            raise UserError(f"idx labels go up to {labels.max()} but there are "
                            f"{len(class_names)} classes. Check the class list")
        source = ArraySource(images, labels, names_prefix=f"{root}:{split}")
        source.bad_images = file_options["bad_images"]
        return source, class_names
    if not os.path.isdir(os.path.join(root, split)):
        raise UserError(f"no {key} data in {root}: neither idx files (train-images-idx3-ubyte"
                        f"[.gz], ...) nor a class-folder split {os.path.join(root, split)}. "
                        f"Run 'python -m mindcv_res2net.data.prepare {key} --out {root}'")
    paths, labels, class_names = scan_image_folder(root, split, class_list, class_names)
    return ImageFileSource(paths, labels, mode="grey", **file_options), class_names


def _open_source(key, root, split, download, class_list, class_names, file_options, list_file=None):
    """Open the split's samples; return (dataset key, source, class names, MindRecord label map or None)."""
    if list_file is not None:
        paths, labels, class_names = read_list_file(list_file, root, class_list, class_names)
        mode = "grey" if key in MNIST_FAMILY else "encoded"  # as the data set's own class folders are read
        return key, ImageFileSource(paths, labels, mode=mode, **file_options), class_names, None
    if key in MNIST_FAMILY:
        source, class_names = _mnist_source(key, root, split, download, class_list, class_names, file_options)
        return key, source, class_names, None
    if _find_mindrecord(key, root, split) is not None:
        source = _mindrecord.open_split(_find_mindrecord(key, root, split))
        mr_labels, class_names = _mindrecord.label_map(source, class_list, class_names)
        if key != MINDRECORD_NAME:
            _logger.info("%s holds a MindRecord set: reading it (dataset: mindrecord)", source.folder)
        return MINDRECORD_NAME, source, class_names, mr_labels
    paths, labels, class_names = scan_image_folder(root, split, class_list, class_names)
    return key, ImageFileSource(paths, labels, mode="encoded", **file_options), class_names, None


def _samples_per_epoch(source, num_samples, shuffle, num_shards):
    """Images read per epoch by all ranks together: the source, limited by ``num_samples``."""
    total = len(source)
    if num_samples is not None:
        if int(num_samples) < 1:
            raise UserError(f"num_samples must be positive, got {num_samples}")
        total = min(total, int(num_samples))
    if shuffle and total < num_shards:
        raise UserError(f"{total} images cannot be shared by {num_shards} ranks. Use more data")
    return total


def _make_sampler(size, total, aug_repeats, num_samples, shuffle, seed, num_shards, shard_id, start_epoch,
                  eval_shuffle, kind="default", labels=None):
    """The epoch sampler: class-balanced or repeated augmentation when asked, else the seeded
    per-epoch order."""
    if kind not in SAMPLERS:
        raise UserError(f"unknown sampler {kind!r}: use one of {', '.join(SAMPLERS)}")
    if kind == "balanced":
        return _balanced_sampler(labels, total, aug_repeats, shuffle, seed, num_shards, shard_id, start_epoch)
    aug_repeats = check_aug_repeats(aug_repeats)
    if aug_repeats > 1 and num_samples is not None:
        raise UserError(f"aug_repeats={aug_repeats} and num_samples={num_samples} cannot be used together "
                        f"(as in MindCV): drop num_samples, or set aug_repeats to 0")
    if aug_repeats > 1:
        return RepeatAugSampler(size, num_repeats=aug_repeats, shuffle=shuffle, seed=seed,
                                num_shards=num_shards, shard_id=shard_id, start_epoch=start_epoch)
    return EpochSampler(size, shuffle=shuffle, seed=seed, num_shards=num_shards,
                        shard_id=shard_id, start_epoch=start_epoch, limit=total,
                        eval_shuffle=eval_shuffle)


def _balanced_sampler(labels, total, aug_repeats, shuffle, seed, num_shards, shard_id, start_epoch):
    """``sampler: balanced`` (training only; not with ``aug_repeats``)."""
    if not shuffle:
        raise UserError("sampler: balanced draws training images at random: it does not apply to evaluation")
    if check_aug_repeats(aug_repeats) > 1:
        raise UserError("sampler: balanced and aug_repeats cannot be used together: set aug_repeats to 0, or "
                        "sampler to default")
    if labels is None:
        raise UserError("sampler: balanced needs each image's label before reading it, which a MindRecord set "
                        "does not give: train from class folders or a list file (--train_list)")
    return BalancedSampler(labels, seed=seed, num_shards=num_shards, shard_id=shard_id, start_epoch=start_epoch,
                           limit=total)


def create_dataset(name="imagenet", root=None, split="train", shuffle=True, num_samples=None,
                   num_shards=None, shard_id=None, num_parallel_workers=None, class_list=None,
                   seed=None, strict_data=False, start_epoch=0, download=False,
                   large_image_pixels=None, class_names=None, aug_repeats=0, eval_shuffle=False, list_file=None,
                   sampler="default", **kwargs):
    """Build a data set (see the module docstring for columns, order, sharding, bad files).

    Args:
        name: 'imagenet' / 'imagefolder' (``root/split/<class>/<image>``, or the MindRecord set
            ``root/split`` when it holds one), 'mindrecord' (see :mod:`.readers.mindrecord_writer`), 'fashion_mnist' or
            'mnist' (idx files, ``.gz`` or raw, in ``root`` or ``root/raw``; or prepared class
            folders ``root/split/<class>/*.png``).
        root: data directory. split: 'train', 'val' (or 'test'; for idx files both mean t10k).
        shuffle: seeded per-epoch permutation (training) or file order (evaluation).
        eval_shuffle: with ``shuffle`` false, read the same images in a seeded random order
            (MindCV's ``eval_shuffle``; the evaluation figures do not change).
        num_samples: use only this many images per epoch (all ranks together): the first
            ``num_samples`` of each epoch's permutation when shuffling (a new random subset
            every epoch), else a fixed subset spread evenly over the (class-sorted) files.
        num_shards, shard_id: distributed sharding (see module docstring).
        num_parallel_workers: source threads (file reading and checking).
        class_list: list of class names or a text file, one per line: label = line index, so a
            partial class set keeps its full-set indices. Folders not in the list: UserError.
        seed: order seed (None -> 0). strict_data: unreadable file -> UserError.
        start_epoch: epoch whose order the first iteration reads (see ``set_epoch``).
        aug_repeats: repeated augmentation (training only; 0 or 1 = off): each image appears
            ``aug_repeats`` times per epoch, spread over the ranks, with the same samples per
            rank as without it (:class:`~.sampler.RepeatAugSampler`). Not with ``num_samples``.
        download: for fashion_mnist / mnist, fetch and verify the official files into ``root``
            when neither idx files nor class folders are present.
        large_image_pixels: images above this many pixels are reduced before decoding.
        class_names: the classes a model was trained on, in label order (the training split's
            ``class_names``, or those stored in a checkpoint). Class folders are mapped through
            it: label = index in this list. A folder not in it is a ``UserError`` naming the
            folder; a class without a folder is logged once as a warning and changes no other
            label. ``class_list``, if also given, must name the same classes in the same order.
        list_file: read the images and labels from this list file (:mod:`.readers.list_file`:
            ``relative/path<TAB>label`` lines, paths relative to ``root``) instead of ``root/split``;
            the same source, transforms, sharding and bad-image handling as class folders.
        sampler: 'default' (the seeded per-epoch order) or 'balanced' (training: classes drawn
            uniformly, images with replacement, :class:`~.sampler.BalancedSampler`).

    Returns:
        ``mindspore.dataset.GeneratorDataset`` with ``.class_names``, ``.dataset_info`` and
        ``.set_epoch``; ``get_dataset_size()`` = samples this rank reads per epoch.
    """
    if kwargs:
        raise UserError(f"unknown create_dataset option(s): {', '.join(sorted(kwargs))}")
    key = canonical_name(name)
    split = str(split) if split else ""
    num_shards, shard_id = _check_shards(num_shards, shard_id)
    seed = 0 if seed is None else int(seed)
    workers = resolve_workers(num_parallel_workers)
    bad = _decode.BadImageCounter()
    replace_bad = bool(shuffle)
    if class_names is not None:
        class_names = _check_training_classes(class_names, class_list)
        class_list = None  # the training classes decide the labels

    file_options = dict(strict=strict_data, replace_bad=replace_bad, bad_images=bad, large_pixels=large_image_pixels)
    key, source, class_names, mr_labels = _open_source(key, root, split, download, class_list, class_names,
                                                       file_options, list_file)
    total = _samples_per_epoch(source, num_samples, shuffle, num_shards)
    sampler = _make_sampler(len(source), total, aug_repeats, num_samples, shuffle, seed, num_shards, shard_id,
                            start_epoch, eval_shuffle, sampler, getattr(source, "labels", None))
    source_threads = max(1, min(workers, 4))
    if key == MINDRECORD_NAME:
        dataset = _mindrecord_pipeline(source, sampler, mr_labels, bad, strict=strict_data, replace_bad=replace_bad,
                                       large_pixels=large_image_pixels, workers=source_threads)
    else:
        dataset = ds.GeneratorDataset(source, column_names=["image", "label"], sampler=sampler,
                                      num_parallel_workers=source_threads, python_multiprocessing=False)
    info = DatasetInfo(name=key, root=os.fspath(root), split=split, class_names=list(class_names),
                       num_samples=total, samples_per_epoch=sampler.samples_per_epoch(),
                       num_shards=num_shards, shard_id=shard_id, shuffle=bool(shuffle), seed=seed,
                       bad_images=bad, sampler=sampler, source=source)
    attach_info(dataset, info)
    return dataset


def attach_info(dataset, info):
    dataset.dataset_info = info
    dataset.class_names = info.class_names
    dataset.set_epoch = info.sampler.set_epoch
    return dataset


def get_dataset_info(dataset):
    """The :class:`DatasetInfo` of a data set or loader made by this package; UserError if none."""
    info = getattr(dataset, "dataset_info", None)
    if info is None:
        raise UserError("this data set was not made by mindcv_res2net.data.create_dataset; "
                        "build it with create_dataset")
    return info
