"""A user's console shows our lines, not the framework's noise: train.py (the README's demo recipe),
validate.py and predict.py print no MindSpore deprecation warning (the device is set with
``mindspore.set_device``; nn.Adam's constructor notice about a sparse kernel it never runs is
dropped), and the checkpoint summary ("loaded N parameters from ...") appears once. Runs the
scripts as subprocesses (~6 s each; the training ~30 s)."""
import os

import pytest

from tests.fault.test_bad_input import FAST, make_image_folder, run_script


@pytest.fixture(scope="module")
def data_and_ckpt(tmp_path_factory):
    import mindspore as ms

    from mindcv_res2net import create_model

    base = tmp_path_factory.mktemp("quiet")
    data = make_image_folder(base / "data")
    ckpt = str(base / "res2net50_2.ckpt")
    ms.save_checkpoint(create_model("res2net50", num_classes=2), ckpt)
    return data, ckpt


def _console(proc):
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"rc={proc.returncode}\n{text[-3000:]}"
    return text.splitlines()


def _assert_no_deprecation(lines):
    noisy = [line for line in lines if "deprecat" in line.lower()]
    assert not noisy, "\n".join(noisy)


def test_validate_logs_the_checkpoint_once_and_no_deprecation(data_and_ckpt):
    data, ckpt = data_and_ckpt
    lines = _console(run_script("validate.py", FAST + ["--model", "res2net50", "--data_dir", data,
                                                       "--ckpt_path", ckpt, "--num_classes", "2"]))
    loaded = [line for line in lines if line.startswith("loaded ")]
    assert loaded == [f"loaded 427 parameters from {ckpt}"], "\n".join(lines)
    assert any("top-1" in line for line in lines), "\n".join(lines)
    _assert_no_deprecation(lines)


def test_predict_prints_no_deprecation(data_and_ckpt):
    data, ckpt = data_and_ckpt
    lines = _console(run_script("predict.py", ["--model", "res2net50", "--ckpt_path", ckpt, "--image_size", "32",
                                               "--mode", "1", "--device_target", "CPU",
                                               f"{data}/val/cat"]))
    assert any("0.png" in line for line in lines), "\n".join(lines)
    _assert_no_deprecation(lines)


def test_demo_training_prints_no_deprecation(data_and_ckpt, tmp_path):
    """The demo's recipe (graph mode, Adam) on a few images: MindSpore 2.8's "'FusedSparseAdam' is
    deprecated" line came from building nn.Adam."""
    data, _ckpt = data_and_ckpt
    demo = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "res2net",
                        "res2net_fashion_mnist_cpu.yaml")
    lines = _console(run_script("train.py", ["-c", demo, "--data_dir", data, "--ckpt_save_dir", tmp_path / "ckpt",
                                             "--epoch_size", "1", "--warmup_epochs", "0", "--decay_epochs", "1",
                                             "--num_samples", "4", "--batch_size", "2", "--val_while_train", "false",
                                             "--num_parallel_workers", "1"], timeout=300))
    assert any(line.startswith("saved ") for line in lines), "\n".join(lines)
    _assert_no_deprecation(lines)


def test_pynative_training_prints_no_deprecation(data_and_ckpt, tmp_path):
    """Training in PyNative mode (mode 1): the single-process gradient reducer was ``ops.identity``,
    whose deprecation MindSpore 2.8 logs on every PyNative step."""
    data, _ckpt = data_and_ckpt
    lines = _console(run_script("train.py", FAST + ["--model", "res2net50", "--data_dir", data, "--warmup_epochs",
                                                    "0", "--ckpt_save_dir", tmp_path / "ckpt",
                                                    "--val_while_train", "false"], timeout=300))
    assert any(line.startswith("saved ") for line in lines), "\n".join(lines)
    _assert_no_deprecation(lines)
