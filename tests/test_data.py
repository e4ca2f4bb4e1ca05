"""Data sets, decoding of bad files, transforms, sharding, per-epoch order, Fashion-MNIST preparation.

Small inputs only: image trees of a few 16-48 px files written to tmp_path.
"""
import gzip
import io
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mindcv_res2net.data import (FASHION_MNIST_CLASSES, create_dataset, create_loader,
                                 create_transforms, measure_pipeline_throughput)
from mindcv_res2net.data.decode import BadImage, inspect_jpeg, prepare_encoded
from mindcv_res2net.errors import UserError

FMNIST_DIR = "/usr/share/datasets/fashion-mnist"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _jpeg(arr, **kw):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=kw.pop("quality", 92), **kw)
    return buf.getvalue()


def _encode(img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _png(img):
    return _encode(img, "PNG")


def _write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)
    return path


def _distinct_tree(root, n, classes=("c0", "c1"), split="train"):
    """n small distinct PNGs (id encoded in the pixel values); returns {file bytes: id}."""
    ids = {}
    for i in range(n):
        arr = np.full((8, 8, 3), i, np.uint8)
        arr[0, 0] = (i * 7) % 256, 255 - i, 3
        data = _png(Image.fromarray(arr))
        _write(os.path.join(root, split, classes[i % len(classes)], f"img_{i:03d}.png"), data)
        ids[i] = arr
    return ids


class _IdOp:
    """Python op: the encoded image (an RGB PPM from the decode layer) -> its id (top-left blue = 3,
    red = (7 i) % 256, green = 255 - i)."""

    def __call__(self, data):
        arr = np.asarray(Image.open(io.BytesIO(np.asarray(data).tobytes())).convert("RGB"))
        return np.array([255 - int(arr[0, 0, 1])], np.int32)


def _ids(loader, epochs=1):
    it = loader.create_tuple_iterator(num_epochs=epochs, output_numpy=True)
    out = []
    for _ in range(epochs):
        out.append([row[0].reshape(-1).tolist() for row in it])
    return out


# ----------------------------------------------------------------------------------------------
# ImageFolder labels

def test_imagefolder_labels_from_sorted_folders(tmp_path):
    for name in ("zebra", "apple", "mango"):  # created out of order
        for k in range(2):
            _write(str(tmp_path / "train" / name / f"{k}.jpg"), _jpeg(np.full((16, 16, 3), 9, np.uint8)))
    _write(str(tmp_path / "train" / "apple" / "notes.txt"), b"not an image, ignored by extension")
    ds = create_dataset("ImageFolder", root=str(tmp_path), split="train", shuffle=False)
    assert ds.class_names == ["apple", "mango", "zebra"]
    info = ds.dataset_info
    assert info.num_samples == 6 and ds.get_dataset_size() == 6
    for path, label in zip(info.source.paths, info.source.labels):
        assert ds.class_names[label] == os.path.basename(os.path.dirname(path))
    labels = [int(row[1]) for row in ds.create_tuple_iterator(num_epochs=1, output_numpy=True)]
    assert labels == [0, 0, 1, 1, 2, 2]


def test_imagefolder_labels_from_class_list(tmp_path):
    for name in ("n02", "n07"):
        _write(str(tmp_path / "val" / name / "a.jpg"), _jpeg(np.zeros((16, 16, 3), np.uint8)))
    class_file = tmp_path / "classes.txt"
    class_file.write_text("n01\nn02\n# comment\n\nn05\nn07\nn09\n")
    ds = create_dataset("imagenet", root=str(tmp_path), split="val", shuffle=False, class_list=str(class_file))
    assert ds.class_names == ["n01", "n02", "n05", "n07", "n09"]
    labels = [int(row[1]) for row in ds.create_tuple_iterator(num_epochs=1, output_numpy=True)]
    assert labels == [1, 3]  # the full-set indices, not 0, 1
    _write(str(tmp_path / "val" / "n99" / "b.jpg"), _jpeg(np.zeros((16, 16, 3), np.uint8)))
    with pytest.raises(UserError, match="n99"):
        create_dataset("imagenet", root=str(tmp_path), split="val", class_list=str(class_file))


