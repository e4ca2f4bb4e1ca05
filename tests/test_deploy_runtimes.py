"""Exported files proven equal to their checkpoint: export.py writes ONNX (variable batch by
default) and MINDIR with self-describing metadata; validate.py --onnx_path / --mindir_path give the
checkpoint's top-1, top-5 and loss on the same data; predict.py --onnx_path gives its top-k; user
errors (a missing or wrong file, onnxruntime not installed) are one line with exit status 2.

The slow tests share one module fixture: a res2net50 with 3 classes saved as a checkpoint, a
generated 3-class image folder, and the files export.py writes from the checkpoint (32 px).
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import mindspore as ms

from mindcv_res2net.weights.checkpoint_file import save_checkpoint_atomic
from mindcv_res2net.evaluation.compare import cross_entropy, disagreements
from mindcv_res2net.evaluation.validation import apply_file_settings
from mindcv_res2net.errors import UserError
from mindcv_res2net.models.factory import create_model
from mindcv_res2net.deploy.runtimes import (DeployedModel, MindirModel, OnnxRuntimeModel, decode_metadata, encode_metadata,
                                    make_metadata)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import config  # noqa: E402  (the top-level config.py)
from fault.test_bad_input import make_image_folder  # noqa: E402
from helpers import ok, randomize_bn, run_script  # noqa: E402
from helpers import one_error as one_error_line  # noqa: E402

CLASSES = ["ant", "bee", "cat"]
SIZE = 32
FAST = ["--device_target", "CPU", "--num_parallel_workers", "1", "--batch_size", "4"]








# ------------------------------------------------------------------------------------------------
# fast: metadata, the comparison rule, settings from a file, user errors
# ------------------------------------------------------------------------------------------------

def test_metadata_encode_decode_round_trip():
    from mindcv_res2net.data.transforms import EvalPreprocessing

    prep = EvalPreprocessing("imagenet", 64, 0.9, "bicubic", (0.5, 0.4, 0.3), (0.2, 0.2, 0.25))
    meta = make_metadata("res2net50", 3, (3, 64, 64), preprocessing=prep, label_names=["a_b", "u", "c"],
                         label_source="training", display_names=["a b", "ü", "c"], weights="/some/dir/best.ckpt",
                         mindspore_version="2.8.0")
    raw = encode_metadata(meta)
    assert all(isinstance(v, str) for v in raw.values())
    assert json.loads(raw["display_names"]) == ["a b", "ü", "c"] and json.loads(raw["label_names"])[0] == "a_b"
    assert decode_metadata(raw) == meta
    assert meta["preprocessing"] == prep.keys() and meta["mean"] == [0.5, 0.4, 0.3] and meta["crop_pct"] == 0.9
    assert meta["weights"] == "best.ckpt"  # no local folder in a shipped file
    cfg = {"crop_pct": 0.9, "interpolation": "bicubic", "mean": (0.5, 0.4, 0.3), "std": (0.2, 0.2, 0.25)}
    # a grey model keeps its data set's normalisation: 3-channel mean/std are not stored
    assert "mean" not in make_metadata("res2net50", 10, (1, 32, 32), cfg)
    # other tools' fields are left out, a malformed field of ours is dropped
    assert decode_metadata({"num_classes": "x", "producer": "y", "crop_pct": "0.8"}) == {"crop_pct": 0.8}


def test_disagreements_count_ties_apart():
    ref = np.array([[1.0, 0.5, 0.0],        # clear: any other class is a disagreement
                    [2.0, 2.0 - 1e-6, 0.0],  # a tie within 1e-5 of the row's largest magnitude
                    [-3.0, 4.0, 4.0 - 1e-3]])
    same = ref.copy()
    assert disagreements(same, ref) == (0, 0)
    other = np.array([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert disagreements(other, ref) == (2, 1)
    logits = np.array([[2.0, 1.0, 0.0]])
    assert cross_entropy(logits, np.array([1]))[0] == pytest.approx(1 + np.log(1 + np.exp(-1) + np.exp(-2)))


def _fake_file(path="m.onnx", size=48, channels=3, **meta):
    model = DeployedModel(path)
    model.input_shape, model.metadata = (channels, size, size), meta
    return model


def test_file_settings_unless_the_run_sets_them():
    args = config.parse_args(["--crop_pct", "0.95"], script="validate")
    deployed = [_fake_file(model_name="res2net101_26w_4s", crop_pct=0.8, mean=[0.5] * 3, std=[0.25] * 3,
                           interpolation="bicubic")]
    apply_file_settings(args, deployed, given_keys={"crop_pct"})
    assert (args.model, args.image_resize, args.in_channels) == ("res2net101_26w_4s", 48, 3)
    assert (args.mean, args.std, args.interpolation, args.crop_pct) == ([0.5] * 3, [0.25] * 3, "bicubic", 0.95)
    # an image size the file cannot take is an error, not a crash in onnxruntime
    args = config.parse_args(["--image_resize", "64"], script="validate")
    with pytest.raises(UserError, match="does not fit m.onnx"):
        apply_file_settings(args, deployed, given_keys={"image_resize"})
    # two files exported differently
    with pytest.raises(UserError, match="differ in image_resize"):
        apply_file_settings(config.parse_args([], script="validate"), [deployed[0], _fake_file("b.mindir", 64)],
                            given_keys=set())
    # a file of this version states its whole preprocessing (the training's config keys)
    keys = {"dataset": "fashion_mnist", "image_resize": 48, "crop_pct": 1.0, "interpolation": "bilinear",
            "mean": [72.93] * 3, "std": [90.015] * 3, "in_channels": 3}
    args = config.parse_args([], script="validate")
    apply_file_settings(args, [_fake_file(preprocessing=keys, model_name="res2net50")], given_keys=set())
    assert {key: getattr(args, key) for key in keys} == keys
    with pytest.raises(UserError, match="does not fit its input 3x64x64"):
        apply_file_settings(args, [_fake_file(size=64, preprocessing=keys)], given_keys=set())


@pytest.fixture(scope="module")
def small_val(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("val"), classes=CLASSES, per_class=4, size=48)


@pytest.mark.parametrize("script", ["validate.py", "predict.py"])
def test_missing_onnxruntime_is_one_clear_line(script, small_val, tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"whatever")
    args = ["--data_dir", small_val] if script == "validate.py" else [os.path.join(small_val, "val")]
    code = (f"import sys, runpy; sys.modules['onnxruntime'] = None; sys.path.insert(0, {ROOT!r}); "
            f"sys.argv = [{script!r}] + {[*args, '--onnx_path', str(model)]!r}; "
            f"runpy.run_path({os.path.join(ROOT, script)!r}, run_name='__main__')")
    env = dict(os.environ, PYTHONPATH=ROOT, GLOG_v="3")
    env.pop("MINDCV_RES2NET_DEBUG", None)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    one_error_line(proc, "onnxruntime is not installed", "pip install 'mindcv_res2net[deploy]'")


@pytest.mark.parametrize("script", ["validate.py", "predict.py"])
@pytest.mark.parametrize("case", ["missing", "not_onnx", "folder"])
def test_bad_onnx_path_is_one_clear_line(script, case, small_val, tmp_path):
    path = {"missing": tmp_path / "nothing.onnx", "not_onnx": tmp_path / "text.onnx", "folder": tmp_path}[case]
    (tmp_path / "text.onnx").write_text("not a model\n")
    args = ["--data_dir", small_val] if script == "validate.py" else [os.path.join(small_val, "val")]
    proc = run_script(script, *args, "--onnx_path", path)
    message = {"missing": "file not found", "not_onnx": "is not an ONNX model", "folder": "is a directory"}[case]
    one_error_line(proc, "--onnx_path", str(path), message)


# ------------------------------------------------------------------------------------------------
# slow: a res2net50 checkpoint, its ONNX and MINDIR files, the scripts on each
# ------------------------------------------------------------------------------------------------

def _save_checkpoint(path, net, classifier_rows=None):
    params = {p.name: p.asnumpy() for p in net.get_parameters()}
    if classifier_rows is not None:  # the same network with its classes in another order
        for name in ("classifier.weight", "classifier.bias"):
            params[name] = params[name][classifier_rows]
    save_checkpoint_atomic(params, path, extra={"class_names": CLASSES, "num_classes": len(CLASSES)})
    return str(path)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, small_val):
    """(network, checkpoint, data folder, {"onnx": path, "mindir": path}); the network's logits are
    scaled to about 1 so that the images' top-1 classes differ."""
    root = tmp_path_factory.mktemp("deploy")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_seed(3)
    net = randomize_bn(create_model("res2net50", num_classes=len(CLASSES)), 5)
    net.classifier.weight.set_data(ms.Tensor(net.classifier.weight.asnumpy() * 1e-3))
    net.set_train(False)
    ckpt = _save_checkpoint(root / "r50.ckpt", net)
    files = {"onnx": str(root / "r50.onnx"), "mindir": str(root / "r50.mindir")}
    for fmt, out in files.items():
        proc = ok(run_script("export.py", "--model", "res2net50", "--ckpt_path", ckpt, "--image_size", SIZE,
                             "--file_format", fmt, "--out", out, "--device_target", "CPU"))
        assert "exported res2net50" in proc.stdout
    return net, ckpt, small_val, files


