"""A trained model predicts what it validated: the checkpoint carries its evaluation preprocessing
and its labels through predict.py and export.py (one preprocessing definition for every path).

Fast tests: predict.py's preprocessing equals validate.py's pipeline image by image (arrays and
logits), the shipped ImageNet WordNet ids, where each key comes from (flag, ``-c``, checkpoint,
model defaults), damaged stored preprocessing. Slow tests (``-m slow``): a model trained by train.py
with non-default preprocessing, then validate.py, predict.py, export.py and the exported files with
no preprocessing flag; checkpoints without names and 1000-class checkpoints on WordNet-id folders
validate alike from the checkpoint and from their export.
"""
import json
import os
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

import mindspore as ms

from mindcv_res2net.weights.checkpoint_file import read_checkpoint_meta, save_checkpoint_atomic
from mindcv_res2net.models.factory import create_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import config  # noqa: E402  (the top-level config.py)
import predict as predict_script  # noqa: E402
from helpers import ok, one_error, randomize_bn, run_script  # noqa: E402

CLASSES = ["ant", "bee", "cat"]
# Two trainings far from the model's defaults (224 px, crop 0.875, ImageNet mean/std): colour
# images read as ImageNet is, and grey ones read as Fashion-MNIST is (the README's demo).
RECIPES = {
    "rgb": {"dataset": "imagenet", "image_resize": 24, "crop_pct": 1.0, "interpolation": "bicubic",
            "mean": [100.0, 110.0, 120.0], "std": [50.0, 60.0, 70.0], "in_channels": 3},
    "grey": {"dataset": "fashion_mnist", "image_resize": 28, "crop_pct": 1.0, "interpolation": "bilinear",
             "mean": [72.93, 72.93, 72.93], "std": [90.015, 90.015, 90.015], "in_channels": 3},
}


def make_folder(root, grey, classes=CLASSES, per_class=4, seed=0):
    """``root/{train,val}/<class>/<i>.png``: non-square images (so resize and crop matter) whose
    colour depends on the class (so a few training steps learn something)."""
    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        for k, name in enumerate(classes):
            folder = os.path.join(root, split, name)
            os.makedirs(folder, exist_ok=True)
            for i in range(per_class):
                h, w = (30, 24) if i % 2 else (26, 34)
                base = np.array([40 + 80 * (k % 3), 200 - 70 * (k % 3), 90 + 40 * (k % 2)], np.float64)
                arr = np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
                image = Image.fromarray(arr)
                (image.convert("L") if grey else image).save(os.path.join(folder, f"{i}.png"))
    return str(root)


def flags(keys):
    """The command-line flags of train.py / validate.py for a recipe's keys."""
    out = []
    for key, value in keys.items():
        out += [f"--{key}", *map(str, value)] if isinstance(value, list) else [f"--{key}", str(value)]
    return out








def preprocessing_line(text):
    lines = [line for line in text.splitlines() if "preprocessing" in line and ("from" in line)]
    assert len(lines) == 1, text[-3000:]
    return lines[0]


def val_arrays(args):
    """(file, CHW array) of validate.py's evaluation pipeline for ``args``, in its order."""
    from mindcv_res2net.training import data_setup

    split = data_setup.build_val(args, SimpleNamespace(world_size=1, rank=0))
    arrays = [a for images, _ in split.loader.create_tuple_iterator(num_epochs=1, output_numpy=True) for a in images]
    return list(zip(split.loader.dataset_info.source.paths, arrays))


