"""PyTorch -> MindSpore conversion: logits of every variant with published PyTorch weights equal
those of an independent torch.nn.functional reference (tests/torch_reference.py) on random
weights and random BN statistics, plus the converter's file handling and error messages.

The worst relative difference per variant, max|diff| / max|logit|, is printed after this module's
tests and written to $MINDCV_RES2NET_PARITY_REPORT (JSON) when that is set.
"""
import json
import logging
import os
import sys

import mindspore as ms
import numpy as np
import pytest

from mindcv_res2net import UserError, create_model
from mindcv_res2net.weights.checkpoint_file import read_checkpoint_meta
from mindcv_res2net.weights.model_loading import load_model_weights
from mindcv_res2net.cli.convert_args import main
from mindcv_res2net.weights.torch_conversion import convert_file, convert_state_dict, guess_model_name, read_state_dict_file

from helpers import rel_diff

TOL = 1e-4


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


@pytest.fixture(scope="module")
def R(torch):
    import torch_reference
    return torch_reference


# variant, input size, batch, DLA layout
PARITY_CASES = [
    pytest.param("res2net50", 113, 2, None, id="res2net50-113px"),
    pytest.param("res2net50", 64, 1, None, id="res2net50-64px"),
    pytest.param("res2net101", 64, 1, None, id="res2net101-64px", marks=pytest.mark.slow),
    pytest.param("res2net50_26w_6s", 64, 1, None, id="res2net50_26w_6s-64px"),
    pytest.param("res2net50_26w_8s", 64, 1, None, id="res2net50_26w_8s-64px"),
    pytest.param("res2net50_48w_2s", 64, 1, None, id="res2net50_48w_2s-64px"),
    pytest.param("res2net50_14w_8s", 64, 1, None, id="res2net50_14w_8s-64px"),
    pytest.param("res2next50", 64, 1, None, id="res2next50-64px"),
    pytest.param("res2net50_v1b", 113, 2, None, id="res2net50_v1b-113px"),
    pytest.param("res2net50_v1b", 64, 1, None, id="res2net50_v1b-64px"),
    pytest.param("res2net101_v1b", 64, 1, None, id="res2net101_v1b-64px", marks=pytest.mark.slow),
    pytest.param("res2net_dla60", 64, 1, "official", id="res2net_dla60-official-64px"),
    pytest.param("res2next_dla60", 64, 1, "timm", id="res2next_dla60-timm-64px"),
]

_RESULTS = {}


@pytest.fixture(scope="module", autouse=True)
def parity_report(request):
    yield
    if not _RESULTS:
        return
    lines = ["worst relative logit difference max|diff|/max|logit| (MindSpore vs torch reference):"]
    for key in sorted(_RESULTS):
        lines.append(f"  {key:<34s} {_RESULTS[key]:.2e}")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    for line in lines:
        if reporter is not None:
            reporter.write_line(line)
        else:  # pragma: no cover
            print(line, file=sys.stderr)
    out = os.environ.get("MINDCV_RES2NET_PARITY_REPORT")
    if out:
        with open(out, "w") as f:
            json.dump(_RESULTS, f, indent=1, sort_keys=True)


@pytest.mark.torch
@pytest.mark.parametrize("name,size,batch,layout", PARITY_CASES)
def test_logits_match_torch_reference(name, size, batch, layout, R, torch, request):
    sd = R.make_state_dict(name, num_classes=1000, seed=11, layout=layout or "official")
    x = np.random.default_rng(size).standard_normal((batch, 3, size, size), dtype=np.float32)
    ref = R.forward(name, sd, x).numpy()

    net = create_model(name)
    net.set_train(False)
    notes = []
    weights = convert_state_dict(sd, name, net=net, notes=notes)
    report = load_model_weights(net, weights)
    assert len(report.loaded) == len(net.parameters_dict())
    if layout == "official":
        assert any("'project' layers" in n for n in notes)  # the unused ones, dropped
    out = net(ms.Tensor(x)).asnumpy()
    rel = rel_diff(ref, out)
    _RESULTS[request.node.callspec.id] = rel
    assert out.shape == ref.shape == (batch, 1000)
    assert rel < TOL, f"{name} at {size}px: max|diff|/max|logit| = {rel:.3g}"


# ------------------------------------------------------------------------------------------------
# layouts: the reference agrees with the published key lists, converter output = model names
# ------------------------------------------------------------------------------------------------

KEYS_DIR = os.environ.get("RES2NET_KEYS_DIR",
                          os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "res2net_keys"))