def _validate(data, *args, json_path):
    ok(run_script("validate.py", "--data_dir", data, *FAST, *args, "--json", json_path))
    with open(json_path) as fh:
        return json.load(fh)


@pytest.mark.slow
def test_validate_files_give_the_checkpoints_figures(exported, tmp_path):
    _net, ckpt, data, files = exported
    ref = _validate(data, "--ckpt_path", ckpt, "--image_resize", SIZE, "--mode", "1", json_path=tmp_path / "c.json")
    assert ref["num_samples"] == 12 and {"model", "ckpt_path", "top1", "top5", "loss", "num_samples"} <= set(ref)
    assert "results" not in ref  # a checkpoint alone: no per-source list
    for fmt, path in files.items():
        got = _validate(data, f"--{fmt}_path", path, json_path=tmp_path / f"{fmt}.json")  # size etc. from the file
        assert got[f"{fmt}_path"] == path and got["num_samples"] == 12
        assert (got["top1"], got["top5"]) == (ref["top1"], ref["top5"]), fmt
        assert got["loss"] == pytest.approx(ref["loss"], rel=1e-5), fmt
    assert 0 < ref["top1"] < 1  # the images' classes differ: top-1 means something


@pytest.mark.slow
def test_validate_file_with_checkpoint_reports_both(exported, tmp_path):
    _net, ckpt, data, files = exported
    res = _validate(data, "--ckpt_path", ckpt, "--onnx_path", files["onnx"], "--mindir_path", files["mindir"],
                    json_path=tmp_path / "both.json")
    checkpoint, onnx, mindir = res["results"]
    assert checkpoint["source"] == ckpt and (onnx["backend"], mindir["backend"]) == ("onnxruntime", "mindspore")
    for entry in (onnx, mindir):
        assert entry["argmax_differences"] == 0
        assert (entry["top1"], entry["top5"]) == (checkpoint["top1"], checkpoint["top5"])
        assert entry["loss_rel_diff"] < 1e-5 and entry["max_rel_logit_diff"] < 1e-4
        print(f"{entry['format']}: max |logit diff| {entry['max_abs_logit_diff']:.3g} "
              f"({entry['max_rel_logit_diff']:.3g} relative), loss diff {entry['loss_rel_diff']:.3g} relative")


