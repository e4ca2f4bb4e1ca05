"""MindRecord sets (``prepare mindrecord``) read as ImageFolder reads the same images: labels, class
names, tensors (training transforms with a fixed seed and evaluation transforms), top-1, per-rank
shards, per-epoch order; damaged sets and bad commands are one clear ``UserError``."""
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import mindspore as ms
from mindspore import nn, ops

from mindcv_res2net.weights.checkpoint_file import save_checkpoint_atomic
from mindcv_res2net.data import create_dataset, create_loader, create_transforms
from mindcv_res2net.data.readers.image_folder import scan_image_folder
from mindcv_res2net.data.readers.mindrecord_writer import META_NAME, prepare_mindrecord
from mindcv_res2net.evaluation.evaluate import evaluate
from mindcv_res2net.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ("cat", "dog", "eel")


def _make_tree(root, per_class=8, splits=("train", "val"), seed=0):
    """3 classes x ``per_class`` images (32-48 px): JPEGs, PNGs and a greyscale JPEG per class."""
    rng = np.random.default_rng(seed)
    for split in splits:
        for c in CLASSES:
            d = os.path.join(root, split, c)
            os.makedirs(d, exist_ok=True)
            for i in range(per_class):
                h, w = int(rng.integers(32, 49)), int(rng.integers(32, 49))
                arr = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
                if i % 4 == 1:
                    Image.fromarray(arr).save(os.path.join(d, f"{i:02d}.png"))
                elif i % 4 == 2:
                    Image.fromarray(arr[:, :, 0]).save(os.path.join(d, f"{i:02d}.jpg"), quality=85)
                else:
                    Image.fromarray(arr).save(os.path.join(d, f"{i:02d}.jpg"), quality=90)
    return str(root)


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """(ImageFolder root, MindRecord root written with 3 shards)."""
    base = tmp_path_factory.mktemp("mr")
    src = _make_tree(base / "src")
    counts = prepare_mindrecord(src, str(base / "mr"), shards=3, log=lambda *a: None)
    assert counts == {"train": 24, "val": 24}
    return src, str(base / "mr")


def _digest(arr):
    return hashlib.sha1(np.ascontiguousarray(arr).tobytes()).hexdigest()


def _raw(dataset):
    """(digest of the image column, label) per sample, in reading order."""
    return [(_digest(img), int(lab)) for img, lab in dataset.create_tuple_iterator(num_epochs=1, output_numpy=True)]


def _batches(loader):
    return [(img, lab) for img, lab in loader.create_tuple_iterator(num_epochs=1, output_numpy=True)]


def test_prepare_writes_the_bytes_labels_and_names(sets):
    src, mr = sets
    from mindspore.mindrecord import FileReader
    for split in ("train", "val"):
        folder = os.path.join(mr, split)
        meta = json.load(open(os.path.join(folder, META_NAME), encoding="utf-8"))
        paths, labels, classes = scan_image_folder(src, split)
        assert meta["classes"] == list(classes) == list(CLASSES) and meta["num_images"] == 24
        assert [f["name"] for f in meta["files"]] == [f"data.mindrecord{k}" for k in range(3)]
        assert not [n for n in os.listdir(mr) if n.startswith(".")]  # no staging folder left
        reader = FileReader([os.path.join(folder, f["name"]) for f in meta["files"]])
        rows = {}
        for row in reader.get_next():
            rows[int(row["index"])] = row
        reader.close()
        assert sorted(rows) == list(range(24))
        for i, (path, label) in enumerate(zip(paths, labels)):
            row = rows[i]
            assert row["image"] == open(path, "rb").read()  # the encoded file, unchanged
            assert int(row["label"]) == int(label)
            assert row["file_name"] == os.path.relpath(path, os.path.join(src, split)).replace(os.sep, "/")
            assert int(row["kind"]) == (0 if path.endswith(".jpg") else 1)


@pytest.mark.parametrize("name", ["mindrecord", "imagenet"])  # imagenet: the set is found in data_dir
def test_same_tensors_and_labels_as_imagefolder(sets, name):
    src, mr = sets
    for split, training in (("train", True), ("val", False)):
        outs = []
        for dname, root in (("imagefolder", src), (name, mr)):
            data = create_dataset(dname, root=root, split=split, shuffle=training, seed=7, num_parallel_workers=1)
            assert data.class_names == list(CLASSES)
            assert data.dataset_info.num_samples == 24
            transform = create_transforms("imagenet", image_resize=32, is_training=training, auto_augment=None)
            loader = create_loader(data, 4, drop_remainder=training, is_training=training, transform=transform,
                                   num_parallel_workers=1, seed=11)
            assert loader.steps_per_epoch == loader.get_dataset_size() == 6
            outs.append(_batches(loader))
        assert data.dataset_info.name == "mindrecord"
        for (img_a, lab_a), (img_b, lab_b) in zip(*outs):
            np.testing.assert_array_equal(lab_a, lab_b)
            np.testing.assert_array_equal(img_a, img_b)
        assert len(outs[0]) == len(outs[1]) == 6