def test_missing_or_empty_data_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="nowhere"):
        create_dataset("imagenet", root=str(tmp_path / "nowhere"), split="train")
    (tmp_path / "val").mkdir()
    with pytest.raises(UserError, match=r"train"):
        create_dataset("imagenet", root=str(tmp_path), split="train")
    (tmp_path / "train" / "cls").mkdir(parents=True)
    with pytest.raises(UserError, match="no images"):
        create_dataset("imagenet", root=str(tmp_path), split="train")
    with pytest.raises(UserError, match="unknown dataset"):
        create_dataset("cifar11", root=str(tmp_path))


# ----------------------------------------------------------------------------------------------
# Fashion-MNIST

@pytest.mark.skipif(not os.path.isdir(FMNIST_DIR), reason="Debian dataset-fashion-mnist not installed")
def test_fashion_mnist_idx_facts():
    def raw(name, offset):
        with gzip.open(os.path.join(FMNIST_DIR, name), "rb") as fh:
            return np.frombuffer(fh.read(), np.uint8, offset=offset)

    train = create_dataset("fashion_mnist", root=FMNIST_DIR, split="train", shuffle=True, seed=0)
    val = create_dataset("fashion_mnist", root=FMNIST_DIR, split="val", shuffle=False)
    assert train.get_dataset_size() == 60000 and val.get_dataset_size() == 10000
    assert train.class_names == FASHION_MNIST_CLASSES
    for ds, per_class, stem, pixel_sum in ((train, 6000, "train", 3431114169),
                                           (val, 1000, "t10k", 573469082)):
        src = ds.dataset_info.source
        assert np.bincount(src.labels, minlength=10).tolist() == [per_class] * 10
        raw_images = raw(f"{stem}-images-idx3-ubyte.gz", 16)
        raw_labels = raw(f"{stem}-labels-idx1-ubyte.gz", 8)
        assert int(raw_images.astype(np.int64).sum()) == pixel_sum  # independent gzip + numpy
        assert int(src.images.astype(np.int64).sum()) == pixel_sum
        assert np.array_equal(src.labels, raw_labels)
    # Through the pipeline: the first validation samples equal the raw bytes.
    rows = val.create_tuple_iterator(num_epochs=1, output_numpy=True)
    raw_images = raw("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
    for k, (image, label) in enumerate(rows):
        assert image.shape == (28, 28, 1) and np.array_equal(image[:, :, 0], raw_images[k])
        if k == 3:
            break
    assert val.dataset_info.source.labels[:5].tolist() == [9, 2, 1, 1, 6]


@pytest.mark.skipif(not os.path.isdir(FMNIST_DIR), reason="Debian dataset-fashion-mnist not installed")
def test_prepare_with_limit_writes_class_folders(tmp_path):
    out = tmp_path / "fm"
    cmd = [sys.executable, "-m", "mindcv_res2net.data.prepare", "fashion_mnist", "--out", str(out), "--limit", "25"]
    env = dict(os.environ, PYTHONPATH=ROOT)
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr
    for split in ("train", "val"):
        assert sorted(os.listdir(out / split)) == FASHION_MNIST_CLASSES
        assert sum(len(os.listdir(out / split / c)) for c in FASHION_MNIST_CLASSES) == 25
    with gzip.open(os.path.join(FMNIST_DIR, "train-images-idx3-ubyte.gz")) as fh:
        first = np.frombuffer(fh.read(), np.uint8, offset=16)[:784].reshape(28, 28)
    png = out / "train" / "9_ankle_boot" / "train_00000.png"  # the first training label is 9
    assert np.array_equal(np.asarray(Image.open(png)), first)
    res2 = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert res2.returncode == 0 and "nothing to do" in res2.stdout
    ds = create_dataset("fashion_mnist", root=str(out), split="train", shuffle=False)
    assert ds.class_names == FASHION_MNIST_CLASSES and ds.get_dataset_size() == 25
    image, label = next(ds.create_tuple_iterator(num_epochs=1, output_numpy=True))
    assert image.shape == (28, 28, 1) and int(label) == 0
    bad = subprocess.run(cmd[:4] + ["--out", str(tmp_path / "x"), "--source", str(tmp_path)],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert bad.returncode == 2 and "error:" in bad.stderr and "lacks" in bad.stderr


# ----------------------------------------------------------------------------------------------
# Transforms

def test_eval_transform_shape_and_normalisation(tmp_path):
    rgb = (200, 100, 50)
    _write(str(tmp_path / "val" / "a" / "c.png"), _png(Image.new("RGB", (48, 40), rgb)))
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    expect = (np.array(rgb, np.float64) - np.array(mean) * 255) / (np.array(std) * 255)
    for m, s in ((mean, std), ([v * 255 for v in mean], [v * 255 for v in std])):
        ds = create_dataset("imagenet", root=str(tmp_path), split="val", shuffle=False)
        t = create_transforms("imagenet", image_resize=16, is_training=False, crop_pct=0.875, mean=m, std=s)
        loader = create_loader(ds, batch_size=1, transform=t, num_parallel_workers=1)
        images, labels = next(loader.create_tuple_iterator(num_epochs=1, output_numpy=True))
        assert images.shape == (1, 3, 16, 16) and images.dtype == np.float32
        assert labels.dtype == np.int32
        np.testing.assert_allclose(images[0].reshape(3, -1).mean(1), expect, rtol=1e-5)
        np.testing.assert_allclose(images[0].reshape(3, -1).std(1), 0, atol=1e-5)


def test_eval_geometry_and_grey_to_rgb(tmp_path):
    # a 36 x 18 image whose columns differ: resize shorter side 18 -> 18 (crop_pct 1), centre crop 18
    arr = np.zeros((18, 36, 3), np.uint8)
    arr[:, :, 0] = np.arange(36, dtype=np.uint8)[None, :] * 7
    _write(str(tmp_path / "val" / "a" / "g.png"), _png(Image.fromarray(arr)))
    ds = create_dataset("imagenet", root=str(tmp_path), split="val", shuffle=False)
    t = create_transforms("imagenet", image_resize=18, crop_pct=1.0, mean=(0, 0, 0), std=(1, 1, 1))
    images, _ = next(create_loader(ds, 1, transform=t).create_tuple_iterator(num_epochs=1, output_numpy=True))
    np.testing.assert_allclose(images[0, 0] * 255, arr[:, 9:27, 0].astype(np.float32), atol=1e-3)
    # Fashion-MNIST style: grey -> 3 equal channels, normalised with the data set's mean / std
    grey = Image.fromarray(np.full((28, 28), 77, np.uint8))
    _write(str(tmp_path / "fm" / "train" / "0_tshirt_top" / "a.png"), _png(grey))
    fm = create_dataset("fashion_mnist", root=str(tmp_path / "fm"), split="train", shuffle=False)
    tr = create_transforms("fashion_mnist", image_resize=32, is_training=False)
    images, _ = next(create_loader(fm, 1, transform=tr).create_tuple_iterator(num_epochs=1, output_numpy=True))
    assert images.shape == (1, 3, 32, 32)
    np.testing.assert_allclose(images[0], (77 / 255 - 0.2860) / 0.3530, rtol=1e-4)


def test_train_transform_runs_with_policies(tmp_path):
    _distinct_tree(str(tmp_path), 4)
    for policy in ("randaug-m9-mstd0.5-inc1", "randaug-m7-mstd0.5", "autoaug", "trivialaugwide", "3a",
                   "augmix-m3-w3-d-1", "augmix-m5-w2-d2-b1", None):
        ds = create_dataset("imagenet", root=str(tmp_path), split="train", shuffle=True, seed=0)
        t = create_transforms("imagenet", image_resize=24, is_training=True, auto_augment=policy,
                              color_jitter=0.4, re_prob=1.0, re_value="random", vflip=0.5)
        loader = create_loader(ds, 2, drop_remainder=True, is_training=True, transform=t, seed=1,
                               num_parallel_workers=1)
        for images, labels in loader.create_tuple_iterator(num_epochs=1, output_numpy=True):
            assert images.shape == (2, 3, 24, 24) and images.dtype == np.float32
            assert labels.dtype == np.int32 and np.isfinite(images).all()
    with pytest.raises(UserError, match="auto_augment"):
        create_transforms("imagenet", is_training=True, auto_augment="augmix-m5-z2")
    with pytest.raises(UserError, match="auto_augment"):
        create_transforms("imagenet", is_training=True, auto_augment="autoaugmix")
    with pytest.raises(UserError, match="interpolation"):
        create_transforms("imagenet", interpolation="fancy")


# ----------------------------------------------------------------------------------------------
# Sharding, order, resume

def test_sharded_evaluation_covers_every_index_once(tmp_path):
    _distinct_tree(str(tmp_path), 7, split="val")
    seen, sizes = [], []
    for rank in range(3):
        ds = create_dataset("imagenet", root=str(tmp_path), split="val", shuffle=False, num_shards=3, shard_id=rank)
        loader = create_loader(ds, 2, transform=[_IdOp()], num_parallel_workers=1)
        ids = [i for batch in _ids(loader)[0] for i in batch]
        seen += ids
        sizes.append(ds.get_dataset_size())
        assert loader.steps_per_epoch == loader.get_dataset_size() == -(-len(ids) // 2)
    assert sorted(seen) == list(range(7)) and sizes == [3, 2, 2]
    # training shards: equal sizes, disjoint
    slices = []
    for rank in range(3):
        ds = create_dataset("imagenet", root=str(tmp_path), split="val", shuffle=True, seed=4, num_shards=3,
                            shard_id=rank)
        assert ds.get_dataset_size() == 2
        slices.append(set(ds.dataset_info.sampler.indices(5).tolist()))
    assert len(slices[0] | slices[1] | slices[2]) == 6


def test_order_is_a_function_of_seed_and_epoch_and_resume(tmp_path):
    _distinct_tree(str(tmp_path), 10)

    def loader(**kw):
        ds = create_dataset("imagenet", root=str(tmp_path), split="train", shuffle=True, seed=11,
                            num_parallel_workers=2)
        return create_loader(ds, 2, drop_remainder=True, is_training=True, transform=[_IdOp()],
                             num_parallel_workers=2, seed=11, **kw)

    files = loader().dataset_info.source.paths
    file_id = [int(os.path.basename(p)[4:7]) for p in files]
    full = _ids(loader(), epochs=3)
    for epoch, batches in enumerate(full):
        expect = [file_id[i] for i in np.random.RandomState(11 + epoch).permutation(10)]
        assert [i for b in batches for i in b] == expect
    assert full[0] != full[1]
    # start at epoch 1: the same batches as the uninterrupted run
    assert _ids(loader(start_epoch=1), epochs=2) == full[1:]
    # resume inside epoch 1 after 2 steps, then epoch 2 in full
    resumed = loader(start_epoch=1, skip_steps=2)
    assert _ids(resumed, epochs=2) == [full[1][2:], full[2]]
    # one iterator per epoch: the skip applies once, the epoch moves on
    per_epoch = loader(start_epoch=1, skip_steps=3)
    assert _ids(per_epoch)[0] == full[1][3:]
    assert _ids(per_epoch)[0] == full[2]
    with pytest.raises(UserError, match="skip_steps"):
        loader(skip_steps=5)


# ----------------------------------------------------------------------------------------------
# Bad files

def _exif_jpeg(arr, orientation):
    img = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


def _bad_tree(root):
    rng = np.random.default_rng(0)
    smooth = np.clip(np.linspace(0, 255, 24 * 32).reshape(24, 32, 1) + rng.integers(0, 20, (24, 32, 3)), 0, 255)
    smooth = smooth.astype(np.uint8)
    good_jpeg = _jpeg(smooth)
    rgba = np.dstack([smooth, np.full((24, 32), 128, np.uint8)])
    grey16 = (np.arange(24 * 32, dtype=np.uint16).reshape(24, 32) * 80)
    pal = Image.fromarray(smooth).convert("P", palette=Image.ADAPTIVE, colors=16)
    pal.info["transparency"] = 0
    cmyk = io.BytesIO()
    Image.fromarray(smooth).convert("CMYK").save(cmyk, "JPEG", quality=95)
    good = {
        "a_good.jpg": good_jpeg,
        "b_cmyk.jpg": cmyk.getvalue(),
        "c_rgba.png": _png(Image.fromarray(rgba, "RGBA")),
        "d_grey16.png": _png(Image.fromarray(grey16)),
        "e_palette.png": _png(pal),
        "f_la.png": _png(Image.fromarray(smooth).convert("LA")),
        "g_grey.jpg": _jpeg(smooth[:, :, 0]),
        "h_exif6.jpg": _exif_jpeg(smooth, 6),
        "i_large.jpg": _jpeg(np.repeat(np.repeat(smooth, 4, 0), 4, 1)),  # 96 x 128, "large" below
        "j_progressive.jpg": _jpeg(smooth, progressive=True),
        "k_webp.webp": _encode(Image.fromarray(smooth), "WEBP", lossless=True),
    }
    bad = {
        "m_empty.jpg": b"",
        "n_truncated.jpg": good_jpeg[: len(good_jpeg) // 2],
        "o_text.jpg": b"this is a text file, not a JPEG\n" * 4,
        "p_header.png": _png(Image.fromarray(smooth))[:40],
    }
    for name, data in {**good, **bad}.items():
        _write(os.path.join(root, "train", "cls", name), data)
    return good, bad, smooth, grey16, rgba


def _reference_rgb(data):
    from PIL import ImageOps

    img = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    if img.mode == "I;16":
        return np.repeat((np.asarray(img).astype(np.uint32) >> 8).astype(np.uint8)[:, :, None], 3, 2)
    if img.mode == "P":
        img = img.convert("RGBA")
    return np.asarray(img.convert("RGB"))


def test_bad_images_decoded_or_skipped(tmp_path):
    import mindspore.dataset.vision as vision

    good, bad, _, grey16, rgba = _bad_tree(str(tmp_path))
    names = sorted({**good, **bad})
    ds = create_dataset("imagenet", root=str(tmp_path), split="train", shuffle=False, large_image_pixels=64 * 64)
    loader = create_loader(ds, 1, transform=[vision.Decode()], num_parallel_workers=1)
    rows = [(img[0], int(lab[0])) for img, lab in loader.create_tuple_iterator(num_epochs=1, output_numpy=True)]
    assert len(rows) == len(names)
    for name, (image, label) in zip(names, rows):
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, name
        if name in bad:
            assert label == -1, name
            continue
        assert label == 0, name
        if name == "i_large.jpg":  # 96 x 128 = 12288 px, reduced under 64 * 64 px
            assert image.shape[0] * image.shape[1] <= 64 * 64 and image.shape[1] > image.shape[0]
            continue
        ref = _reference_rgb(good[name])
        assert image.shape == ref.shape, name
        tol = 3 if name.endswith(".jpg") else 0
        assert np.abs(image.astype(int) - ref.astype(int)).max() <= tol, name
    assert rows[names.index("h_exif6.jpg")][0].shape == (32, 24, 3)  # rotated upright
    d16 = rows[names.index("d_grey16.png")][0]
    assert np.array_equal(d16[:, :, 1], (grey16 >> 8).astype(np.uint8))
    assert np.array_equal(rows[names.index("c_rgba.png")][0], rgba[:, :, :3])
    assert loader.pop_bad_image_count() == len(bad)
    assert loader.pop_bad_image_count() == 0
    assert set(os.path.basename(p) for p in ds.dataset_info.bad_images.names) == set(bad)

    # training: bad files are replaced by readable ones, every epoch counted
    train = create_dataset("imagenet", root=str(tmp_path), split="train", shuffle=True, seed=3)
    tl = create_loader(train, 3, drop_remainder=True, is_training=True,
                       transform=create_transforms("imagenet", image_resize=16, is_training=True), seed=3)
    it = tl.create_tuple_iterator(num_epochs=2, output_numpy=True)
    for _ in range(2):
        batches = [(x, y) for x, y in it]
        assert len(batches) == tl.steps_per_epoch == len(names) // 3
        assert all((y >= 0).all() and x.shape == (3, 3, 16, 16) for x, y in batches)
    assert tl.pop_bad_image_count() == 2 * len(bad)

    # strict mode: a UserError naming the file
    strict = create_dataset("imagenet", root=str(tmp_path), split="train", shuffle=False, strict_data=True)
    sl = create_loader(strict, 1, transform=[vision.Decode()])
    with pytest.raises(UserError, match=r"unreadable image: .*(m_empty.jpg|n_truncated.jpg|o_text.jpg|p_header.png)"):
        for _ in sl.create_tuple_iterator(num_epochs=1, output_numpy=True):
            pass


def test_jpeg_structure_check():
    arr = np.clip(np.random.default_rng(1).normal(128, 40, (32, 48, 3)), 0, 255).astype(np.uint8)
    data = _jpeg(arr)
    info = inspect_jpeg(data)
    assert (info.width, info.height, info.components, info.sof) == (48, 32, 3, 0xC0)
    assert prepare_encoded(data) is data  # fast path: the original bytes
    with pytest.raises(BadImage, match="truncated"):
        inspect_jpeg(data[:-200])
    # A bogus marker inside the image data is refused by the check; Pillow cannot read it either.
    sos = data.index(b"\xff\xda")
    broken = data[:sos + 40] + b"\xff\xf7\x00\x10" + data[sos + 40:]
    with pytest.raises(BadImage):
        inspect_jpeg(broken)
    # EXIF orientation goes to the careful path (an RGB PPM comes back)
    assert prepare_encoded(_exif_jpeg(arr, 3))[:2] == b"P6"


def _huge_grey16_png(path, width, height):
    """A width x height 16-bit grey PNG of zeros, compressed row by row: a few hundred KB on disk
    and little memory to write, but 2 bytes per pixel once decoded."""
    import struct
    import zlib

    def chunk(tag, payload):
        return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))

    row = bytes(1 + 2 * width)  # filter byte 0, then the samples
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0))
                 + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return str(path)