# ------------------------------------------------------------------------------------------------
# fast: one preprocessing definition, where each key comes from
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_predict_preprocesses_and_classifies_as_validate_image_by_image(recipe, tmp_path, capsys):
    keys = RECIPES[recipe]
    data = make_folder(tmp_path / "data", grey=recipe == "grey", per_class=3)
    args = config.parse_args(["--data_dir", data, "--batch_size", "4", "--num_parallel_workers", "1", *flags(keys)],
                             script="validate")
    reference = val_arrays(args)
    assert len(reference) == 9
    # the arrays: predict.py's Preprocessor gives validate.py's pipeline's, bit for bit
    from mindcv_res2net.data.transforms import EvalPreprocessing
    from mindcv_res2net.deploy.prediction import Preprocessor

    pre = Preprocessor(EvalPreprocessing.from_keys(keys))
    for path, expected in reference:
        got, reason = pre(path)
        assert reason is None and got.shape == (3, keys["image_resize"], keys["image_resize"])
        np.testing.assert_array_equal(got, expected, err_msg=path)

    # the predictions: predict.py on the folder (no preprocessing flag) against the network on
    # validate.py's batches, file by file
    from mindcv_res2net.models.inference import optimize_for_inference

    net = randomize_bn(create_model("res2net50", num_classes=3), 7)
    net.classifier.weight.set_data(ms.Tensor(net.classifier.weight.asnumpy() * 1e-2))
    net.set_train(False)
    ckpt = str(tmp_path / "trained.ckpt")
    save_checkpoint_atomic(net, ckpt, extra={"model": "res2net50", "num_classes": 3, "class_names": CLASSES,
                                             "preprocessing": keys})
    fused, stacked = optimize_for_inference(net), np.stack([a for _, a in reference])
    logits = np.concatenate([fused(ms.Tensor(stacked[i:i + 4])).asnumpy() for i in range(0, 9, 4)]).astype(np.float64)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    out = tmp_path / "preds.json"
    assert predict_script.main(["--ckpt_path", ckpt, os.path.join(data, "val"), "--mode", "1", "--topk", "3",
                                "--batch_size", "4", "--json", str(out)]) == 0
    assert "preprocessing from checkpoint" in capsys.readouterr().err
    result = json.loads(out.read_text())
    assert result["preprocessing"] == keys and result["model"] == "res2net50"
    assert [r["file"] for r in result["predictions"]] == [p for p, _ in reference]
    for record, row in zip(result["predictions"], probs):
        assert [p["index"] for p in record["predictions"]] == list(np.argsort(-row, kind="stable")[:3])
        for p in record["predictions"]:
            assert p["probability"] == pytest.approx(row[p["index"]], abs=1e-5)  # float32 logits, other batches
            assert p["class"] == CLASSES[p["index"]]


def test_imagenet_wordnet_ids_ship_with_the_package():
    from mindcv_res2net.deploy.class_names import IMAGENET_WNIDS_FILE, imagenet_class_names, imagenet_wordnet_ids

    ids = imagenet_wordnet_ids()
    assert len(ids) == 1000 and ids == sorted(set(ids)) and all(len(i) == 9 and i[0] == "n" for i in ids)
    names = imagenet_class_names()
    for index, wnid, name in ((0, "n01440764", "tench"), (1, "n01443537", "goldfish"), (281, "n02123045", "tabby"),
                              (134, "n02012849", "crane (bird)"), (517, "n03126707", "crane (machine)"),
                              (999, "n15075141", "toilet tissue")):
        assert (ids[index], names[index]) == (wnid, name)
    assert os.path.basename(IMAGENET_WNIDS_FILE) == "imagenet_wnids.txt"
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as fh:
        assert "imagenet_wnids.txt" in fh.read()  # package data: installed with the code


