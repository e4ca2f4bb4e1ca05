"""``validate.py --per_class``: the per-class report (support, recall, precision, F1), the confusion
matrix and the misclassified images, checked against numpy on per-image logits computed here by
running the same network over the same images.

Data: a 3-class image folder, 5 val images per class (15: under ``mpirun -n 2`` the ranks read 8
and 7). The checkpoint is a random res2net50 whose classifier is set from the pooled features of
one image per class, so that some images are classified right and others wrong.
"""
import csv
import importlib.util
import json
import logging
import os
import subprocess
import sys
import types

import mindspore as ms
import numpy as np
import pytest

import config
from fault.test_bad_input import assert_user_error, make_image_folder, run_script
from mindcv_res2net import create_model
from mindcv_res2net.data.transforms import EVAL_KEYS
from mindcv_res2net.evaluation import per_class
from mindcv_res2net.models.inference import optimize_for_inference
from mindcv_res2net.training import data_setup
from mindcv_res2net.weights.checkpoint_file import save_checkpoint_atomic
from test_distributed import MPIRUN, _mpi4py_ok, launch_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ["ant", "bee", "cow"]
PER_CLASS = 5
FLAGS = ["--device_target", "CPU", "--mode", "1", "--num_parallel_workers", "1", "--batch_size", "4",
         "--image_resize", "32"]
FILE_KINDS = ("per_class", "confusion_matrix", "misclassified")


def _val_batches(args):
    """The val split as validate.py reads it in one process: (list of image batches, labels)."""
    split = data_setup.build_val(args, types.SimpleNamespace(world_size=1, rank=0))
    batches, labels = [], []
    for images, batch_labels in split.loader.create_tuple_iterator(num_epochs=1, output_numpy=True):
        batches.append(images)
        labels.append(batch_labels)
    return batches, np.concatenate(labels).astype(np.int64)


def _set_prototype_classifier(net, features, labels):
    """Classifier rows from the centred features of the first image of each class, scaled so that
    the logits spread over a few units: a mix of right and wrong top-1 classes."""
    centre = features.mean(axis=0)
    weight = np.stack([features[np.flatnonzero(labels == c)[0]] - centre for c in range(len(CLASSES))])
    weight *= 3.0 / max(float(((features - centre) @ weight.T).std()), 1e-12)
    net.classifier.weight.set_data(ms.Tensor(weight.astype(np.float32)))
    net.classifier.bias.set_data(ms.Tensor((-weight @ centre).astype(np.float32)))


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """The data, the checkpoint and the reference: per-image float64 logits (the inference network
    validate.py builds, PyNative, the same batches), labels and paths in file order."""
    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_device("CPU")
    ms.set_seed(0)
    root = tmp_path_factory.mktemp("per_class")
    data = make_image_folder(str(root / "data"), classes=CLASSES, per_class=PER_CLASS, size=32)
    args = config.parse_args(["--data_dir", data] + FLAGS, script="validate")
    batches, labels = _val_batches(args)
    net = create_model("res2net50", num_classes=len(CLASSES))
    net.set_train(False)
    features = np.concatenate([net.forward_head(net.forward_features(ms.Tensor(b)), pre_logits=True).asnumpy()
                               for b in batches]).astype(np.float64)
    _set_prototype_classifier(net, features, labels)
    ckpt = str(root / "model.ckpt")
    save_checkpoint_atomic(net, ckpt, extra={"model": "res2net50", "num_classes": len(CLASSES), "class_names": CLASSES,
                                             "preprocessing": {k: getattr(args, k) for k in EVAL_KEYS}})
    fused = optimize_for_inference(net)
    logits = np.concatenate([fused(ms.Tensor(b)).asnumpy() for b in batches]).astype(np.float64)
    paths = [os.path.join(data, "val", c, f"{i}.png") for c in CLASSES for i in range(PER_CLASS)]
    assert labels.tolist() == [c for c in range(len(CLASSES)) for _ in range(PER_CLASS)]  # file order
    return types.SimpleNamespace(root=root, data=data, ckpt=ckpt, logits=logits, labels=labels, paths=paths)


def _validate(case, out, *extra, launcher=()):
    """Run validate.py (under ``launcher`` when given); the parsed JSON and the console output."""
    cmd = list(launcher) + [sys.executable, os.path.join(ROOT, "validate.py"), "--ckpt_path", case.ckpt,
                            "--data_dir", case.data, "--json", os.path.join(out, "result.json")] + FLAGS
    env = dict(launch_env(ROOT), MINDCV_RES2NET_DIST_LOG_DIR=os.path.join(out, "dist_logs"))
    proc = subprocess.run([str(c) for c in cmd + list(extra)], capture_output=True, text=True, timeout=300,
                          env=env, cwd=ROOT)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    with open(os.path.join(out, "result.json"), encoding="utf-8") as fh:
        return json.load(fh), proc.stdout


@pytest.fixture(scope="module")
def single(case):
    """One-process ``validate.py --per_class``, files next to its JSON."""
    out = str(case.root / "single")
    result, console = _validate(case, out, "--per_class")
    return types.SimpleNamespace(out=out, result=result, console=console)