_PEAK_MEMORY_SCRIPT = """
import json, resource, sys
from mindcv_res2net.data import decode
data = open(sys.argv[1], "rb").read()
outcomes = []
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for call in (lambda: decode.prepare_encoded(data), lambda: decode.decode_with_pil(data, mode="L")):
    try:
        call()
        outcomes.append("decoded")
    except decode.BadImage as exc:
        outcomes.append(str(exc))
peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({"outcomes": outcomes, "peak_kb": peak_kb}))
"""


def test_huge_non_jpeg_is_refused_before_decoding(tmp_path):
    """A 280 KB 16-bit 12000 x 12000 PNG (144 MP) used to be decoded in full before its reduction:
    about 1 GB of memory and 4-5 s. It is refused from its header now (a PNG cannot be decoded at
    a reduced size), with a reason naming the size and the fix."""
    import json

    path = _huge_grey16_png(tmp_path / "huge.png", 12000, 12000)
    assert os.path.getsize(path) < 1_000_000
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", _PEAK_MEMORY_SCRIPT, path], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for outcome in result["outcomes"]:  # RGB (ImageNet) and grey (MNIST) reading alike
        assert "12000x12000" in outcome and "40 MP" in outcome and "Downscale" in outcome, outcome
    assert result["peak_kb"] < 64 * 1024, result  # a decode needs >= 288 MB (measured before: +990 MB)