def test_two_ranks_give_the_same_disjoint_complete_shards(sets):
    src, mr = sets
    for shuffle in (True, False):
        per_rank = {}
        for dname, root in (("imagefolder", src), ("mindrecord", mr)):
            per_rank[dname] = [_raw(create_dataset(dname, root=root, split="train", shuffle=shuffle, seed=5,
                                                   num_shards=2, shard_id=r, start_epoch=3)) for r in (0, 1)]
        assert per_rank["imagefolder"] == per_rank["mindrecord"]
        a, b = ({d for d, _ in rank} for rank in per_rank["mindrecord"])
        assert not a & b and len(a) == len(b) == 12
        assert len(a | b) == 24  # 24 images over 2 ranks: every image once


def test_epoch_order_matches_imagefolder_with_start_epoch_and_set_epoch(sets):
    src, mr = sets
    ref = create_dataset("imagefolder", root=src, split="train", shuffle=True, seed=2)
    ref_orders = [_raw(ref) for _ in range(3)]  # ImageFolder moves on one epoch per pass
    assert ref_orders[0] != ref_orders[1] != ref_orders[2]
    for epoch in range(3):
        data = create_dataset("mindrecord", root=mr, split="train", shuffle=True, seed=2, start_epoch=epoch)
        assert _raw(data) == ref_orders[epoch]
    data = create_dataset("mindrecord", root=mr, split="train", shuffle=True, seed=2)
    data.set_epoch(2)
    assert _raw(data) == ref_orders[2]
    data.set_epoch(1)
    assert _raw(data) == ref_orders[1]
    sub = create_dataset("mindrecord", root=mr, split="train", shuffle=True, seed=2, num_samples=10, start_epoch=1)
    ref_sub = create_dataset("imagefolder", root=src, split="train", shuffle=True, seed=2, num_samples=10,
                             start_epoch=1)
    assert _raw(sub) == _raw(ref_sub) and sub.get_dataset_size() == 10


class _TinyNet(nn.Cell):
    """Mean colour of the image -> 3 logits (fixed weights): top-1 depends on every pixel."""

    def __init__(self):
        super().__init__()
        self.w = ms.Tensor(np.array([[3.0, -1.0, 0.5], [-2.0, 2.5, 0.0], [0.5, -1.5, 2.0]], np.float32))

    def construct(self, x):
        return ops.matmul(x.mean(axis=(2, 3)), self.w)


def test_same_top1_through_evaluate(sets):
    src, mr = sets
    results, pixels = [], []
    for dname, root in (("imagefolder", src), ("mindrecord", mr)):
        data = create_dataset(dname, root=root, split="val", shuffle=False)
        transform = create_transforms("imagenet", image_resize=32, is_training=False)
        loader = create_loader(data, 5, transform=transform, num_parallel_workers=1)
        results.append(evaluate(_TinyNet(), loader))
        pixels.append(_batches(loader))
    assert results[0]["num_samples"] == results[1]["num_samples"] == 24
    assert results[0]["top1"] == results[1]["top1"]
    # the figure itself, recomputed in numpy from the ImageFolder tensors
    w = _TinyNet().w.asnumpy()
    correct = sum(int(((img.mean(axis=(2, 3)) @ w).argmax(1) == lab).sum()) for img, lab in pixels[0])
    assert results[1]["top1"] == pytest.approx(correct / 24)


def _copy_set(sets, tmp_path):
    import shutil
    dst = tmp_path / "copy"
    shutil.copytree(sets[1], dst)
    return str(dst)