@pytest.mark.slow
def test_validate_file_from_another_checkpoint_is_an_error(exported, tmp_path):
    net, _ckpt, data, files = exported
    other = _save_checkpoint(tmp_path / "rolled.ckpt", net, classifier_rows=[1, 2, 0])
    proc = run_script("validate.py", "--data_dir", data, *FAST, "--ckpt_path", other, "--onnx_path", files["onnx"],
                      "--json", tmp_path / "r.json")
    one_error_line(proc, files["onnx"], other, "12 images", "another top-1 class")
    assert json.loads((tmp_path / "r.json").read_text())["results"][1]["argmax_differences"] == 12  # reported first


@pytest.mark.slow
def test_onnx_takes_batches_of_1_and_8_and_metadata_round_trips(exported):
    net, _ckpt, _data, files = exported
    model = OnnxRuntimeModel(files["onnx"], num_threads=2)
    assert model.batch is None and model.input_shape == (3, SIZE, SIZE) and model.num_classes == 3
    x = np.random.default_rng(0).standard_normal((8, 3, SIZE, SIZE)).astype(np.float32)
    ref = net(ms.Tensor(x)).asnumpy()
    eight = model.session.run(None, {"input": x})[0]  # onnxruntime itself, no chunking
    one = model.session.run(None, {"input": x[:1]})[0]
    assert eight.shape == (8, 3) and one.shape == (1, 3)
    np.testing.assert_allclose(one[0], eight[0], rtol=0, atol=1e-5 * np.abs(eight).max())
    np.testing.assert_allclose(eight, ref, rtol=0, atol=1e-4 * np.abs(ref).max())

    import onnx  # after MindSpore (which fixes protobuf's implementation first)
    props = {p.key: p.value for p in onnx.load(files["onnx"]).metadata_props}
    cfg = net.default_cfg
    mindir = MindirModel(files["mindir"])
    for meta in (decode_metadata(props), model.metadata, mindir.metadata):
        assert meta["label_names"] == meta["display_names"] == CLASSES and meta["label_source"] == "training"
        assert meta["num_classes"] == 3 and meta["model_name"] == "res2net50"
        assert meta["input_size"] == [3, SIZE, SIZE]
        assert meta["mean"] == list(cfg["mean"]) and meta["std"] == list(cfg["std"])
        assert (meta["crop_pct"], meta["interpolation"]) == (cfg["crop_pct"], cfg["interpolation"])
        assert meta["toolkit"] == "mindcv_res2net" and meta["weights"] == "r50.ckpt"
    assert mindir.batch == 1  # MINDIR: the fixed --batch_size unless --dynamic_batch
    np.testing.assert_allclose(mindir(x), ref, rtol=0, atol=1e-4 * np.abs(ref).max())  # fed in chunks of 1