def test_huge_non_jpeg_in_a_data_set_names_the_file(tmp_path):
    (tmp_path / "train" / "c0").mkdir(parents=True)
    big = _huge_grey16_png(tmp_path / "train" / "c0" / "huge.png", 7000, 7000)  # 49 MP
    _write(str(tmp_path / "train" / "c1" / "small.png"), _png(Image.new("RGB", (16, 16), (1, 2, 3))))
    ds = create_dataset("imagefolder", root=str(tmp_path), split="train", shuffle=False, strict_data=True,
                        num_parallel_workers=1)
    loader = create_loader(ds, batch_size=2, num_parallel_workers=1, image_resize=16)
    with pytest.raises(UserError) as info:
        for _ in loader.create_tuple_iterator(num_epochs=1, output_numpy=True):
            pass
    assert big in str(info.value) and "7000x7000" in str(info.value)


def test_large_non_jpeg_under_the_limit_is_still_reduced():
    arr = np.random.default_rng(3).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    out = prepare_encoded(_png(Image.fromarray(arr)), large_pixels=64 * 64)
    reduced = Image.open(io.BytesIO(out))
    assert out[:2] == b"P6" and reduced.width * reduced.height <= 64 * 64 and reduced.width > reduced.height


def test_measure_pipeline_throughput_smoke(tmp_path):
    from mindcv_res2net.data import make_synthetic_jpegs

    make_synthetic_jpegs(str(tmp_path), n_images=8, size=(64, 48))
    res = measure_pipeline_throughput(str(tmp_path), num_workers=1, n_images=16, image_size=32, batch_size=4)
    assert res["n_images"] >= 16 and res["images_per_sec"] > 0