def test_the_first_source_that_sets_a_key_decides_it():
    from mindcv_res2net.data.transforms import EvalPreprocessing, describe_preprocessing, resolve_eval_preprocessing

    stored = RECIPES["grey"]
    defaults = EvalPreprocessing.from_model_cfg({"input_size": (3, 224, 224), "crop_pct": 0.875,
                                                 "interpolation": "bilinear", "mean": (0.485, 0.456, 0.406),
                                                 "std": (0.229, 0.224, 0.225)}).keys()
    prep, sources = resolve_eval_preprocessing([("the command line", {"image_resize": 32}),
                                                ("config c.yaml", {"crop_pct": 0.9}),
                                                ("checkpoint a.ckpt", stored), ("the res2net50 defaults", defaults)])
    assert prep.keys() == dict(stored, image_resize=32, crop_pct=0.9)
    assert sources["image_resize"] == "the command line" and sources["crop_pct"] == "config c.yaml"
    assert {sources[k] for k in ("dataset", "mean", "std", "interpolation", "in_channels")} == {"checkpoint a.ckpt"}
    line = describe_preprocessing(prep, sources)
    assert "image_resize 32 from the command line" in line and "crop_pct 0.9 from config c.yaml" in line
    # nothing stored: the model's defaults, as predict.py has always used them
    prep, sources = resolve_eval_preprocessing([("the command line", {}), ("the res2net50 defaults", defaults)])
    assert prep.keys() == {"dataset": "imagenet", "image_resize": 224, "crop_pct": 0.875, "interpolation": "bilinear",
                           "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "in_channels": 3}
    assert describe_preprocessing(prep, sources).startswith("preprocessing from the res2net50 defaults: ")


@pytest.fixture(scope="module")
def small_ckpts(tmp_path_factory):
    """A train.py-style checkpoint (names its model, classes and preprocessing), a MindCV-style one
    (weights only) and a val folder of colour images."""
    root = tmp_path_factory.mktemp("small")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    net = randomize_bn(create_model("res2net50", num_classes=3), 3)
    net.set_train(False)
    ours, mindcv = str(root / "ours.ckpt"), str(root / "mindcv.ckpt")
    save_checkpoint_atomic(net, ours, extra={"model": "res2net50", "num_classes": 3, "class_names": CLASSES,
                                             "preprocessing": RECIPES["rgb"]})
    ms.save_checkpoint(net, mindcv)
    data = make_folder(root / "data", grey=False, per_class=1)
    return ours, mindcv, data


def test_predict_line_names_each_source_and_flags_win(small_ckpts, tmp_path):
    ours, mindcv, data = small_ckpts
    image = os.path.join(data, "val", "ant", "0.png")
    proc = ok(run_script("predict.py", "--ckpt_path", ours, image, "--mode", "1", "--json", "-"))
    assert preprocessing_line(proc.stderr).startswith(f"preprocessing from checkpoint {ours}: dataset imagenet, "
                                                      "image_resize 24, crop_pct 1.0, interpolation bicubic")
    assert json.loads(proc.stdout)["preprocessing"] == RECIPES["rgb"]
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("model: res2net50\nimage_resize: 48\ncrop_pct: 0.8\n")
    proc = ok(run_script("predict.py", "-c", yaml_file, "--ckpt_path", ours, image, "--crop_pct", "0.5",
                         "--mode", "1", "--json", "-"))
    line = preprocessing_line(proc.stderr)
    assert "crop_pct 0.5 from the command line" in line and f"image_resize 48 from config {yaml_file}" in line
    assert f"interpolation bicubic, mean [100.0, 110.0, 120.0], std [50.0, 60.0, 70.0], in_channels 3 from " \
           f"checkpoint {ours}" in line
    assert json.loads(proc.stdout)["image_size"] == 48
    # a MindCV checkpoint stores nothing: the model's defaults (224 px, crop 0.875, ImageNet's), with -c or flags
    proc = ok(run_script("predict.py", "--model", "res2net50", "--ckpt_path", mindcv, image, "--mode", "1",
                         "--json", "-"))
    assert preprocessing_line(proc.stderr) == (
        "preprocessing from the res2net50 defaults: dataset imagenet, image_resize 224, crop_pct 0.875, "
        "interpolation bilinear, mean [0.485, 0.456, 0.406], std [0.229, 0.224, 0.225], in_channels 3")


def test_checkpoint_mistakes_are_one_clear_line(small_ckpts, tmp_path):
    ours, mindcv, data = small_ckpts
    image = os.path.join(data, "val", "ant", "0.png")
    one_error(run_script("predict.py", "--ckpt_path", mindcv, image), mindcv, "does not name its model",
              "--model")
    one_error(run_script("predict.py", "--model", "res2net101_26w_4s", "--ckpt_path", ours, image), ours,
              "holds a res2net50 model", "does not fit")
    damaged = str(tmp_path / "damaged.ckpt")
    net = create_model("res2net50", num_classes=3)
    save_checkpoint_atomic(net, damaged, extra={"model": "res2net50", "preprocessing": {"crop_pct": 7}})
    for script in ("predict.py", "export.py"):
        args = [image] if script == "predict.py" else ["--out", tmp_path / "m"]
        one_error(run_script(script, "--ckpt_path", damaged, *args), damaged, "crop_pct")
    assert not os.path.exists(tmp_path / "m.mindir")


def test_export_metadata_states_the_training_preprocessing_and_labels(small_ckpts, tmp_path):
    from mindcv_res2net.deploy.runtimes import MindirModel

    ours, _mindcv, _data = small_ckpts
    out = tmp_path / "m.mindir"
    proc = ok(run_script("export.py", "--ckpt_path", ours, "--out", out, "--device_target", "CPU"))
    assert preprocessing_line(proc.stdout).startswith(f"preprocessing from checkpoint {ours}: ")
    meta = MindirModel(str(out)).metadata
    assert meta["preprocessing"] == RECIPES["rgb"] == read_checkpoint_meta(ours)["preprocessing"]
    assert meta["input_size"] == [3, 24, 24] and (meta["crop_pct"], meta["interpolation"]) == (1.0, "bicubic")
    assert meta["mean"] == pytest.approx([100 / 255, 110 / 255, 120 / 255], rel=1e-12)
    assert meta["std"] == pytest.approx([50 / 255, 60 / 255, 70 / 255], rel=1e-12)
    assert (meta["image_mode"], meta["resize_mode"]) == ("RGB", "centre_crop")
    assert (meta["label_names"], meta["label_source"], meta["display_names"]) == (CLASSES, "training", CLASSES)
    assert "class_names" not in meta


# ------------------------------------------------------------------------------------------------
# slow: train.py -> validate.py -> predict.py -> export.py -> the exported files
# ------------------------------------------------------------------------------------------------

def json_top1(result, classes):
    """The top-1 accuracy of predict.py's JSON on a folder whose sub-folders are the classes."""
    hits = [classes.index(os.path.basename(os.path.dirname(r["file"]))) == r["predictions"][0]["index"]
            for r in result["predictions"]]
    return sum(hits) / len(hits)


@pytest.fixture(scope="module", params=sorted(RECIPES))
def trained(request, tmp_path_factory):
    """A res2net50 trained by train.py with a recipe's preprocessing: 24 steps on 12 images, enough
    for it to tell some classes apart (~75 s on 2 busy cores)."""
    recipe = request.param
    root = tmp_path_factory.mktemp(f"trained_{recipe}")
    data = make_folder(root / "data", grey=recipe == "grey")
    save = root / "ckpt"
    recipe_file = root / "recipe.yaml"
    recipe_file.write_text("".join(f"{key}: {json.dumps(value)}\n" for key, value in RECIPES[recipe].items()))
    ok(run_script("train.py", "-c", recipe_file, "--data_dir", data, "--ckpt_save_dir", save,
                  "--scale", "1.0", "1.0", "--ratio", "1.0", "1.0", "--hflip", "0", "--opt", "adam", "--lr", "0.003",
                  "--zero_init_last", "true", "--warmup_epochs", "0", "--epoch_size", "8", "--batch_size", "4",
                  "--val_while_train", "false", "--mode", "1", "--device_target", "CPU", "--num_parallel_workers", "1"))
    return recipe, data, str(save / "res2net50-8_3.ckpt"), str(recipe_file)


def _validate(*args, json_path):
    ok(run_script("validate.py", "--device_target", "CPU", "--num_parallel_workers", "1", "--batch_size", "4",
                  *args, "--json", json_path))
    with open(json_path) as fh:
        return json.load(fh)


@pytest.mark.slow
def test_trained_model_predicts_what_it_validated(trained, tmp_path):
    recipe, data, ckpt, recipe_file = trained
    keys = RECIPES[recipe]
    assert read_checkpoint_meta(ckpt)["preprocessing"] == keys  # what train.py stored
    ref = _validate("--data_dir", data, "--ckpt_path", ckpt, json_path=tmp_path / "v.json")  # no -c, no flags
    same = _validate("-c", recipe_file, "--data_dir", data, "--ckpt_path", ckpt,
                     json_path=tmp_path / "vc.json")  # with the training's YAML
    assert (same["top1"], same["top5"], same["loss"]) == (ref["top1"], ref["top5"], ref["loss"])
    assert ref["num_samples"] == 12

    val = os.path.join(data, "val")
    by_ckpt = json.loads(ok(run_script("predict.py", "--ckpt_path", ckpt, val, "--batch_size", "4", "--json",
                                       "-")).stdout)
    assert by_ckpt["preprocessing"] == keys
    assert json_top1(by_ckpt, CLASSES) == ref["top1"]
    top1_classes = [r["predictions"][0]["index"] for r in by_ckpt["predictions"]]
    assert len(set(top1_classes)) > 1  # the model learned something: the figures can tell preprocessings apart

    files = {fmt: str(tmp_path / f"m.{fmt}") for fmt in ("onnx", "mindir")}
    for fmt, path in files.items():
        ok(run_script("export.py", "--ckpt_path", ckpt, "--file_format", fmt, "--out", path))
    pytest.importorskip("onnxruntime")
    from mindcv_res2net.deploy.runtimes import MindirModel, OnnxRuntimeModel

    for model in (OnnxRuntimeModel(files["onnx"]), MindirModel(files["mindir"])):
        meta = model.metadata
        assert meta["preprocessing"] == keys, model.path  # the training preprocessing, exactly
        assert meta["input_size"] == [3, keys["image_resize"], keys["image_resize"]]
        assert (meta["crop_pct"], meta["interpolation"]) == (keys["crop_pct"], keys["interpolation"])
        assert meta["mean"] == pytest.approx([v / 255 for v in keys["mean"]], rel=1e-12)
        assert meta["image_mode"] == ("L" if recipe == "grey" else "RGB")
        assert (meta["label_names"], meta["label_source"]) == (CLASSES, "training")
    by_onnx = json.loads(ok(run_script("predict.py", "--onnx_path", files["onnx"], val, "--json", "-")).stdout)
    assert by_onnx["preprocessing"] == keys
    assert json_top1(by_onnx, CLASSES) == ref["top1"]
    assert [r["predictions"][0]["index"] for r in by_onnx["predictions"]] == top1_classes
    for with_config in ([], ["-c", recipe_file]):
        onnx = _validate("--data_dir", data, "--onnx_path", files["onnx"], *with_config, json_path=tmp_path / "o.json")
        assert (onnx["top1"], onnx["top5"]) == (ref["top1"], ref["top5"])
        assert onnx["loss"] == pytest.approx(ref["loss"], rel=1e-5)


def _nameless_checkpoint(path, num_classes):
    net = randomize_bn(create_model("res2net50", num_classes=num_classes), 11)
    net.classifier.weight.set_data(ms.Tensor(net.classifier.weight.asnumpy() * 1e-2))
    ms.save_checkpoint(net, str(path))  # as MindCV writes them: weights only
    return str(path)


@pytest.mark.slow
@pytest.mark.parametrize("num_classes,classes", [
    (3, ["ant", "bee", "cat"]),                                     # no names stored
    (1000, ["n01440764", "n01443537", "n15075141"]),               # ImageNet-size, WordNet-id folders
])
def test_checkpoint_without_names_validates_alike_from_its_export(num_classes, classes, tmp_path):
    ms.set_context(mode=ms.PYNATIVE_MODE)
    ckpt = _nameless_checkpoint(tmp_path / "mindcv.ckpt", num_classes)
    data = make_folder(tmp_path / "data", grey=False, classes=classes, per_class=2)
    onnx = str(tmp_path / "m.onnx")
    ok(run_script("export.py", "--model", "res2net50", "--ckpt_path", ckpt, "--image_size", "32", "--file_format",
                  "ONNX", "--out", onnx))
    pytest.importorskip("onnxruntime")
    common = ["--data_dir", data, "--image_resize", "32"]
    ref = _validate(*common, "--model", "res2net50", "--ckpt_path", ckpt, json_path=tmp_path / "c.json")
    got = _validate(*common, "--onnx_path", onnx, json_path=tmp_path / "o.json")
    assert (got["top1"], got["top5"], got["num_samples"]) == (ref["top1"], ref["top5"], ref["num_samples"]) \
        and ref["num_samples"] == 6
    assert got["loss"] == pytest.approx(ref["loss"], rel=1e-5)
    both = _validate(*common, "--model", "res2net50", "--ckpt_path", ckpt, "--onnx_path", onnx,
                     json_path=tmp_path / "b.json")
    assert both["results"][1]["argmax_differences"] == 0 and both["top1"] == ref["top1"]
    from mindcv_res2net.deploy.runtimes import OnnxRuntimeModel

    meta = OnnxRuntimeModel(onnx).metadata  # labels and display names apart
    if num_classes == 1000:
        assert meta["label_source"] == "imagenet" and meta["label_names"][0] == "n01440764"
        assert meta["display_names"][0] == "tench"
    else:
        assert "label_names" not in meta and meta["display_names"] == ["class_0", "class_1", "class_2"]