def _read_csv(path):
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.reader(fh))


def _expected_figures(confusion):
    """recall / precision / F1 (None where undefined) and the macro averages over the classes with images."""
    tp, support, predicted = np.diag(confusion), confusion.sum(axis=1), confusion.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall, precision = tp / support, tp / predicted
        f1 = 2 * precision * recall / (precision + recall)
    f1 = np.where((support > 0) & (predicted > 0) & (tp == 0), 0.0, f1)
    f1 = np.where((support > 0) & (predicted == 0), 0.0, f1)
    present = support > 0
    return {"recall": recall, "precision": precision, "f1": f1, "macro_recall": recall[present].mean(),
            "macro_precision": np.nan_to_num(precision)[present].mean(), "macro_f1": f1[present].mean()}


def _approx_list(values):
    return [None if np.isnan(v) else pytest.approx(float(v), rel=1e-12) for v in values]


def test_report_equals_numpy_on_per_image_logits(case, single):
    result, report = single.result, single.result["per_class"]
    predicted = case.logits.argmax(axis=1)
    confusion = np.zeros((len(CLASSES), len(CLASSES)), np.int64)
    np.add.at(confusion, (case.labels, predicted), 1)
    wrong = np.flatnonzero(predicted != case.labels)
    assert 0 < wrong.size < len(case.labels)  # both right and wrong images: the check has teeth
    assert report["classes"] == CLASSES and report["confusion_matrix"] == confusion.tolist()
    assert sum(map(sum, report["confusion_matrix"])) == result["num_samples"] == len(case.labels)
    assert np.trace(np.array(report["confusion_matrix"])) / result["num_samples"] == result["top1"]
    assert report["support"] == [PER_CLASS] * len(CLASSES)
    expected = _expected_figures(confusion)
    for key in ("recall", "precision", "f1"):
        assert report[key] == _approx_list(expected[key]), key
    for key in ("macro_recall", "macro_precision", "macro_f1"):
        assert report[key] == pytest.approx(float(expected[key]), rel=1e-12), key
    assert report["misclassified"] == wrong.size

    rows = _read_csv(report["files"]["misclassified"])
    assert rows[0] == ["path", "true_class", "predicted_class", "confidence"]
    assert [r[:3] for r in rows[1:]] == [[case.paths[i], CLASSES[case.labels[i]], CLASSES[predicted[i]]] for i in wrong]
    shifted = np.exp(case.logits - case.logits.max(axis=1, keepdims=True))
    confidence = shifted[np.arange(len(shifted)), predicted] / shifted.sum(axis=1)
    assert [float(r[3]) for r in rows[1:]] == pytest.approx(confidence[wrong].tolist(), rel=1e-5, abs=1e-7)

    matrix = _read_csv(report["files"]["confusion_matrix"])
    assert matrix[0][1:] == CLASSES and [r[0] for r in matrix[1:]] == CLASSES
    assert [[int(x) for x in r[1:]] for r in matrix[1:]] == confusion.tolist()
    table = _read_csv(report["files"]["per_class"])
    assert table[0] == ["class", "support", "recall", "precision", "f1"]
    for c, row in enumerate(table[1:]):
        assert row[0] == CLASSES[c] and int(row[1]) == PER_CLASS
        for column, key in ((2, "recall"), (3, "precision"), (4, "f1")):
            assert (None if row[column] == "" else float(row[column])) == report[key][c]
    for kind in FILE_KINDS:
        assert report["files"][kind] == os.path.join(single.out, f"{kind}.csv")
    assert "per-class report of model.ckpt (3 classes; every class below)" in single.console
    if importlib.util.find_spec("matplotlib") is None:
        assert "confusion_matrix_png" not in report["files"]
        return
    with open(report["files"]["confusion_matrix_png"], "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_without_per_class_nothing_is_added(case, single):
    out = str(case.root / "plain")
    result, console = _validate(case, out)
    assert sorted(os.listdir(out)) == ["result.json"] and "per-class" not in console
    timing = ("seconds", "ms_per_step", "img_per_s")
    plain = {k: v for k, v in single.result.items() if k not in timing + ("per_class",)}
    assert {k: v for k, v in result.items() if k not in timing} == plain


def _csv_rows_close(mine, theirs):
    """misclassified.csv: paths and classes equal; confidences as close as the logits (a CPU network's
    float32 logits of an image change in the 6th digit with the other images of its batch)."""
    assert [r[:3] for r in mine] == [r[:3] for r in theirs]
    assert [float(r[3]) for r in mine[1:]] == pytest.approx([float(r[3]) for r in theirs[1:]], rel=1e-4, abs=1e-7)


def _without_files(report):
    return {k: v for k, v in report.items() if k != "files"}


@pytest.mark.skipif(MPIRUN is None or not _mpi4py_ok(), reason="needs OpenMPI's mpirun and mpi4py")
def test_mpirun_two_ranks_equal_one_process(case, single):
    out = str(case.root / "mpi")
    launcher = [MPIRUN] + (["--allow-run-as-root"] if os.geteuid() == 0 else []) + ["--oversubscribe", "-n", "2"]
    for key in ("PYTHONPATH", "PATH", "GLOG_v", "MINDCV_RES2NET_DIST_LOG_DIR"):
        launcher += ["-x", key]
    result, _ = _validate(case, out, "--per_class", "--per_class_dir", os.path.join(out, "report"),
                          launcher=launcher)
    assert result["ranks"] == 2 and result["num_samples"] == single.result["num_samples"]
    assert (result["top1"], result["top5"]) == (single.result["top1"], single.result["top5"])
    assert _without_files(result["per_class"]) == _without_files(single.result["per_class"])
    for kind in ("per_class", "confusion_matrix"):
        with open(result["per_class"]["files"][kind], encoding="utf-8") as mine, \
                open(single.result["per_class"]["files"][kind], encoding="utf-8") as theirs:
            assert mine.read() == theirs.read(), kind
    _csv_rows_close(_read_csv(result["per_class"]["files"]["misclassified"]),
                    _read_csv(single.result["per_class"]["files"]["misclassified"]))
    assert os.path.dirname(result["per_class"]["files"]["misclassified"]) == os.path.join(out, "report")


def _differing_cells(first, second):
    return int(np.abs(np.array(first) - np.array(second)).sum())


def test_onnx_report_equals_the_checkpoint_report(case, single):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    onnx_file = str(case.root / "model.onnx")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "export.py"), "--ckpt_path", case.ckpt, "--file_format",
                           "ONNX", "--out", onnx_file, "--device_target", "CPU"], capture_output=True, text=True,
                          timeout=300, env=launch_env(ROOT), cwd=ROOT)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    out = str(case.root / "onnx")
    result, console = _validate(case, out, "--per_class", "--onnx_path", onnx_file)
    checkpoint, exported = result["results"]
    assert checkpoint["per_class"] == result["per_class"]  # the top level: the checkpoint's figures
    assert _without_files(checkpoint["per_class"]) == _without_files(single.result["per_class"])
    for entry, suffix in ((checkpoint, "_model.ckpt"), (exported, "_model.onnx")):
        files = entry["per_class"]["files"]
        for kind in FILE_KINDS:
            assert files[kind] == os.path.join(out, f"{kind}{suffix}.csv") and os.path.isfile(files[kind])
        assert f"per-class report of {suffix[1:]}" in console
    mine, theirs = exported["per_class"], checkpoint["per_class"]
    ties = exported["ties"]
    assert exported["argmax_differences"] == 0
    assert _differing_cells(mine["confusion_matrix"], theirs["confusion_matrix"]) <= 2 * ties
    if ties == 0:
        assert _without_files(mine) == _without_files(theirs)
        _csv_rows_close(_read_csv(mine["files"]["misclassified"]), _read_csv(theirs["files"]["misclassified"]))