def _tsv(name):
    path = os.path.join(KEYS_DIR, f"{name}.tsv")
    if not os.path.exists(path):
        pytest.skip(f"{path} not available")
    rows = []
    for line in open(path):
        if line.startswith("#") or not line.strip():
            continue
        key, shape, ms_name = line.rstrip("\n").split("\t")
        rows.append((key, tuple(int(s) for s in shape.strip("[]").split(",") if s.strip()), ms_name))
    return rows


@pytest.mark.torch
@pytest.mark.parametrize("name", ["res2net50", "res2net50_v1b", "res2next50"])
def test_reference_layout_and_mapping_match_published_key_lists(name, R):
    rows = _tsv(name)
    sd = R.make_state_dict(name)
    assert [(k, tuple(v.shape)) for k, v in sd.items()] == [(k, s) for k, s, _ in rows]
    weights = convert_state_dict(sd, name)
    expected = {ms_name: key for key, _, ms_name in rows if ms_name != "-"}
    assert list(weights) == list(create_model(name).parameters_dict())
    assert set(weights) == set(expected)
    for ms_name, key in expected.items():  # the value of each tsv row lands under its MindCV name
        np.testing.assert_array_equal(weights[ms_name].reshape(-1), sd[key].numpy().reshape(-1))


@pytest.mark.torch
def test_published_parameter_counts(R):
    counts = {"res2net50": 25_699_120, "res2net101": 45_206_688, "res2net50_26w_6s": 37_051_448,
              "res2net50_26w_8s": 48_403_776, "res2net50_48w_2s": 25_287_304, "res2net50_14w_8s": 25_059_816,
              "res2next50": 24_671_464, "res2net50_v1b": 25_718_352, "res2net101_v1b": 45_225_920}
    for name, n in counts.items():
        assert R.count_learnable(R.make_state_dict(name, empty=True)) == n, name
    for name, layout, n in [("res2net_dla60", "official", 21_145_544), ("res2net_dla60", "timm", 20_848_072),
                            ("res2next_dla60", "official", 17_330_456), ("res2next_dla60", "timm", 17_032_984)]:
        assert R.count_learnable(R.make_state_dict(name, layout=layout, empty=True)) == n, (name, layout)


@pytest.mark.torch
@pytest.mark.parametrize("name,layout", [("res2net_dla60", "timm"), ("res2next_dla60", "official")])
def test_dla_both_layouts_convert(name, layout, R):
    sd = R.make_state_dict(name, layout=layout)
    weights = convert_state_dict(sd, name)
    assert list(weights) == list(create_model(name).parameters_dict())
    assert weights["classifier.weight"].shape == (1000, 1024)  # 1x1-conv fc -> Dense


# ------------------------------------------------------------------------------------------------
# files, wrappers, CLI
# ------------------------------------------------------------------------------------------------

