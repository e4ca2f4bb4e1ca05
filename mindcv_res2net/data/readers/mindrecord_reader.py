"""Reading a MindRecord split through ``mindspore.dataset.MindDataset`` in ImageFolder's order.

The sample order comes from the same sampler as ImageFolder's (:class:`~.sampler.EpochSampler` or
:class:`~.sampler.RepeatAugSampler`): its indices for the current epoch (file order, this rank's
share) are mapped to MindRecord rows and handed to MindDataset as a subset sampler, which keeps
the given order. MindDataset's sampler is C++: the indices are taken when the pipeline is built
(each iterator, and ``get_dataset_size``), from the epoch the sampler is set to (``start_epoch``,
``set_epoch``); build an iterator per epoch, as the trainer does (it rebuilds the training
pipeline every epoch), rather than one iterator over several epochs.

Unreadable images (found when the set was written): ``strict_data`` -> ``UserError`` here, before
anything is read; training reads the next readable image in file order instead (as ImageFolder
does), counted in ``bad_images``; evaluation yields the grey placeholder with label -1.
"""
import numpy as np

import mindspore.dataset as ds

from ...errors import UserError
from . import mindrecord_writer as _mindrecord

_MAX_SUBSTITUTE_TRIES = 64  # as ImageFolder's source


class MindRecordSubsetSampler(ds.SubsetSampler):
    """MindDataset's subset sampler over the rows of ``epoch_sampler``'s current epoch.

    ``rows[i]``: MindDataset row of image i (file order); ``substitute[i]``: the image read for i
    (i itself unless unreadable); ``on_epoch(epoch, indices)``: called with the indices of an
    epoch. Deep copies return the same object (MindSpore copies the pipeline for every iterator).
    """

    def __init__(self, epoch_sampler, rows, substitute, on_epoch=None):
        self.epoch_sampler = epoch_sampler
        self.rows = rows
        self.substitute = substitute
        self.on_epoch = on_epoch
        super().__init__(self.current_rows())

    def current_rows(self):
        epoch = self.epoch_sampler.epoch
        indices = self.epoch_sampler.indices(epoch)
        if self.on_epoch is not None:
            self.on_epoch(epoch, indices)
        return self.rows[self.substitute[indices]].tolist()

    def parse_for_minddataset(self):
        self.indices = self.current_rows()
        return super().parse_for_minddataset()

    def __deepcopy__(self, memo):
        return self


def _substitutes(n, bad, folder):
    substitute = np.arange(n, dtype=np.int64)
    bad_set = set(bad)
    for index in bad:
        for step in range(1, min(_MAX_SUBSTITUTE_TRIES, n)):
            other = (index + step) % n
            if other not in bad_set:
                substitute[index] = other
                break
        else:
            raise UserError(f"no readable image among {_MAX_SUBSTITUTE_TRIES} images after image {index} of "
                            f"{folder}. Check the data set (see mindrecord.json, 'unreadable')")
    return substitute


def build_pipeline(split, sampler, labels, bad_images, strict=False, replace_bad=True, large_pixels=None,
                   workers=1):
    """The two-column (image, label) data set of a checked :class:`~.mindrecord.MindRecordSplit`.

    ``labels``: stored label -> output label (:func:`~.mindrecord.label_map`); ``sampler``: the
    ImageFolder sampler for ``len(split)`` images. Returns the MindSpore data set.
    """
    bad_names = {int(i): name for name, i in (split.meta.get("unreadable_index") or {}).items()}
    bad = sorted(bad_names)
    if strict and bad:
        first = bad_names[bad[0]]
        raise UserError(f"unreadable image: {split.folder}:{first} ({split.unreadable.get(first)}; "
                        f"{len(bad)} unreadable in all, see mindrecord.json). Replace the file(s) and prepare "
                        f"the MindRecord set again, or run without strict_data to skip unreadable images")
    substitute = _substitutes(len(split), bad, split.folder) if (replace_bad and bad) else \
        np.arange(len(split), dtype=np.int64)
    seen = set()

    def on_epoch(epoch, indices):
        if not (replace_bad and bad) or epoch in seen:
            return
        seen.add(epoch)
        for i in np.intersect1d(indices, bad):
            name = bad_names[int(i)]
            for _ in range(int(np.count_nonzero(indices == i))):
                bad_images.record(f"{split.folder}:{name}", split.unreadable.get(name, "unreadable"))

    msampler = MindRecordSubsetSampler(sampler, split.rows, substitute, on_epoch)
    columns = ["image", "label", "kind", "file_name"]
    try:
        data = ds.MindDataset(split.files, columns_list=columns, sampler=msampler, num_parallel_workers=workers)
        data.get_dataset_size()  # opens every shard and index now, before training starts
    except (RuntimeError, ValueError) as exc:
        raise UserError(f"cannot open the MindRecord set in {split.folder}: {str(exc).splitlines()[0][:300]}. "
                        f"{_mindrecord.rerun_hint(split.folder)}") from None
    decoder = _mindrecord.RowDecoder(labels, bad_images, split.folder, strict=strict, large_pixels=large_pixels)
    # a MapDataset (not a project node): MindSpore copies it safely with the info attached to it
    return data.map(operations=decoder, input_columns=columns, output_columns=["image", "label"],
                    num_parallel_workers=workers, python_multiprocessing=False)
