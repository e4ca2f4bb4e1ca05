"""A user's console shows our lines, not the framework's noise: validate.py and predict.py print no
MindSpore deprecation warning (the device is set with ``mindspore.set_device``), and the checkpoint
summary ("loaded N parameters from ...") appears once. Runs the scripts as subprocesses (~6 s each)."""
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