@pytest.mark.torch
def test_pth_file_with_wrappers_through_cli_and_timm_name(R, torch, tmp_path, capsys):
    name = "res2net50_v1b"
    sd = R.make_state_dict(name, seed=5)
    src = tmp_path / "res2net50d_train.pth.tar"
    wrapped = {"epoch": 3, "arch": "res2net50d", "state_dict": {"module." + k: v for k, v in sd.items()}}
    torch.save(wrapped, src)
    dst = tmp_path / "out" / "res2net50d.ckpt"
    assert main([str(src), "--model", "res2net50d", "--out", str(dst)]) == 0  # timm's name
    assert "wrote" in capsys.readouterr().out
    assert read_checkpoint_meta(str(dst))["architecture"] == name
    net = create_model(name, checkpoint_path=str(dst))
    net.set_train(False)
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64), dtype=np.float32)
    assert rel_diff(R.forward(name, sd, x).numpy(), net(ms.Tensor(x)).asnumpy()) < TOL
    # a PyTorch file given straight to create_model is converted on the fly
    net2 = create_model(name, checkpoint_path=str(src))
    net2.set_train(False)
    np.testing.assert_allclose(net2(ms.Tensor(x)).asnumpy(), net(ms.Tensor(x)).asnumpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.torch
def test_safetensors_needs_no_torch(R, tmp_path, monkeypatch, capsys):
    from safetensors.numpy import save_file
    sd = R.make_state_dict("res2next_dla60", num_classes=10, layout="timm")
    src = tmp_path / "model.safetensors"
    save_file({k: v.numpy().astype(np.float16) if v.is_floating_point() else v.numpy() for k, v in sd.items()},
              str(src))
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails
    dst = tmp_path / "dla.ckpt"
    assert main([str(src), "--out", str(dst)]) == 0  # architecture guessed
    assert "guessed architecture: res2next_dla60" in capsys.readouterr().out
    net = create_model("res2next_dla60", num_classes=10, checkpoint_path=str(dst))
    got = net.parameters_dict()["level5.tree2.convs.2.weight"].asnumpy()
    np.testing.assert_array_equal(got, sd["level5.tree2.convs.2.weight"].numpy().astype(np.float16).astype(np.float32))


def test_pth_without_torch_explains(tmp_path, monkeypatch):
    src = tmp_path / "w.pth"
    src.write_bytes(b"\x80\x02}q\x00.")
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(UserError, match=r"pip install torch.*\.safetensors"):
        read_state_dict_file(str(src))


class NotATensor:
    """A pickled object that weights_only loading must refuse."""

    def __reduce__(self):
        return (os.getcwd, ())


@pytest.mark.torch
def test_pickled_objects_are_not_unpickled(torch, tmp_path):
    src = tmp_path / "evil.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "payload": NotATensor()}, src)
    with pytest.raises(UserError, match="weights_only"):
        read_state_dict_file(str(src))


def test_missing_file_and_mindspore_file(tmp_path):
    with pytest.raises(UserError, match="not found"):
        convert_file(str(tmp_path / "nope.pth"), "res2net50", str(tmp_path / "x.ckpt"))
    ck = tmp_path / "a.ckpt"
    ck.write_bytes(b"x")
    with pytest.raises(UserError, match="already a MindSpore checkpoint"):
        read_state_dict_file(str(ck))
    with pytest.raises(UserError, match="unknown model"):
        convert_file(str(ck), "res2net51", str(tmp_path / "x.ckpt"))


@pytest.mark.torch
def test_other_architecture_is_refused_with_key_lists(R, tmp_path):
    sd = R.make_state_dict("res2net101")
    with pytest.raises(UserError) as err:
        convert_state_dict(sd, "res2net50", source_label="r101.pth")
    msg = str(err.value)
    assert "r101.pth does not fit model res2net50" in msg
    assert "unexpected (layer3.6.conv1.weight" in msg and "It looks like res2net101" in msg and "--model" in msg
    sd6 = R.make_state_dict("res2net50_26w_6s")
    with pytest.raises(UserError, match=r"with another shape \(layer1.0.conv1.weight: checkpoint \[156, 64, 1, 1\] "
                                        r"vs model \[104, 64, 1, 1\]"):
        convert_state_dict(sd6, "res2net50")
    # nothing is written when refused
    src = tmp_path / "r101.pth"
    import torch
    torch.save(sd, src)
    dst = tmp_path / "r50.ckpt"
    with pytest.raises(UserError):
        convert_file(str(src), "res2net50", str(dst))
    assert not os.path.exists(dst) and os.listdir(tmp_path) == ["r101.pth"]


@pytest.mark.torch
def test_num_classes_drops_classifier(R, caplog):
    sd = R.make_state_dict("res2net_dla60")
    with caplog.at_level(logging.WARNING):
        weights = convert_state_dict(sd, "res2net_dla60", num_classes=10)
    assert "classifier.weight" not in weights and any("1000 classes" in r.getMessage() for r in caplog.records)
    net = create_model("res2net_dla60", num_classes=10)
    load_model_weights(net, weights)  # backbone loaded, fresh classifier kept
    assert "classifier.weight" not in convert_state_dict(sd, "res2net_dla60", num_classes=0)


@pytest.mark.torch
def test_guess_model_name(R):
    for name in ("res2net50", "res2net50_48w_2s", "res2next50", "res2net101_v1b", "res2net_dla60", "res2next_dla60"):
        sd = R.make_state_dict(name, empty=True)
        assert guess_model_name({k: tuple(v.shape) for k, v in sd.items()}) == name
    assert guess_model_name({"foo.weight": (3, 3)}) is None


def test_cli_reports_user_error_with_exit_2(tmp_path, capsys):
    from mindcv_res2net.cli import run_main
    with pytest.raises(SystemExit) as exc:
        run_main(main, [str(tmp_path / "missing.pth"), "--model", "res2net50", "--out", str(tmp_path / "o.ckpt")])
    assert exc.value.code == 2
    assert "error: weights file not found" in capsys.readouterr().err
