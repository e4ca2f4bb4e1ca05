"""Validation labels follow the training classes (issue 12, item 3).

The val split used to take its labels from its own sorted folder list: a class folder missing
from val (or an extra one) shifted every later label and corrupted top-1 without an error. Now
``build_val(args, dist, class_names=...)`` maps the val folders through the training classes
(``train.py`` passes the training split's names, ``validate.py`` the checkpoint's stored
``class_names``): an unknown folder is a ``UserError`` naming it, a missing class a warning.
"""
import json
import os
import subprocess
import sys
import types
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from mindcv_res2net.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN_CLASSES = ["ant", "bee", "cat", "dog", "emu"]


def _folder(root, split, counts, size=32):
    """``root/split/<class>/<i>.png`` with ``counts[class]`` small images per class."""
    rng = np.random.default_rng(0)
    for name, n in counts.items():
        d = os.path.join(root, split, name)
        os.makedirs(d, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(os.path.join(d, f"{i}.png"))
    return str(root)


def _args(data_dir):
    import config

    return config.parse_args(["--data_dir", data_dir, "--image_resize", "32", "--batch_size", "4",
                              "--num_parallel_workers", "1"], script="validate")


_SINGLE = types.SimpleNamespace(world_size=1, rank=0)


def _loader_labels(split):
    it = split.loader.create_tuple_iterator(num_epochs=1, output_numpy=True)
    return [int(v) for _images, labels in it for v in labels.reshape(-1)]


def test_val_with_missing_classes_keeps_training_labels(tmp_path, dataset_warnings):
    from mindcv_res2net.training import data_setup

    # "bee" and "dog" have no val folder: with labels from the val folders alone, cat/emu would
    # become 1/2 instead of 2/4
    counts = {"ant": 2, "cat": 1, "emu": 2}
    data = _folder(tmp_path, "val", counts)
    by_hand = [TRAIN_CLASSES.index(name) for name in sorted(counts) for _ in range(counts[name])]
    assert by_hand == [0, 0, 2, 4, 4]

    val = data_setup.build_val(_args(data), _SINGLE, class_names=TRAIN_CLASSES)
    assert val.class_names == TRAIN_CLASSES
    assert _loader_labels(val) == by_hand
    missing = [m for m in dataset_warnings if "training classes" in m]
    assert len(missing) == 1, dataset_warnings
    assert "bee" in missing[0] and "dog" in missing[0] and "2 of the 5" in missing[0]
    assert "ant" not in missing[0].split(":")[-1]

    data_setup.build_val(_args(data), _SINGLE, class_names=TRAIN_CLASSES)  # again: no second warning
    assert len([m for m in dataset_warnings if "training classes" in m]) == 1


def test_val_in_another_order_follows_the_training_order(tmp_path):
    from mindcv_res2net.data import create_dataset

    data = _folder(tmp_path, "val", {"ant": 1, "bee": 1, "cat": 1})
    trained = ["cat", "ant", "bee"]  # e.g. a --class_list order at training time
    ds = create_dataset("imagefolder", root=data, split="val", shuffle=False, num_parallel_workers=1,
                        class_names=trained)
    assert ds.class_names == trained
    assert ds.dataset_info.source.labels.tolist() == [1, 2, 0]  # ant, bee, cat in file order


def test_extra_val_folder_is_a_user_error_naming_it(tmp_path):
    from mindcv_res2net.training import data_setup

    data = _folder(tmp_path, "val", {"ant": 1, "bee": 1, "fox": 1})
    with pytest.raises(UserError) as info:
        data_setup.build_val(_args(data), _SINGLE, class_names=TRAIN_CLASSES)
    message = str(info.value)
    assert os.path.join(data, "val", "fox") in message
    assert "remove or rename" in message


def test_class_list_that_contradicts_the_training_classes_is_refused(tmp_path):
    from mindcv_res2net.data import create_dataset

    data = _folder(tmp_path, "val", {"ant": 1, "bee": 1})
    with pytest.raises(UserError, match="class_list"):
        create_dataset("imagefolder", root=data, split="val", shuffle=False, num_parallel_workers=1,
                       class_list=["bee", "ant"], class_names=["ant", "bee"])


# ----------------------------------------------------------------------------- validate.py end to end

def _run_validate(data, ckpt, result):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("MINDCV_RES2NET_DEBUG", None)
    cmd = [sys.executable, os.path.join(ROOT, "validate.py"), "--device_target", "CPU", "--mode", "1",
           "--model", "res2net50", "--data_dir", data, "--ckpt_path", ckpt, "--image_resize", "32",
           "--batch_size", "4", "--num_parallel_workers", "1", "--json", result]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_validate_scores_with_the_checkpoint_class_names(tmp_path):
    """A checkpoint that always predicts "dog" (zero classifier weights, bias on dog's index) and a
    val split without a "cat" folder: 2 of the 3 images are dogs, so top-1 is 2/3. Labelled by
    the val folders (dog=0, emu=1) it came out 1/3."""
    import mindspore as ms

    from mindcv_res2net.weights.checkpoint_file import save_checkpoint_atomic
    from mindcv_res2net.models.factory import create_model

    classes = ["cat", "dog", "emu"]
    net = create_model("res2net50", num_classes=3)
    net.classifier.weight.set_data(ms.Tensor(np.zeros(net.classifier.weight.shape, np.float32)))
    net.classifier.bias.set_data(ms.Tensor(np.array([0.0, 5.0, 0.0], np.float32)))
    ckpt = str(tmp_path / "dog_always.ckpt")
    save_checkpoint_atomic(net, ckpt, extra={"model": "res2net50", "num_classes": 3, "class_names": classes})

    good = _folder(tmp_path / "good", "val", {"dog": 2, "emu": 1})
    extra = _folder(tmp_path / "extra", "val", {"dog": 1, "emu": 1, "fox": 1})
    with ThreadPoolExecutor(max_workers=2) as pool:
        good_run = pool.submit(_run_validate, good, ckpt, str(tmp_path / "good.json"))
        extra_run = pool.submit(_run_validate, extra, ckpt, str(tmp_path / "extra.json"))
        good_proc, extra_proc = good_run.result(), extra_run.result()

    assert good_proc.returncode == 0, good_proc.stderr[-3000:]
    result = json.loads((tmp_path / "good.json").read_text())
    assert result["num_samples"] == 3
    assert result["top1"] == pytest.approx(2 / 3)
    output = good_proc.stdout + good_proc.stderr
    assert "no folder for 1 of the 3 training classes: cat" in output, output[-3000:]

    assert extra_proc.returncode == 2, extra_proc.stdout[-2000:] + extra_proc.stderr[-2000:]
    assert "Traceback" not in extra_proc.stderr
    errors = [line for line in extra_proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and os.path.join(extra, "val", "fox") in errors[0], extra_proc.stderr[-2000:]
    assert not (tmp_path / "extra.json").exists()
