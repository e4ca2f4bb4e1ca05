"""A command reads its checkpoint file once: predict.py, export.py and validate.py open it as one
``CheckpointFile`` (arrays, metadata, class names, preprocessing) and pass that object down, where
they used to read the file for its metadata, its class names and its weights, 3-4 times."""
import os
import sys
import types

import mindspore as ms
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import config  # noqa: E402
import export as export_script  # noqa: E402
import predict as predict_script  # noqa: E402
from mindcv_res2net import create_model  # noqa: E402
from mindcv_res2net.evaluation import validation  # noqa: E402
from mindcv_res2net.weights.checkpoint_file import CheckpointFile, open_checkpoint, read_checkpoint_meta  # noqa: E402
from mindcv_res2net.weights.checkpoint_file import save_checkpoint_atomic  # noqa: E402
from fault.test_bad_input import make_image_folder  # noqa: E402

CLASSES = ["cat", "dog", "eel"]
KEYS = {"dataset": "imagenet", "image_resize": 32, "crop_pct": 1.0, "interpolation": "bilinear",
        "mean": [120.0, 110.0, 100.0], "std": [60.0, 61.0, 62.0], "in_channels": 3}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A train.py-style checkpoint (model name, classes, preprocessing) and an image folder."""
    root = tmp_path_factory.mktemp("once")
    data = make_image_folder(str(root / "data"), classes=CLASSES, per_class=2, size=40)
    ckpt = str(root / "trained.ckpt")
    save_checkpoint_atomic(create_model("res2net50", num_classes=3), ckpt,
                           extra={"model": "res2net50", "num_classes": 3, "class_names": CLASSES,
                                  "preprocessing": KEYS})
    return ckpt, data


@pytest.fixture
def reads(monkeypatch):
    """The paths MindSpore's checkpoint reader is asked for during the test."""
    seen = []
    real = ms.load_checkpoint

    def counting(path, *args, **kwargs):
        seen.append(os.path.realpath(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(ms, "load_checkpoint", counting)
    return seen


def test_the_checkpoint_object_stands_for_its_path(trained, reads):
    ckpt, _ = trained
    opened = open_checkpoint(ckpt)
    assert isinstance(opened, CheckpointFile) and os.fspath(opened) == ckpt and str(opened) == ckpt
    assert opened.class_names == CLASSES and opened.preprocessing == KEYS
    assert read_checkpoint_meta(opened)["model"] == "res2net50"
    assert len(reads) == 1
    assert open_checkpoint("weights.pth") == "weights.pth"  # PyTorch files are read by the loader


def test_predict_reads_the_checkpoint_once(trained, reads, tmp_path):
    ckpt, data = trained
    assert predict_script.main(["--ckpt_path", ckpt, os.path.join(data, "val"), "--mode", "1", "--topk", "2",
                                "--json", str(tmp_path / "p.json")]) == 0
    assert reads == [os.path.realpath(ckpt)]


def test_export_reads_the_checkpoint_once(trained, reads, tmp_path):
    ckpt, _ = trained
    assert export_script.main(["--ckpt_path", ckpt, "--file_format", "MINDIR", "--out", str(tmp_path / "m")]) == 0
    assert os.path.isfile(tmp_path / "m.mindir")
    assert reads == [os.path.realpath(ckpt)]


def test_validate_reads_the_checkpoint_once(trained, reads, monkeypatch):
    ckpt, data = trained

    def runtime(a):
        a.device_target = "CPU"
        ms.set_context(mode=ms.PYNATIVE_MODE)
        return types.SimpleNamespace(rank=0, world_size=1, launcher="none")

    monkeypatch.setattr(validation, "setup_runtime", runtime)
    args = config.parse_args(["--data_dir", data, "--ckpt_path", ckpt, "--batch_size", "2",
                              "--num_parallel_workers", "1"], script="validate")
    result = validation.validate(args)
    assert result["num_samples"] == 6
    assert reads == [os.path.realpath(ckpt)]