@pytest.mark.slow
def test_fixed_batch_onnx_and_variable_batch_mindir(exported, tmp_path):
    net, ckpt, _data, _files = exported
    x = np.random.default_rng(1).standard_normal((5, 3, SIZE, SIZE)).astype(np.float32)
    ref = net(ms.Tensor(x)).asnumpy()
    onnx_out, mindir_out = str(tmp_path / "fixed.onnx"), str(tmp_path / "any.mindir")
    ok(run_script("export.py", "--model", "res2net50", "--ckpt_path", ckpt, "--image_size", SIZE, "--file_format",
                  "ONNX", "--dynamic_batch", "false", "--batch_size", "2", "--out", onnx_out))
    ok(run_script("export.py", "--model", "res2net50", "--ckpt_path", ckpt, "--image_size", SIZE, "--file_format",
                  "MINDIR", "--dynamic_batch", "--out", mindir_out))
    fixed, variable = OnnxRuntimeModel(onnx_out), MindirModel(mindir_out)
    assert (fixed.batch, variable.batch) == (2, None)
    for model in (fixed, variable):
        np.testing.assert_allclose(model(x), ref, rtol=0, atol=1e-4 * np.abs(ref).max())


@pytest.mark.slow
def test_predict_on_onnx_gives_the_checkpoints_topk(exported, tmp_path):
    _net, ckpt, data, files = exported
    images = os.path.join(data, "val")
    by_ckpt = json.loads(ok(run_script("predict.py", "--model", "res2net50", "--ckpt_path", ckpt, images,
                                       "--image_size", SIZE, "--topk", "3", "--json", "-")).stdout)
    by_onnx = json.loads(ok(run_script("predict.py", "--onnx_path", files["onnx"], images, "--topk", "3",
                                       "--json", "-")).stdout)
    assert by_onnx["model"] == "res2net50" and by_onnx["image_size"] == SIZE and by_onnx["weights"] == files["onnx"]
    assert len(by_onnx["predictions"]) == len(by_ckpt["predictions"]) == 12
    for a, b in zip(by_ckpt["predictions"], by_onnx["predictions"]):
        assert a["file"] == b["file"]
        ranked_a, ranked_b = a["predictions"], b["predictions"]
        assert [(p["index"], p["class"]) for p in ranked_a] == [(p["index"], p["class"]) for p in ranked_b]
        assert [p["probability"] for p in ranked_b] == pytest.approx([p["probability"] for p in ranked_a], abs=1e-5)
    assert {p["predictions"][0]["class"] for p in by_onnx["predictions"]} <= set(CLASSES)
    table = ok(run_script("predict.py", "--onnx_path", files["onnx"], os.path.join(images, "ant", "0.png"))).stdout
    assert table.splitlines()[0].split() == ["file", "rank", "class", "probability"]
