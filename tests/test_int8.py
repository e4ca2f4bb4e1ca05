"""int8 deployment: ``export.py --file_format ONNX --quantize int8 --calib_data DIR``, then the file
through validate.py (beside its checkpoint, as differences), predict.py and benchmark.py.

Fast tests: a wrong calibration input is one clear error (before any model work where it can be),
the calibration images are validate.py's evaluation arrays, the ``--compare onnxruntime_int8``
option. Slow tests (``-m slow``): a res2net50 trained by train.py at 28 px on a generated
Fashion-MNIST-like folder (grey, class-dependent patterns), exported as float32 and as int8 ONNX.
"""
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import mindspore  # noqa: F401,E402  (before onnx: MindSpore's protobuf modules must load first)
from helpers import ok, one_error, run_script  # noqa: E402

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

CLASSES = ["0_stripes", "1_dark", "2_bright", "3_frame"]
# the Fashion-MNIST demo's evaluation preprocessing (configs/res2net/res2net_fashion_mnist_cpu.yaml)
GREY = {"dataset": "fashion_mnist", "image_resize": 28, "crop_pct": 1.0, "interpolation": "bilinear",
        "mean": [72.93, 72.93, 72.93], "std": [90.015, 90.015, 90.015], "in_channels": 3}


def class_image(k, rng, size=28):
    """A 28x28 grey image of class ``k``: each class its own pattern, with noise."""
    img = np.full((size, size), 90.0)
    if k == 0:
        img[::4] = 230
    elif k == 1:
        img[:] = 30
    elif k == 2:
        img[:] = 210
    else:
        img[:3], img[-3:], img[:, :3], img[:, -3:] = 250, 250, 250, 250
    return np.clip(img + rng.normal(0, 25, img.shape), 0, 255).astype(np.uint8)