def test_undefined_figures_and_the_worst_classes_table(caplog):
    """A class without images has no recall, one never predicted no precision; the macro averages
    run over the classes with images; above 20 classes the console shows the 10 worst by recall."""
    confusion = np.arange(25 * 25).reshape(25, 25) % 7
    confusion[3] = 0  # no images
    confusion[:, 7] = 0  # never predicted
    names = per_class.report_class_names([f"c{i}" for i in range(22)], 25)
    assert names[21:] == ["c21", "#22", "#23", "#24"]
    report = per_class.summarise(confusion, names)
    assert report["recall"][3] is None and report["f1"][3] == 0.0
    assert report["precision"][7] is None and report["f1"][7] == 0.0
    expected = _expected_figures(confusion)
    present = [c for c in range(25) if c != 3]
    assert report["macro_recall"] == pytest.approx(float(np.mean(expected["recall"][present])), rel=1e-12)
    assert report["macro_precision"] == pytest.approx(float(expected["macro_precision"]), rel=1e-12)
    worst = sorted(present, key=lambda c: (expected["recall"][c], c))[:10]
    assert per_class.shown_classes(report) == worst
    report["misclassified"] = int(confusion.sum() - np.trace(confusion))
    with caplog.at_level("INFO", logger="per_class_test"):
        per_class.log_table(logging.getLogger("per_class_test"), "model.ckpt", report, "out")
    shown = [line.split()[0] for line in caplog.messages[2:]]
    assert "the 10 classes with the lowest recall" in caplog.messages[0] and shown == [names[c] for c in worst]
    assert per_class.file_suffixes(["a.ckpt"]) == [""]
    assert per_class.file_suffixes(["m.ckpt", "m.onnx", "m.onnx"]) == ["_m.ckpt", "_m.onnx", "_m.onnx-2"]


def test_a_file_as_per_class_dir_is_one_clear_error(case, tmp_path):
    not_a_folder = tmp_path / "report.txt"
    not_a_folder.write_text("")
    proc = run_script("validate.py", ["--ckpt_path", case.ckpt, "--data_dir", case.data, "--per_class",
                                      "--per_class_dir", not_a_folder] + FLAGS)
    assert_user_error(proc, "--per_class_dir", str(not_a_folder), "is a file")