def test_randaugment_ops_all_magnitudes_and_seeded():
    import random

    from mindcv_res2net.data.randaugment import _OPS, RandAugment, parse_randaug

    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8))
    ctx = {"rng": random.Random(0), "fill": (124, 116, 104), "resample": lambda: Image.BILINEAR}
    for name, op in _OPS.items():
        for m in (0, 2.5, 5, 9, 10):
            out = op(img, m, ctx)
            assert out.size == img.size and out.mode == "RGB", (name, m)
    assert not np.asarray(_OPS["PosterizeIncreasing"](img, 10, ctx)).any()  # 0 bits kept: black
    cfg = parse_randaug("randaug-m9-n3-mstd0.5-inc1")
    assert (cfg["magnitude"], cfg["num_ops"], cfg["mstd"], cfg["increasing"]) == (9.0, 3, 0.5, True)
    ra = RandAugment("randaug-m9-mstd0.5-inc1", seed=5)
    first = [ra(np.asarray(img)) for _ in range(10)]
    ra.set_seed(5)
    assert all(np.array_equal(a, ra(np.asarray(img))) for a in first)
    with pytest.raises(UserError, match="mzz"):
        parse_randaug("randaug-mzz")


def test_augmix_policy_parsing():
    from mindcv_res2net.data.augmix import parse_augmix

    cfg = parse_augmix("augmix-m5-w4-d2-a0.5-mstd0.5-b1")
    assert (cfg["magnitude"], cfg["width"], cfg["depth"], cfg["alpha"], cfg["mstd"], cfg["blended"]) == \
        (5.0, 4, 2, 0.5, 0.5, True)
    cfg = parse_augmix("augmix-m3-w3-d-1")  # timm's spelling of the random depth
    assert (cfg["depth"], cfg["mstd"], cfg["blended"]) == (-1, float("inf"), False)
    assert parse_augmix("augmix")["width"] == 3
    for bad in ("augmix-w0", "augmix-a0", "augmix-q3", "augmix-mx"):
        with pytest.raises(UserError):
            parse_augmix(bad)