def make_grey_folder(root, train_per_class=6, val_per_class=10, seed=0):
    """``root/{train,val}/<class>/<i>.png``: grey 28x28 images, as ``data.prepare fashion_mnist`` writes."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for k, name in enumerate(CLASSES):
            folder = os.path.join(root, split, name)
            os.makedirs(folder, exist_ok=True)
            for i in range(count):
                Image.fromarray(class_image(k, rng)).save(os.path.join(folder, f"{i}.png"))
    return str(root)








# ------------------------------------------------------------------------------------------------
# fast: bad calibration input, one clear error
# ------------------------------------------------------------------------------------------------

EXPORT = ("export.py", "--model", "res2net50", "--num_classes", "4", "--image_size", "32", "--file_format", "ONNX")


def test_missing_calibration_folder_is_one_error(tmp_path):
    missing = tmp_path / "no_such_folder"
    proc = run_script(*EXPORT, "--quantize", "int8", "--calib_data", missing, "--out", tmp_path / "m")
    one_error(proc, "--calib_data", str(missing), "not found")
    assert not list(tmp_path.iterdir())


def test_calibration_folder_with_too_few_images_is_one_error(tmp_path):
    data = make_grey_folder(tmp_path / "data", train_per_class=1, val_per_class=1)
    proc = run_script(*EXPORT, "--quantize", "int8", "--calib_data", data, "--calib_images", "8",
                      "--out", tmp_path / "m")
    # a data root: images are drawn from its train/ folder (4 images there)
    one_error(proc, os.path.join(data, "train"), "only 4 image files", "--calib_images 4")
    empty = tmp_path / "empty"
    empty.mkdir()
    one_error(run_script(*EXPORT, "--quantize", "int8", "--calib_data", empty, "--out", tmp_path / "m"),
              str(empty), "no image files", "512")  # the default number of calibration images
    afile = tmp_path / "data" / "train" / CLASSES[0] / "0.png"
    one_error(run_script(*EXPORT, "--quantize", "int8", "--calib_data", afile, "--out", tmp_path / "m"),
              str(afile), "folder")
    assert not list(tmp_path.glob("m*"))


@pytest.mark.parametrize("extra, needles", [
    (("--quantize", "int8"), ("--calib_data DIR",)),
    (("--calib_data", "x", "--calib_images", "4"), ("--calib_data", "--calib_images", "--quantize int8")),
])
def test_quantize_options_that_do_not_fit(extra, needles, tmp_path):
    one_error(run_script(*EXPORT, *extra, "--out", tmp_path / "m"), *needles)
    mindir = [a if a != "ONNX" else "MINDIR" for a in EXPORT]
    one_error(run_script(*mindir, "--quantize", "int8", "--calib_data", tmp_path, "--out", tmp_path / "m"),
              "--quantize int8", "--file_format ONNX")


def test_unreadable_calibration_images_are_skipped_then_one_error(tmp_path):
    data = make_grey_folder(tmp_path / "data", train_per_class=2, val_per_class=0)
    for k, name in enumerate(CLASSES[:3]):  # 6 of the 8 training images are not images
        for i in range(2):
            (tmp_path / "data" / "train" / name / f"{i}.png").write_bytes(b"not a png" * k)
    proc = run_script(*EXPORT, "--quantize", "int8", "--calib_data", data, "--calib_images", "4",
                      "--out", tmp_path / "m")
    one_error(proc, os.path.join(data, "train"), "only 2 readable", "--calib_images 2")
    assert "6 unreadable calibration image(s) skipped" in proc.stderr
    assert not list(tmp_path.glob("m*")) and not list(tmp_path.glob(".export*"))


def test_calibration_images_are_the_evaluation_arrays(tmp_path):
    """The calibration set is drawn from train/ with a fixed seed, and each image is exactly what
    validate.py's evaluation pipeline feeds the model (the transform the file's metadata states)."""
    import config
    from mindcv_res2net.data.transforms import EvalPreprocessing
    from mindcv_res2net.training import data_setup
    from mindcv_res2net.deploy.quantize import calibration_arrays, calibration_files

    data = make_grey_folder(tmp_path / "data", train_per_class=3, val_per_class=0)
    files = calibration_files(data, 5)
    assert sorted(files) == sorted(str(p) for p in (tmp_path / "data" / "train").rglob("*.png"))
    assert files == calibration_files(data, 5) and files != sorted(files)  # seeded order, not the folder's
    arrays = calibration_arrays(files, EvalPreprocessing.from_keys(GREY), 5)
    assert arrays.shape == (5, 3, 28, 28) and arrays.dtype == np.float32

    flags = [x for k, v in GREY.items() for x in ([f"--{k}", *map(str, v)] if isinstance(v, list) else [f"--{k}", v])]
    args = config.parse_args(["--data_dir", data, "--val_split", "train", "--batch_size", "4",
                              "--num_parallel_workers", "1", *map(str, flags)], script="validate")
    split = data_setup.build_val(args, SimpleNamespace(world_size=1, rank=0))
    batches = split.loader.create_tuple_iterator(num_epochs=1, output_numpy=True)
    reference = dict(zip(split.loader.dataset_info.source.paths, (a for images, _ in batches for a in images)))
    for path, array in zip(files, arrays):
        np.testing.assert_array_equal(array, reference[path], err_msg=path)


def test_benchmark_accepts_onnxruntime_int8_for_inference_only():
    from mindcv_res2net.cli.benchmark_args import build_parser, validate
    from mindcv_res2net.errors import UserError

    args = build_parser().parse_args(["--task", "infer", "--compare", "mindcv,onnxruntime,onnxruntime_int8"])
    validate(args)
    assert args.references == ["mindcv", "onnxruntime", "onnxruntime_int8"]
    args = build_parser().parse_args(["--task", "train", "--compare", "onnxruntime_int8"])
    with pytest.raises(UserError, match="onnxruntime_int8 measures inference only"):
        validate(args)


def _runs(argmax_differences):
    """validate.py's per-model results: the checkpoint, then one exported file."""
    figures = {"top5": 1.0, "num_samples": 40, "seconds": 1.0}
    reference = dict(figures, label="reference", top1=0.85, loss=0.40)
    exported = dict(figures, label="m.onnx", top1=0.80, loss=0.45, argmax_differences=argmax_differences, ties=0,
                    max_abs_logit_diff=0.9, max_rel_logit_diff=0.05)
    return [reference, exported]


@pytest.mark.parametrize("quantized", [False, True])
def test_validate_reports_an_int8_file_as_differences_not_an_error(quantized):
    """A float32 export that changes a top-1 class is an error; an int8 one (its metadata says so)
    is reported beside the checkpoint as differences: top-1 / top-5 in points, loss."""
    from mindcv_res2net.evaluation.validation import _report

    args = SimpleNamespace(ckpt_path="best.ckpt", model="res2net50", batch_size=8, num_classes=4,
                           device_target="CPU", mode=0)
    quantization = {"type": "int8 static", "calibration_images": 16} if quantized else None
    model = SimpleNamespace(path="m.onnx", format="ONNX", backend="onnxruntime", option="--onnx_path",
                            label="m.onnx (onnxruntime)", quantization=quantization)
    result, mismatch = _report(args, _runs(2), [model], None)
    entry = result["results"][1]
    assert entry["argmax_differences"] == 2
    if not quantized:
        assert "m.onnx (2 of 40 images)" in mismatch and "top1_diff_points" not in entry
        return
    assert mismatch is None
    assert entry["top1_diff_points"] == pytest.approx(-5.0) and entry["top5_diff_points"] == 0
    assert entry["loss_diff"] == pytest.approx(0.05) and entry["quantization"] == quantization