@pytest.mark.parametrize("damage", ["truncate", "remove_db", "remove_shard"])
def test_damaged_shard_is_one_clear_error(sets, tmp_path, damage):
    mr = _copy_set(sets, tmp_path)
    shard = os.path.join(mr, "train", "data.mindrecord1")
    if damage == "truncate":
        size = os.path.getsize(shard)
        with open(shard, "r+b") as fh:
            fh.truncate(size // 2)
        target = shard
    elif damage == "remove_db":
        target = shard + ".db"
        os.remove(target)
    else:
        target = shard
        os.remove(target)
    for name in ("mindrecord", "imagenet"):
        with pytest.raises(UserError) as err:
            create_dataset(name, root=mr, split="train")
        assert target in str(err.value) and "--overwrite" in str(err.value) and "prepare mindrecord" in str(err.value)
    create_dataset("mindrecord", root=mr, split="val")  # the other split is intact


def test_prepare_refuses_bad_commands(sets, tmp_path):
    src, mr = sets
    with pytest.raises(UserError, match="--overwrite"):
        prepare_mindrecord(src, mr, log=lambda *a: None)
    with pytest.raises(UserError, match="--src not found"):
        prepare_mindrecord(str(tmp_path / "nowhere"), str(tmp_path / "o"), log=lambda *a: None)
    os.makedirs(tmp_path / "empty" / "train" / "cat")
    with pytest.raises(UserError, match="no images found"):
        prepare_mindrecord(str(tmp_path / "empty"), str(tmp_path / "o2"), log=lambda *a: None)
    assert not os.path.exists(tmp_path / "o2" / "train")
    assert not [n for n in os.listdir(tmp_path / "o2") if n.startswith(".")]  # no staging folder left
    with pytest.raises(UserError, match="no MindRecord set"):
        create_dataset("mindrecord", root=src, split="train")
    # --overwrite replaces the set: here with a different class list and one shard
    out = _copy_set(sets, tmp_path)
    prepare_mindrecord(src, out, shards=1, overwrite=True, splits=["val"], log=lambda *a: None)
    meta = json.load(open(os.path.join(out, "val", META_NAME), encoding="utf-8"))
    assert len(meta["files"]) == 1
    assert _raw(create_dataset("mindrecord", root=out, split="val", shuffle=False)) == \
        _raw(create_dataset("imagefolder", root=src, split="val", shuffle=False))


def test_unreadable_images_follow_imagefolder_policy(tmp_path):
    src = _make_tree(tmp_path / "src", per_class=4, splits=("train",))
    bad = os.path.join(src, "train", "dog", "00.jpg")
    open(bad, "wb").close()  # zero bytes
    prepare_mindrecord(src, str(tmp_path / "mr"), shards=2, log=lambda *a: None)
    mr = str(tmp_path / "mr")
    for shuffle in (True, False):  # training: the next readable file; evaluation: placeholder, label -1
        ref = create_dataset("imagefolder", root=src, split="train", shuffle=shuffle, seed=1)
        got = create_dataset("mindrecord", root=mr, split="train", shuffle=shuffle, seed=1)
        assert _raw(got) == _raw(ref)
        assert got.dataset_info.bad_images.total == ref.dataset_info.bad_images.total == 1
    assert -1 in [lab for _, lab in _raw(create_dataset("mindrecord", root=mr, split="train", shuffle=False))]
    with pytest.raises(UserError, match="dog/00.jpg"):
        create_dataset("mindrecord", root=mr, split="train", strict_data=True)


def _run(args, timeout=240):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), GLOG_v="3")
    env.pop("MINDCV_RES2NET_DEBUG", None)
    return subprocess.run([sys.executable] + [str(a) for a in args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_prepare_command_line(sets, tmp_path):
    src, mr = sets
    proc = _run(["-m", "mindcv_res2net.data.prepare", "mindrecord", "--src", src, "--out", tmp_path / "o",
                 "--shards", "2"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "wrote 24 train images" in proc.stdout and "wrote 24 val images" in proc.stdout
    proc = _run(["-m", "mindcv_res2net.data.prepare", "mindrecord", "--src", src, "--out", tmp_path / "o"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "already exists" in proc.stderr and "--overwrite" in proc.stderr


@pytest.mark.slow
def test_validate_script_gives_the_same_top1(sets, tmp_path):
    from mindcv_res2net.models.factory import create_model
    src, mr = sets
    net = create_model("res2net50", num_classes=3)
    ckpt = str(tmp_path / "m.ckpt")
    save_checkpoint_atomic({p.name: p.asnumpy() for p in net.get_parameters()}, ckpt,
                           extra={"class_names": list(CLASSES), "num_classes": 3})
    top1 = {}
    for key, args in (("folder", ["--data_dir", src]), ("mindrecord", ["--data_dir", mr, "--dataset", "mindrecord"])):
        out = tmp_path / f"{key}.json"
        proc = _run(["validate.py", *args, "--model", "res2net50", "--num_classes", "3", "--ckpt_path", ckpt,
                     "--image_resize", "32", "--batch_size", "8", "--device_target", "CPU", "--mode", "1",
                     "--num_parallel_workers", "1", "--json", out], timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        top1[key] = json.load(open(out, encoding="utf-8"))
    assert top1["folder"] == {**top1["mindrecord"], **{k: v for k, v in top1["folder"].items()
                                                      if k not in ("top1", "top5", "loss", "num_samples")}}
