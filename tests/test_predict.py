"""predict.py: image modes decode correctly, unreadable files are skipped with a warning, the
predictions equal the model run directly on the same preprocessing, user errors exit 2."""
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import mindspore as ms

from mindcv_res2net.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import predict as predict_script  # noqa: E402  (the top-level predict.py)
from mindcv_res2net.deploy import prediction  # noqa: E402
from helpers import randomize_bn  # noqa: E402

CLASS_NAMES = [f"thing {i}" for i in range(10)]


def rgb(rng, h=40, w=56):
    # smooth content (JPEG-friendly) plus noise, so that images differ
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 255 / (h + w)], -1)
    return np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


def exif_bytes(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


@pytest.fixture(scope="module")
def preprocessor():
    from mindcv_res2net.data.transforms import EvalPreprocessing

    return prediction.Preprocessor(EvalPreprocessing(image_resize=32, crop_pct=0.875, interpolation="bilinear"))


# ------------------------------------------------------------------------------------------------
# decoding
# ------------------------------------------------------------------------------------------------

def test_image_modes_decode(preprocessor, tmp_path):
    rng = np.random.default_rng(0)
    arr = rgb(rng)
    h, w = arr.shape[:2]
    cases = {}

    Image.fromarray(arr).save(tmp_path / "rgb.png")
    cases["rgb.png"] = arr
    rgba = np.dstack([arr, rng.integers(0, 256, (h, w), dtype=np.uint8)])
    Image.frombytes("RGBA", (w, h), rgba.tobytes()).save(tmp_path / "rgba.png")
    cases["rgba.png"] = arr  # alpha dropped
    grey = arr[:, :, 0].copy()
    Image.frombytes("L", (w, h), grey.tobytes()).save(tmp_path / "l.png")
    cases["l.png"] = np.repeat(grey[:, :, None], 3, 2)
    la = np.dstack([grey, np.full_like(grey, 7)])
    Image.frombytes("LA", (w, h), la.tobytes()).save(tmp_path / "la.png")
    cases["la.png"] = np.repeat(grey[:, :, None], 3, 2)
    palette = rng.integers(0, 256, (256, 3), dtype=np.uint8)
    index = rng.integers(0, 256, (h, w), dtype=np.uint8)
    pimg = Image.frombytes("P", (w, h), index.tobytes())
    pimg.putpalette(palette.reshape(-1).tolist())
    pimg.save(tmp_path / "p.png")
    cases["p.png"] = palette[index]
    deep = rng.integers(0, 65536, (h, w)).astype("<u2")
    Image.frombytes("I;16", (w, h), deep.tobytes()).save(tmp_path / "i16.png")
    cases["i16.png"] = np.repeat((deep >> 8).astype(np.uint8)[:, :, None], 3, 2)
    # CMYK: pure inks, whose RGB is unambiguous (white, cyan, magenta, yellow, black)
    inks = np.array([[0, 0, 0, 0], [255, 0, 0, 0], [0, 255, 0, 0], [0, 0, 255, 0], [0, 0, 0, 255]], np.uint8)
    expect = np.array([[255, 255, 255], [0, 255, 255], [255, 0, 255], [255, 255, 0], [0, 0, 0]], np.uint8)
    pick = rng.integers(0, 5, (h, w))
    Image.frombytes("CMYK", (w, h), inks[pick].tobytes()).save(tmp_path / "cmyk.tif")
    cases["cmyk.tif"] = expect[pick]
    # EXIF orientation 6 (stored image to be turned 90 degrees clockwise) and 3 (180)
    Image.fromarray(arr).save(tmp_path / "exif6.png", exif=exif_bytes(6))
    cases["exif6.png"] = np.rot90(arr, -1)
    Image.fromarray(arr).save(tmp_path / "exif3.png", exif=exif_bytes(3))
    cases["exif3.png"] = np.rot90(arr, 2)

    for name, expected in cases.items():
        got = preprocessor.load(str(tmp_path / name))
        assert got.dtype == np.uint8 and got.shape == expected.shape, name
        np.testing.assert_array_equal(got, expected, err_msg=name)
        chw, reason = preprocessor(str(tmp_path / name))
        assert reason is None and chw.shape == (3, 32, 32) and chw.dtype == np.float32, name


def test_jpeg_exif_and_cmyk(preprocessor, tmp_path):
    rng = np.random.default_rng(1)
    arr = rgb(rng)
    Image.fromarray(arr).save(tmp_path / "plain.jpg", quality=95)
    Image.fromarray(arr).save(tmp_path / "rot.jpg", quality=95, exif=exif_bytes(6))
    with Image.open(tmp_path / "plain.jpg") as im:
        stored = np.asarray(im.convert("RGB"))
    rotated = preprocessor.load(str(tmp_path / "rot.jpg"))
    assert rotated.shape == (arr.shape[1], arr.shape[0], 3)
    # the same JPEG data, decoded and turned: equal up to the JPEG decoder's rounding
    assert np.abs(rotated.astype(int) - np.rot90(stored, -1).astype(int)).max() <= 2
    plain = preprocessor.load(str(tmp_path / "plain.jpg"))
    assert np.abs(plain.astype(int) - stored.astype(int)).max() <= 2
    # a CMYK JPEG decodes to RGB
    cmyk = Image.fromarray(arr).convert("CMYK")
    cmyk.save(tmp_path / "cmyk.jpg", quality=95)
    got = preprocessor.load(str(tmp_path / "cmyk.jpg"))
    assert got.shape == arr.shape
    assert np.abs(got.astype(int) - arr.astype(int)).mean() < 6


def test_unreadable_files(preprocessor, tmp_path):
    buf = io.BytesIO()
    Image.fromarray(rgb(np.random.default_rng(2))).save(buf, "JPEG")
    (tmp_path / "truncated.jpg").write_bytes(buf.getvalue()[:200])
    (tmp_path / "noise.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    for name in ("truncated.jpg", "noise.png", "empty.jpg", "text.jpg"):
        array, reason = preprocessor(str(tmp_path / name))
        assert array is None and reason, name


def test_collect_images(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for rel in ("a/1.JPG", "a/b/2.png", "a/notes.txt", "a/b/.hidden.png", "loose.dat"):
        (tmp_path / rel).write_bytes(b"x")
    found = prediction.collect_images([str(tmp_path / "a"), str(tmp_path / "loose.dat")])
    assert [os.path.relpath(p, tmp_path) for p in found] == ["a/1.JPG", os.path.join("a", "b", "2.png"),
                                                             "loose.dat"]
    with pytest.raises(UserError, match="not found"):
        prediction.collect_images([str(tmp_path / "missing.jpg")])


def test_collect_images_ends_on_symlink_cycles(tmp_path):
    """Links back up the tree (two per level: os.walk with followlinks=True went 2^depth deep until
    the kernel's link limit) and two links to one folder: each image once, in a fraction of a second.
    Run in a subprocess so that a regression fails on the timeout instead of hanging the suite."""
    top = tmp_path / "photos"
    (top / "a" / "b").mkdir(parents=True)
    (top / "other").mkdir()
    for rel in ("top.png", "a/one.jpg", "a/b/two.png", "other/three.png"):
        (top / rel).write_bytes(b"x")
    os.symlink(top, top / "a" / "b" / "up_top")
    os.symlink(top / "a", top / "a" / "b" / "up_a")
    os.symlink("..", top / "a" / "parent")
    os.symlink(top / "other", top / "a" / "other_link")  # a second way into "other"
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); "
            "from mindcv_res2net.deploy import prediction; print(json.dumps(prediction.collect_images([sys.argv[2]])))")
    proc = subprocess.run([sys.executable, "-c", code, ROOT, str(top)], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = json.loads(proc.stdout)
    real = sorted(os.path.relpath(os.path.realpath(p), top) for p in found)
    assert real == ["a/b/two.png", "a/one.jpg", "other/three.png", "top.png"], found
    assert os.path.join(str(top), "top.png") in found and os.path.join(str(top), "a", "one.jpg") in found


# ------------------------------------------------------------------------------------------------
# predictions
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A fine-tuned-style res2net50 checkpoint (10 classes, class names stored) and an image folder
    with one unreadable file."""
    from mindcv_res2net.weights.checkpoint_file import save_checkpoint_atomic
    from mindcv_res2net.models.factory import create_model

    ms.set_context(mode=ms.PYNATIVE_MODE)
    root = tmp_path_factory.mktemp("predict")
    net = randomize_bn(create_model("res2net50", num_classes=10))
    rng = np.random.default_rng(3)
    net.classifier.weight.set_data(ms.Tensor(rng.normal(0, 0.5, (10, 2048)).astype(np.float32)))
    net.set_train(False)
    ckpt = str(root / "r50.ckpt")
    save_checkpoint_atomic(net, ckpt, extra={"class_names": CLASS_NAMES, "num_classes": 10, "model": "res2net50"})
    images = root / "images"
    (images / "sub").mkdir(parents=True)
    Image.fromarray(rgb(rng, 48, 64)).save(images / "a.jpg", quality=95)
    Image.fromarray(rgb(rng, 64, 40)).convert("RGBA").save(images / "b.png")
    Image.fromarray(rgb(rng)).convert("P").save(images / "sub" / "c.png")
    Image.fromarray(rgb(rng)).save(images / "sub" / "d.png", exif=exif_bytes(8))
    Image.fromarray(rgb(rng)[:, :, 1]).save(images / "sub" / "e.bmp")
    (images / "sub" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (images / "readme.txt").write_text("not an image, not looked at")
    return net, ckpt, images


def reference_predictions(net, paths, size=32, crop_pct=0.875, k=3):
    """Pillow decoding + MindSpore's resize / centre crop + numpy normalisation, the original
    (not optimised) network, numpy softmax."""
    import mindspore.dataset.vision as vision
    from PIL import ImageOps

    mean = np.array([0.485, 0.456, 0.406]) * 255
    std = np.array([0.229, 0.224, 0.225]) * 255
    batch = []
    for path in paths:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            img = np.asarray(im.convert("RGBA").convert("RGB") if im.mode == "P" else im.convert("RGB"))
        img = vision.Resize(int(size / crop_pct), vision.Inter.BILINEAR)(img)
        img = vision.CenterCrop(size)(img)
        batch.append(((img.astype(np.float32) - mean) / std).transpose(2, 0, 1).astype(np.float32))
    logits = net(ms.Tensor(np.stack(batch))).asnumpy().astype(np.float64)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    return probs


def test_predictions_match_direct_run(setup, tmp_path, capsys):
    net, ckpt, images = setup
    out = tmp_path / "preds.json"
    code = predict_script.main(["--model", "res2net50", "--ckpt_path", ckpt, str(images), "--image_size", "32",
                                "--topk", "3", "--batch_size", "2", "--mode", "1", "--json", str(out)])
    assert code == 0
    captured = capsys.readouterr()
    assert "broken.jpg" in captured.err and "warning" in captured.err
    result = json.loads(out.read_text())
    files = [rec["file"] for rec in result["predictions"]]
    assert [os.path.relpath(f, images) for f in files] == ["a.jpg", "b.png", os.path.join("sub", "c.png"),
                                                           os.path.join("sub", "d.png"),
                                                           os.path.join("sub", "e.bmp")]
    assert [s["file"] for s in result["skipped"]] == [str(images / "sub" / "broken.jpg")]
    probs = reference_predictions(net, files)
    for rec, row in zip(result["predictions"], probs):
        order = np.argsort(-row)[:3]
        preds = rec["predictions"]
        assert [p["index"] for p in preds][:1] == [int(order[0])]  # same top-1
        assert [p["class"] for p in preds] == [CLASS_NAMES[p["index"]] for p in preds]  # checkpoint's names
        for p in preds:
            assert abs(p["probability"] - row[p["index"]]) < 2e-3
        assert [p["rank"] for p in preds] == [1, 2, 3]
    table = captured.out
    assert "rank" in table and "thing" in table and files[0] in table


def test_mindcv_checkpoint_is_fed_as_before(setup, tmp_path):
    """A checkpoint without metadata (MindCV's) names no preprocessing: predict.py feeds the model
    its own defaults (224 px, crop 0.875, ImageNet mean / std), as it always has."""
    net, _ckpt, images = setup
    mindcv = str(tmp_path / "mindcv.ckpt")
    ms.save_checkpoint(net, mindcv)
    out = tmp_path / "preds.json"
    assert predict_script.main(["--model", "res2net50", "--ckpt_path", mindcv, str(images / "sub"), "--topk", "3",
                                "--mode", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["image_size"] == 224
    assert result["preprocessing"] == {"dataset": "imagenet", "image_resize": 224, "crop_pct": 0.875,
                                       "interpolation": "bilinear", "mean": [0.485, 0.456, 0.406],
                                       "std": [0.229, 0.224, 0.225], "in_channels": 3}
    files = [rec["file"] for rec in result["predictions"]]
    probs = reference_predictions(net, files, size=224, crop_pct=0.875)
    for rec, row in zip(result["predictions"], probs):
        assert rec["predictions"][0]["index"] == int(np.argmax(row))
        assert [p["class"] for p in rec["predictions"]] == [f"class_{p['index']}" for p in rec["predictions"]]
        for p in rec["predictions"]:
            assert abs(p["probability"] - row[p["index"]]) < 2e-3


def test_imagenet_names_and_class_names_file(tmp_path):
    from mindcv_res2net.deploy.class_names import imagenet_class_names, resolve_class_names

    names = imagenet_class_names()
    assert len(names) == 1000 and len(set(names)) == 1000
    assert names[0] == "tench" and names[1] == "goldfish" and names[281] == "tabby" and names[999] == "toilet tissue"
    assert resolve_class_names(1000) == names
    assert resolve_class_names(3) == ["class_0", "class_1", "class_2"]
    f = tmp_path / "names.txt"
    f.write_text("cat\n\ndog\n# comment\nbird\n")
    assert resolve_class_names(3, class_names_file=str(f)) == ["cat", "dog", "bird"]
    with pytest.raises(UserError, match="3 names"):
        resolve_class_names(4, class_names_file=str(f))


def run_script(*args):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("MINDCV_RES2NET_DEBUG", None)
    return subprocess.run([sys.executable, os.path.join(ROOT, "predict.py"), *args], capture_output=True,
                          text=True, env=env, timeout=600)


def test_cli_table_json_stdout_and_class_names(setup, tmp_path):
    net, ckpt, images = setup
    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"label-{i}" for i in range(10)) + "\n")
    proc = run_script("--model", "res2net50", "--ckpt_path", ckpt, str(images / "a.jpg"), str(images / "sub"),
                      "--image_size", "32", "--topk", "2", "--class_names", str(names), "--json", "-")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)  # only JSON on stdout
    assert len(result["predictions"]) == 4 and result["topk"] == 2
    assert all(p["class"].startswith("label-") for rec in result["predictions"] for p in rec["predictions"])
    assert "broken.jpg" in proc.stderr


@pytest.mark.parametrize("args,message", [
    (["--model", "res2net_dla60", "--ckpt_path", "{ckpt}", "{images}"], "does not fit"),  # another architecture
    (["--model", "res2net50", "--ckpt_path", "{ckpt}", "{images}/readme.txt"], "could be read"),
    (["--model", "res2net50", "{images}"], "no weights"),
    (["--model", "res2net50", "--pretrained", "{images}/nothing-here.jpg"], "not found"),
    (["--model", "res2net50", "--ckpt_path", "{ckpt}", "{images}", "--class_names", "{images}/readme.txt"],
     "names"),
])
def test_cli_user_errors(setup, args, message):
    net, ckpt, images = setup
    proc = run_script(*[a.format(ckpt=ckpt, images=images) for a in args])
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], proc.stderr[-3000:]


def test_predict_top1_equals_validate_top1(setup, tmp_path):
    """predict.py and validate.py preprocess and classify alike: images filed under predict.py's own
    top-1 class (and every 4th under another class) give validate.py a top-1 of exactly 9 / 12."""
    _net, ckpt, _images = setup
    rng = np.random.default_rng(11)
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(12):
        Image.fromarray(rgb(rng, 36 + 3 * i, 60 - 2 * i)).save(flat / f"img{i:02d}.png")
    out = tmp_path / "preds.json"
    assert predict_script.main(["--model", "res2net50", "--ckpt_path", ckpt, str(flat), "--image_size", "32",
                                "--crop_pct", "0.875", "--mode", "1", "--json", str(out)]) == 0
    preds = {os.path.basename(r["file"]): r["predictions"][0]["index"]
             for r in json.loads(out.read_text())["predictions"]}
    assert len(preds) == 12
    classes = [f"class_{c:02d}" for c in range(10)]
    (tmp_path / "classes.txt").write_text("\n".join(classes) + "\n")
    for i, (name, pred) in enumerate(sorted(preds.items())):
        label = pred if i % 4 else (pred + 1) % 10
        folder = tmp_path / "data" / "val" / classes[label]
        folder.mkdir(parents=True, exist_ok=True)
        (flat / name).rename(folder / name)
    result = tmp_path / "val.json"
    env = dict(os.environ, PYTHONPATH=ROOT, GLOG_v="3")
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "validate.py"), "--model", "res2net50", "--ckpt_path", ckpt,
         "--num_classes", "10", "--data_dir", str(tmp_path / "data"), "--class_list", str(tmp_path / "classes.txt"),
         "--image_resize", "32", "--crop_pct", "0.875", "--interpolation", "bilinear", "--batch_size", "5",
         "--num_parallel_workers", "1", "--mode", "1", "--device_target", "CPU", "--json", str(result)],
        capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    metrics = json.loads(result.read_text())
    assert metrics["num_samples"] == 12
    assert metrics["top1"] == pytest.approx(9 / 12, abs=1e-12)
