"""Input-pipeline throughput: images per second of the ImageNet training pipeline.

``measure_pipeline_throughput`` times decode + random-resized-crop + flip + normalise + CHW +
batching (no auto-augment, no mixup) over an ImageFolder tree; ``make_synthetic_jpegs`` writes
a tree of photo-like JPEGs (smooth colour fields plus texture and sensor-like noise, about the
file size of ImageNet photos at 500x375) when no real data is at hand.
"""
import os
import time

import numpy as np
from PIL import Image

from .dataset import create_dataset
from .loader import create_loader
from .transforms import create_transforms


def _photo_like(rng, width, height):
    small = Image.fromarray((rng.random((6, 8, 3)) * 255).astype(np.uint8))
    base = np.asarray(small.resize((width, height), Image.BICUBIC), np.float32)
    tex = Image.fromarray((rng.random((max(1, height // 8), max(1, width // 8), 3)) * 255).astype(np.uint8))
    mid = np.asarray(tex.resize((width, height), Image.BILINEAR), np.float32)
    img = 0.6 * base + 0.3 * mid + rng.standard_normal((height, width, 3)).astype(np.float32) * 12
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def make_synthetic_jpegs(root, n_images=256, size=(500, 375), num_classes=4, quality=90, seed=0,
                         split="train"):
    """Write ``root/split/class_k/img_i.jpg`` (photo-like, ``size`` = (width, height)).

    Returns ``root``. Existing files of the same name are kept (cheap to call twice).
    """
    rng = np.random.default_rng(seed)
    width, height = size
    for i in range(int(n_images)):
        cdir = os.path.join(root, split, f"class_{i % num_classes:03d}")
        os.makedirs(cdir, exist_ok=True)
        path = os.path.join(cdir, f"img_{i:06d}.jpg")
        if not os.path.exists(path):
            tmp = path + ".tmp"
            _photo_like(rng, width, height).save(tmp, "JPEG", quality=quality)
            os.replace(tmp, path)
    return root


def measure_pipeline_throughput(root, num_workers=1, n_images=1000, image_size=224, batch_size=32,
                                split="train", warmup_batches=2):
    """Time the training pipeline on ``root/split``; returns a dict.

    ``num_workers`` is the number of decode/augment workers (the map op's threads); the
    data set is cycled until ``n_images`` have been produced after ``warmup_batches``.
    Result keys: images_per_sec, images_per_sec_per_worker, images_per_cpu_second (images per
    second of CPU time used by the whole process: the per-core rate, independent of other load
    on a shared machine), cpu_seconds, num_workers, n_images, seconds, mean_file_kb, image_size.
    """
    dataset = create_dataset("imagefolder", root=root, split=split, shuffle=True, seed=0,
                             num_parallel_workers=num_workers)
    info = dataset.dataset_info
    paths = info.source.paths[:200]
    mean_kb = float(np.mean([os.path.getsize(p) for p in paths])) / 1024.0
    transform = create_transforms("imagenet", image_resize=image_size, is_training=True)
    loader = create_loader(dataset, batch_size=batch_size, drop_remainder=True, is_training=True,
                           transform=transform, num_parallel_workers=num_workers, seed=0)
    steps = loader.steps_per_epoch
    # batch `warmup_batches` starts the clock; the ceil(n_images / batch_size) after it are timed
    total = warmup_batches + 1 + -(-int(n_images) // batch_size)
    epochs = -(-total // steps)
    iterator = loader.create_tuple_iterator(num_epochs=epochs, output_numpy=True)
    count, start, k = 0, None, 0
    for _epoch in range(epochs):  # a MindSpore iterator stops at the end of each epoch
        for images, _labels in iterator:
            if k == warmup_batches:
                start = time.perf_counter()
                cpu_start = time.process_time()
            elif k > warmup_batches:
                count += images.shape[0]
            k += 1
            if k >= total:
                break
        if k >= total:
            break
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    rate = count / seconds
    return {"images_per_sec": rate, "images_per_sec_per_worker": rate / num_workers,
            "images_per_cpu_second": count / max(cpu_seconds, 1e-9), "cpu_seconds": cpu_seconds,
            "num_workers": num_workers, "n_images": count, "seconds": seconds,
            "mean_file_kb": mean_kb, "image_size": image_size}