def test_sequential_blend_weights_give_the_mixture_coefficients():
    from mindcv_res2net.data.augmix import sequential_blend_weights

    rng = np.random.default_rng(0)
    for k in (1, 2, 3, 5):
        coeffs = rng.dirichlet([1.0] * k) * rng.uniform(0, 1)
        alphas = sequential_blend_weights(list(coeffs))
        # run the blends symbolically: the coefficient vector of (image, y_1 .. y_k)
        vec = np.zeros(k + 1)
        vec[0] = 1.0
        for i, a in enumerate(alphas):
            vec *= 1.0 - a
            vec[i + 1] += a
        np.testing.assert_allclose(vec[1:], coeffs, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(vec[0], 1.0 - coeffs.sum(), atol=1e-12)


def _brighten_by_40(img, m, ctx):
    return img.point(lambda v: min(255, v + 40))


def test_augmix_mixes_chains_and_blends_with_the_original(monkeypatch):
    """With one op that adds 40 to every pixel, every chain of depth 1 is image + 40, so the
    output is image + 40 * m with m ~ Beta(alpha, alpha): constant over the image, mean 20."""
    import mindcv_res2net.data.augmix as augmix

    monkeypatch.setitem(augmix._OPS, "Add40", _brighten_by_40)
    img = np.random.default_rng(1).integers(0, 200, (12, 10, 3), dtype=np.uint8)  # no clipping at 255
    shifts = []
    for blended in (0, 1):
        op = augmix.AugMix(f"augmix-m3-w3-d1-b{blended}", seed=3)
        op.ops = ["Add40"]
        for _ in range(200):
            delta = op(img).astype(int) - img
            assert delta.max() - delta.min() <= 2 and 0 <= delta.min() and delta.max() <= 40
            shifts.append(delta.mean())
    shifts = np.array(shifts)
    assert 17 < shifts[:200].mean() < 23 and 17 < shifts[200:].mean() < 23  # E[40 m] = 20 for Beta(1, 1)
    assert shifts.std() > 8  # m is drawn per image (uniform: std 40 / sqrt(12) = 11.5)


def test_augmix_blended_equals_mixed_up_to_rounding():
    """The same random draws, mixed at once or blended in turn, give the same image within the
    uint8 rounding of the blends (up to 1 per blend, 3 chains)."""
    from mindcv_res2net.data.augmix import AugMix

    img = np.random.default_rng(2).integers(0, 256, (24, 20, 3), dtype=np.uint8)
    mixed, blended = AugMix("augmix-m5-w3-d2", seed=11), AugMix("augmix-m5-w3-d2-b1", seed=11)
    differences = []
    for _ in range(20):
        a, b = mixed(img).astype(int), blended(img).astype(int)
        differences.append(np.abs(a - b).max())
    assert max(differences) <= 4
    assert any(not np.array_equal(mixed(img), img) for _ in range(5))  # it does change images
    again = AugMix("augmix-m5-w3-d2", seed=11)
    first = AugMix("augmix-m5-w3-d2", seed=11)
    assert all(np.array_equal(first(img), again(img)) for _ in range(5))  # seeded
