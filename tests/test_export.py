"""Export of the inference-optimised network: MINDIR (mindspore.load + GraphCell) and ONNX
(onnxruntime) give the MindSpore model's outputs; export.py writes atomically and reports user
errors in one line with exit status 2."""
import os
import subprocess
import sys

import numpy as np
import pytest

import mindspore as ms
from mindspore import nn

from mindcv_res2net.errors import UserError
from mindcv_res2net.models.inference import optimize_for_inference
from mindcv_res2net.models.factory import create_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from mindcv_res2net.deploy import runtimes as export_script  # noqa: E402  (what export.py writes with)
from helpers import randomize_bn, rel_diff  # noqa: E402

RTOL = 1e-4
MODELS = ["res2net50", "res2net50_v1b", "res2next50", "res2net_dla60"]


@pytest.fixture(scope="module")
def models():
    cache = {}

    def get(name):
        if name not in cache:
            ms.set_context(mode=ms.PYNATIVE_MODE)
            net = randomize_bn(create_model(name, num_classes=10))
            net.set_train(False)
            x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
            cache[name] = (optimize_for_inference(net), x, net(ms.Tensor(x)).asnumpy())
        return cache[name]
    return get


@pytest.mark.parametrize("name", MODELS)
def test_mindir_load_graphcell(name, models, tmp_path):
    fused, x, ref = models(name)
    folder = tmp_path / "with space"  # not a name mindspore.export accepts: staged elsewhere, copied
    path = export_script.export_network(fused, (ms.Tensor(x),), str(folder / f"{name}.mindir"), "MINDIR")
    assert os.path.isfile(path) and sorted(os.listdir(folder)) == [f"{name}.mindir"]
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        got = nn.GraphCell(ms.load(path))(ms.Tensor(x)).asnumpy()
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    assert got.shape == ref.shape
    assert rel_diff(ref, got) < RTOL


@pytest.mark.parametrize("name", MODELS)
def test_onnx_onnxruntime(name, models, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    fused, x, ref = models(name)
    path = export_script.export_network(fused, (ms.Tensor(x),), str(tmp_path / f"{name}.onnx"), "ONNX",
                                        input_names=["input"], output_names=["logits"])
    assert sorted(os.listdir(tmp_path)) == [f"{name}.onnx"]
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input"]
    got = sess.run(["logits"], {"input": x})[0]
    assert got.shape == ref.shape
    assert rel_diff(ref, got) < RTOL


def test_failed_export_leaves_nothing_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "model.mindir"
    target.write_bytes(b"previous export")

    def failing_export(net, *inputs, file_name, file_format, **kwargs):
        with open(file_name + ".mindir", "wb") as fh:  # a partial file, then the failure
            fh.write(b"partial")
        raise RuntimeError("simulated failure in the middle of the export")

    monkeypatch.setattr(ms, "export", failing_export)
    with pytest.raises(RuntimeError, match="simulated"):
        export_script.export_network(nn.ReLU(), (ms.Tensor(np.ones((1, 3, 4, 4), np.float32)),), str(target),
                                     "MINDIR")
    assert os.listdir(tmp_path) == ["model.mindir"]
    assert target.read_bytes() == b"previous export"


def test_output_path():
    assert export_script.output_path("a/b", "m", "MINDIR").endswith(os.path.join("a", "b.mindir"))
    assert export_script.output_path("x.onnx", "m", "ONNX").endswith("x.onnx")
    assert export_script.output_path(None, "res2net50", "AIR").endswith("res2net50.air")
    with pytest.raises(UserError):
        export_script.output_path(ROOT, "m", "MINDIR")


def run_script(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("MINDCV_RES2NET_DEBUG", None)
    return subprocess.run([sys.executable, os.path.join(ROOT, "export.py"), *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


def error_lines(proc):
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


def test_cli_exports_checkpoint_atomically(tmp_path):
    from mindcv_res2net.weights.checkpoint_file import save_checkpoint_atomic

    net = randomize_bn(create_model("res2net_dla60", num_classes=4))
    net.set_train(False)
    ckpt = str(tmp_path / "dla.ckpt")
    save_checkpoint_atomic(net, ckpt)
    out_dir = tmp_path / "out"
    proc = run_script("--model", "res2net_dla60", "--ckpt_path", ckpt, "--image_size", "32", "--batch_size", "2",
                      "--file_format", "onnx", "--dynamic_batch", "--out", str(out_dir / "dla"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(os.listdir(out_dir)) == ["dla.onnx"]  # suffix added, no temporary left
    assert "exported res2net_dla60" in proc.stdout
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(out_dir / "dla.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(5).standard_normal((3, 3, 32, 32)).astype(np.float32)  # another batch size
    got = sess.run(None, {"input": x})[0]
    ref = net(ms.Tensor(x)).asnumpy()
    assert got.shape == (3, 4)
    assert rel_diff(ref, got) < RTOL


@pytest.mark.parametrize("args,message", [
    (["--model", "res2net_dla60", "--image_size", "40"], "divisible by 32"),
    (["--model", "res2net50", "--file_format", "AIR"], "Ascend"),
    (["--model", "res2net5O"], "unknown model"),
    (["--model", "res2net50", "--file_format", "PB"], "invalid choice"),
])
def test_cli_user_errors(args, message, tmp_path):
    proc = run_script(*args, "--out", str(tmp_path / "m"))
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    lines = error_lines(proc)
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert os.listdir(tmp_path) == []