# ------------------------------------------------------------------------------------------------
# slow: train.py -> export.py (fp32, int8) -> validate.py / predict.py / benchmark.py
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A res2net50 trained by train.py at 28 px (Fashion-MNIST's preprocessing, 24 steps of 4 on 24
    images), exported as float32 and int8 ONNX (calibrated on 16 of its training images)."""
    root = tmp_path_factory.mktemp("int8")
    data = make_grey_folder(root / "data")
    save = root / "ckpt"
    recipe = root / "recipe.yaml"
    recipe.write_text("".join(f"{key}: {json.dumps(value)}\n" for key, value in GREY.items()))
    ok(run_script("train.py", "-c", recipe, "--data_dir", data, "--ckpt_save_dir", save, "--num_classes", "4",
                  "--scale", "1.0", "1.0", "--ratio", "1.0", "1.0", "--hflip", "0", "--opt", "adam", "--lr", "0.003",
                  "--zero_init_last", "true", "--warmup_epochs", "0", "--epoch_size", "4", "--batch_size", "4",
                  "--val_while_train", "false", "--mode", "1", "--device_target", "CPU", "--num_parallel_workers", "1"))
    ckpt = str(save / "res2net50-4_6.ckpt")
    files = {"fp32": str(root / "m_fp32.onnx"), "int8": str(root / "m_int8.onnx")}
    ok(run_script("export.py", "--ckpt_path", ckpt, "--file_format", "ONNX", "--out", files["fp32"]))
    proc = ok(run_script("export.py", "--ckpt_path", ckpt, "--file_format", "ONNX", "--quantize", "int8",
                         "--calib_data", data, "--calib_images", "16", "--out", files["int8"]))
    return SimpleNamespace(root=root, data=data, ckpt=ckpt, export_stdout=proc.stdout, **files)


def _validate(*args, json_path):
    ok(run_script("validate.py", "--device_target", "CPU", "--num_parallel_workers", "1", "--batch_size", "8",
                  *args, "--json", json_path))
    with open(json_path) as fh:
        return json.load(fh)


@pytest.mark.slow
def test_int8_file_validates_within_tolerance_of_the_fp32_file(exported, tmp_path):
    """Tolerance: on the 40 val images the int8 file's top-1 is within 5 points (2 images) of the
    float32 file's, and it gives at least 90% of the images the float32 file's top-1 class."""
    fp32 = _validate("--data_dir", exported.data, "--onnx_path", exported.fp32, json_path=tmp_path / "f.json")
    both = _validate("--data_dir", exported.data, "--ckpt_path", exported.ckpt, "--onnx_path", exported.int8,
                     json_path=tmp_path / "b.json")  # no error: an int8 file is expected to differ
    ckpt_res, int8_res = both["results"]
    assert ckpt_res["format"] == "checkpoint" and int8_res["source"] == exported.int8
    assert fp32["num_samples"] == int8_res["num_samples"] == 40
    assert fp32["top1"] == pytest.approx(ckpt_res["top1"], abs=1e-12)  # the float32 export is the checkpoint
    assert fp32["top1"] >= 0.5  # trained: the tolerance below says something
    assert abs(int8_res["top1"] - fp32["top1"]) <= 0.05 + 1e-9
    # the differences validate.py reports are the two rows' figures subtracted
    assert int8_res["top1_diff_points"] == pytest.approx(100 * (int8_res["top1"] - ckpt_res["top1"]))
    assert int8_res["top5_diff_points"] == pytest.approx(100 * (int8_res["top5"] - ckpt_res["top5"]))
    assert int8_res["loss_diff"] == pytest.approx(int8_res["loss"] - ckpt_res["loss"])
    assert int8_res["quantization"]["calibration_images"] == 16

    # an independent reference: both files in onnxruntime on the same arrays, image by image
    import onnxruntime as ort
    from mindcv_res2net.data.transforms import EvalPreprocessing
    from mindcv_res2net.deploy.prediction import Preprocessor

    pre = Preprocessor(EvalPreprocessing.from_keys(GREY))
    images = np.stack([pre(str(p))[0] for p in sorted((exported.root / "data" / "val").rglob("*.png"))])
    logits = {k: ort.InferenceSession(getattr(exported, k)).run(None, {"input": images})[0] for k in ("fp32", "int8")}
    agree = (logits["fp32"].argmax(1) == logits["int8"].argmax(1)).mean()
    assert agree >= 0.9, agree
    assert 0 < np.abs(logits["int8"] - logits["fp32"]).max() < 0.25 * np.abs(logits["fp32"]).max()


@pytest.mark.slow
def test_int8_metadata_round_trips(exported):
    import onnx
    from mindcv_res2net.deploy.runtimes import OnnxRuntimeModel

    fp32, int8 = OnnxRuntimeModel(exported.fp32), OnnxRuntimeModel(exported.int8)
    quant = int8.quantization
    assert {k: v for k, v in int8.metadata.items() if k != "quantization"} == fp32.metadata  # all kept
    assert fp32.quantization is None and int8.metadata["quantization"] == quant
    assert int8.metadata["preprocessing"] == GREY and int8.metadata["label_names"] == CLASSES
    assert quant == {"type": "int8 static", "format": "QDQ", "weights": "int8, per output channel",
                     "activations": "uint8, per tensor", "calibration_method": "MinMax",
                     "calibration_data": exported.data, "calibration_images": 16, "calibration_seed": 0,
                     "onnxruntime_version": quant["onnxruntime_version"]}
    assert "int8 (minmax calibration on 16 images)" in exported.export_stdout
    assert (int8.batch, int8.input_shape, int8.num_classes) == (None, (3, 28, 28), 4)
    assert int8.label.endswith("(onnxruntime, int8)")
    graph = onnx.load(exported.int8).graph
    ops = {n.op_type for n in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops and "BatchNormalization" not in ops
    assert "BatchNormalization" not in {n.op_type for n in onnx.load(exported.fp32).graph.node}  # folded first
    int8_weights = [t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4]
    assert len(int8_weights) == sum(n.op_type == "Conv" for n in graph.node)  # every convolution's weight
    scales = {n.input[0]: n for n in graph.node if n.op_type == "DequantizeLinear"}
    per_channel = [w for w in int8_weights if w.name in scales and
                   next(t for t in graph.initializer if t.name == scales[w.name].input[1]).dims == [w.dims[0]]]
    assert len(per_channel) == len(int8_weights)  # one scale per output channel
    assert os.path.getsize(exported.int8) < 0.4 * os.path.getsize(exported.fp32)


@pytest.mark.slow
def test_predict_runs_the_int8_file(exported):
    val = os.path.join(exported.data, "val")
    by = {k: json.loads(ok(run_script("predict.py", "--onnx_path", getattr(exported, k), val, "--topk", "2",
                                      "--json", "-")).stdout) for k in ("fp32", "int8")}
    assert by["int8"]["preprocessing"] == GREY
    files = [r["file"] for r in by["int8"]["predictions"]]
    assert files == [r["file"] for r in by["fp32"]["predictions"]] and len(files) == 40
    top = {k: [r["predictions"][0]["index"] for r in by[k]["predictions"]] for k in by}
    assert np.mean(np.array(top["int8"]) == np.array(top["fp32"])) >= 0.9
    for record in by["int8"]["predictions"]:
        first = record["predictions"][0]
        assert first["class"] == CLASSES[first["index"]] and 0 < first["probability"] <= 1


@pytest.mark.slow
def test_benchmark_int8_row_in_the_same_run(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT, GLOG_v="3", TMPDIR=str(tmp_path))
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmark.py"), "--task", "infer", "--mode", "1",
                           "--image_size", "32", "--batch_size", "2", "--steps", "2", "--warmup", "0", "--compare",
                           "onnxruntime,onnxruntime_int8", "--json", "out.json"], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "out.json").read_text())
    results, ratios = report["results"], report["ratios"]
    row = results["onnxruntime_int8"]
    assert row["available"] and len(row["times_ms"]) == 2 and row["precision"].startswith("int8")
    assert any("int8 QDQ" in n for n in row["notes"])
    for other in ("ours", "ours_optimized"):
        assert ratios[f"onnxruntime_int8/{other}"] == pytest.approx(
            row["images_per_sec"] / results[other]["images_per_sec"])
    assert not [p for p in os.listdir(tmp_path) if p.startswith(("r2bench", ".export_tmp", ".quantize_tmp"))]
