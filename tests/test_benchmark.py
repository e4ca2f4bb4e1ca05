"""benchmark.py, mindcv_res2net.models.flops and mindcv_res2net/benchmark/torch_models.py: correctness only, never speed.

The expected numbers are the published ones (tests/data/README.md): parameter counts,
and MACs at 224 px (convolutions + classifier) as given to three decimals in G.
Tiny settings (32 px, batch 2, 1-2 steps) keep every run short on 2 CPU cores.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARK = os.path.join(ROOT, "benchmark.py")

# model: (learnable, with BN moving statistics, MACs at 224 px in G to 3 decimals)
PUBLISHED = {
    "res2net50": (25_699_120, 25_758_612, "4.255"),
    "res2net101": (45_206_688, 45_325_748, "8.067"),
    "res2net152": (61_275_248, 61_446_868, "11.879"),
    "res2net50_26w_6s": (37_051_448, 37_123_212, "6.296"),
    "res2net50_26w_8s": (48_403_776, 48_487_812, "8.336"),
    "res2net50_48w_2s": (25_287_304, 25_342_312, "4.160"),
    "res2net50_14w_8s": (25_059_816, 25_122_612, "4.179"),
    "res2next50": (24_671_464, 24_735_912, "4.173"),
    "res2net50_v1b": (25_718_352, 25_777_972, "4.495"),
    "res2net101_v1b": (45_225_920, 45_345_108, "8.307"),
    "res2net152_v1b": (61_294_480, 61_466_228, "12.118"),
}
# DLA-60: timm's learnable counts; the official MACs are published to one decimal only
DLA_PUBLISHED = {"res2net_dla60": (20_848_072, "4.2"), "res2next_dla60": (17_032_984, "3.6")}
# published top-1 / top-5 (official release; MindCV)
PUBLISHED_TOP1 = {"res2net50": ("77.99 / 93.85", "79.35 / 94.64"), "res2net50_v1b": ("80.27 / 95.04", "80.32 / 95.09"),
                  "res2net101_v1b": ("81.23 / 95.36", "81.14 / 95.41"), "res2next_dla60": ("78.45 / 94.14", "-")}


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("MINDCV_RES2NET_DEBUG", None)
    return env


def _run(args, tmp_path, timeout=900, env=None):
    return subprocess.run([sys.executable, BENCHMARK] + list(args), cwd=str(tmp_path), env=env or _env(),
                          capture_output=True, text=True, timeout=timeout)


def _build_shapes_only(name):
    """The model with its parameter shapes but no drawn initial values (count_macs reads none)."""
    from mindspore.nn.utils import no_init_parameters

    from mindcv_res2net import create_model
    with no_init_parameters():
        return create_model(name)


# ------------------------------------------------------------------------------------------------
# count_macs
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["res2net50", "res2net50_v1b", "res2next50", "res2net50_48w_2s", "res2net101"])
def test_count_macs_matches_published(name):
    from mindcv_res2net.models.flops import count_macs
    detail = count_macs(_build_shapes_only(name), (3, 224, 224), detail=True)
    assert f"{detail['total'] / 1e9:.3f}" == PUBLISHED[name][2]
    assert detail["dense"] == 2048 * 1000
    assert detail["total"] == detail["conv"] + detail["dense"]


def test_count_macs_restores_the_network_and_mode(graph_mode):
    import mindspore as ms

    from mindcv_res2net import create_model
    from mindcv_res2net.models.flops import count_macs
    net = create_model("res2net50_48w_2s", num_classes=10)
    net.set_train(True)
    assert count_macs(net, (3, 64, 64)) > 0
    assert ms.get_context("mode") == ms.GRAPH_MODE
    assert net.training
    assert not any("construct" in vars(cell) for _, cell in net.cells_and_names())
    ms.set_context(mode=ms.PYNATIVE_MODE)
    net.set_train(False)
    x = ms.Tensor(np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32))
    out = net(x).asnumpy()
    assert out.shape == (1, 10) and np.abs(out).sum() > 0  # the real layers run again


@pytest.mark.parametrize("name,size", [("res2net_dla60", 64), ("res2net50_v1b", 65)])
def test_shape_stubs_agree_with_forward_hooks(name, size):
    """The stub's shape arithmetic = the shapes of a real forward pass (read with forward hooks);
    65 px exercises odd sizes (v1b's ceil-mode shortcut pools)."""
    from mindcv_res2net import create_model
    from mindcv_res2net.models.flops import count_macs
    net = create_model(name)
    assert count_macs(net, (3, size, size)) == count_macs(net, (3, size, size), method="hooks")


def test_conv_output_hw_matches_mindspore():
    import mindspore as ms
    from mindspore import nn

    from mindcv_res2net.models.flops import conv_output_hw
    x = ms.Tensor(np.zeros((1, 4, 17, 12), np.float32))
    convs = [
        nn.Conv2d(4, 8, 3, stride=2, pad_mode="same"),
        nn.Conv2d(4, 8, 3, stride=2, pad_mode="valid"),
        nn.Conv2d(4, 8, 7, stride=2, pad_mode="pad", padding=3),
        nn.Conv2d(4, 8, 3, stride=1, pad_mode="pad", padding=(1, 0, 2, 1), dilation=2),
        nn.Conv2d(4, 8, (3, 5), stride=(2, 3), pad_mode="pad", padding=1, group=2),
    ]
    for conv in convs:
        assert conv_output_hw(conv, 17, 12) == tuple(conv(x).shape[2:]), conv


# ------------------------------------------------------------------------------------------------
# the model table
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def table(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("table")
    proc = _run(["--table", "--json", "table.json"], tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp / "table.json") as f:
        rows = {r["model"]: r for r in json.load(f)["rows"]}
    return proc.stdout, rows


def _markdown_row(stdout, name):
    for line in stdout.splitlines():
        if line.startswith(f"| `{name}`"):
            return [c.strip() for c in line.strip().strip("|").split("|")]
    raise AssertionError(f"{name} missing from the table:\n{stdout}")


def test_table_lists_every_model_with_published_counts(table):
    from mindcv_res2net import list_models
    stdout, rows = table
    models = list_models(include_aliases=False)
    assert sorted(rows) == sorted(models)
    for name in models:
        cells = _markdown_row(stdout, name)
        if name in PUBLISHED:
            learnable, total, macs = PUBLISHED[name]
            assert rows[name]["params"] == learnable
            assert rows[name]["params_with_bn_stats"] == total
            assert cells[1] == f"{learnable / 1e6:.2f}" and cells[2] == f"{total / 1e6:.2f}"
            assert cells[3] == macs
        else:
            learnable, macs = DLA_PUBLISHED[name]
            assert rows[name]["params"] == learnable
            assert cells[1] == f"{learnable / 1e6:.2f}"
    # aliases are shown next to their model, never as rows of their own
    assert "(`res2net50d`)" in _markdown_row(stdout, "res2net50_v1b")[0]
    assert not any(line.startswith("| `res2net50d`") for line in stdout.splitlines())
    # MindCV's "Params" column (BN moving statistics included)
    assert [_markdown_row(stdout, n)[2] for n in ("res2net50", "res2net101", "res2net101_v1b")] == \
        ["25.76", "45.33", "45.35"]


def test_table_dla_macs_and_published_accuracy(table):
    stdout, rows = table
    # the official Res2Net-DLA-60 figure counts the official file's unused `project` convs too
    official = rows["res2net_dla60"]["macs_224_with_unused_project"]
    assert f"{official / 1e9:.1f}" == DLA_PUBLISHED["res2net_dla60"][1]
    assert rows["res2net_dla60"]["macs_224"] < official
    nxt = rows["res2next_dla60"]["macs_224_with_unused_project"] / 1e9
    assert abs(nxt - 3.6) / 3.6 < 0.025  # published to one decimal as 3.6
    for name, (official_acc, mindcv_acc) in PUBLISHED_TOP1.items():
        cells = _markdown_row(stdout, name)
        assert cells[4] == official_acc and cells[5] == mindcv_acc
    assert _markdown_row(stdout, "res2net152")[4:] == ["-", "-"]


# ------------------------------------------------------------------------------------------------
# speed runs (tiny: the numbers are not checked, only that the run completes and reports)
# ------------------------------------------------------------------------------------------------

_RESULT_FIELDS = ("implementation", "available", "images_per_sec", "ms_per_step", "ms_per_step_min",
                  "ms_per_step_max", "times_ms", "cpu_ms_per_step", "compile_s", "build_s", "rss_growth_mb",
                  "peak_rss_mb", "device_peak_mb", "precision")


@pytest.mark.slow
def test_train_run_writes_json(tmp_path):
    proc = _run(["--task", "train", "--image_size", "32", "--batch_size", "2", "--steps", "1", "--warmup", "1",
                 "--json", "out.json"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / "out.json") as f:
        report = json.load(f)
    for key in ("task", "model", "batch_size", "image_size", "mode", "amp_level", "device_target", "steps",
                "warmup", "results", "ratios", "peak_rss_mb", "environment", "macs_per_image", "command"):
        assert key in report, key
    assert (report["task"], report["model"], report["batch_size"], report["image_size"], report["mode"]) == \
        ("train", "res2net50", 2, 32, 0)
    ours = report["results"]["ours"]
    for key in _RESULT_FIELDS:
        assert key in ours, key
    assert ours["available"] and len(ours["times_ms"]) == 1
    assert ours["images_per_sec"] > 0 and ours["compile_s"] > 0 and ours["peak_rss_mb"] > 0
    assert report["environment"]["mindspore"]
    assert "| ours |" in proc.stdout
    assert report["macs_per_image"] == 88_846_336  # res2net50 at 32 px, from count_macs


@pytest.mark.slow
def test_compare_mindcv_reports_a_ratio(tmp_path):
    pytest.importorskip("mindcv")
    proc = _run(["--task", "infer", "--mode", "1", "--image_size", "32", "--batch_size", "2", "--steps", "2",
                 "--warmup", "0", "--compare", "mindcv,timm", "--json", "out.json"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / "out.json") as f:
        report = json.load(f)
    results = report["results"]
    assert results["mindcv"]["available"] and len(results["mindcv"]["times_ms"]) == 2
    assert report["ratios"]["ours/mindcv"] == pytest.approx(
        results["ours"]["images_per_sec"] / results["mindcv"]["images_per_sec"])
    assert "ours/mindcv" in proc.stdout
    try:
        import timm  # noqa: F401
    except Exception:  # noqa: BLE001
        # timm needs torchvision: the torch.nn reference is measured in its place, with a note
        if "torch" in results:
            assert any("timm" in n for n in report["notes"])
            assert results["torch"].get("available") or "reason" in results["torch"]
    if results.get("ours_optimized", {}).get("available"):
        assert "ours_optimized/mindcv" in report["ratios"]


def _printed(stdout, name):
    """The img/s cell of ``name``'s row and the printed ratios {name: text} of a speed run."""
    row = next(line for line in stdout.splitlines() if line.startswith(f"| {name} |"))
    ratio_line = next(line for line in stdout.splitlines() if line.startswith("img/s ratios"))
    ratios = dict(part.split(" = ") for part in ratio_line.split(": ", 1)[1].split(", "))
    return row.split("|")[2].strip(), ratios


def test_compare_onnxruntime_row_and_ratios(tmp_path):
    """Our model exported to ONNX (variable batch) and run by onnxruntime is a row of the same run,
    with MindSpore's thread count, and its ratios agree with the img/s figures (JSON and printed)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    env = dict(_env(), TMPDIR=str(tmp_path))  # the temporary ONNX file must not be left behind
    proc = _run(["--task", "infer", "--mode", "1", "--image_size", "32", "--batch_size", "2", "--steps", "2",
                 "--warmup", "0", "--compare", "onnxruntime", "--json", "out.json"], tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / "out.json") as f:
        report = json.load(f)
    results, ratios = report["results"], report["ratios"]
    ort = results["onnxruntime"]
    assert ort["available"] and len(ort["times_ms"]) == 2 and ort["images_per_sec"] > 0
    assert "onnxruntime" in ort["implementation"] and report["environment"]["onnxruntime"]
    threads = [n for n in ort["notes"] if "intra-op threads" in n]
    assert threads and "variable batch" in threads[0]
    used, mindspore_threads = threads[0].split("intra-op threads: ")[1].split(" (MindSpore's runtime_num_threads: ")
    assert used == mindspore_threads.rstrip(")")  # onnxruntime runs on as many threads as MindSpore
    for other in ("ours", "ours_optimized"):
        assert ratios[f"onnxruntime/{other}"] == pytest.approx(ort["images_per_sec"] / results[other]["images_per_sec"])
    assert "ours/onnxruntime" not in ratios
    printed_ips, printed_ratios = _printed(proc.stdout, "onnxruntime")
    assert printed_ips == f"{ort['images_per_sec']:.2f}"
    ours_ips = float(_printed(proc.stdout, "ours")[0])
    assert printed_ratios["onnxruntime/ours"] == f"{ratios['onnxruntime/ours']:.2f}"
    assert float(printed_ratios["onnxruntime/ours"]) == pytest.approx(float(printed_ips) / ours_ips, rel=0.02, abs=0.01)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(("r2bench", ".export_tmp"))]


def test_onnxruntime_ratios_to_mindcv_and_ours():
    """A deployed row is compared with every reference and with each of ours (never the reverse)."""
    from mindcv_res2net.benchmark.speed import _ratios
    ips = {"ours": 10.0, "ours_optimized": 15.0, "mindcv": 8.0, "torch": 12.0, "onnxruntime": 24.0}
    ratios = _ratios({name: {"images_per_sec": v} for name, v in ips.items()})
    assert ratios["onnxruntime/mindcv"] == 3.0 and ratios["onnxruntime/torch"] == 2.0
    assert ratios["onnxruntime/ours"] == 2.4 and ratios["onnxruntime/ours_optimized"] == 1.6
    assert ratios["ours/mindcv"] == 1.25 and ratios["ours_optimized/ours"] == 1.5
    assert not any(k.endswith("/onnxruntime") for k in ratios)


def test_onnxruntime_missing_is_reported_unavailable(tmp_path):
    """Without onnxruntime (hidden in a subprocess) the row is 'not available' with the reason and
    the install command; the other implementations are measured as usual."""
    code = (
        "import json, sys\n"
        "sys.modules['onnxruntime'] = None  # import onnxruntime now fails as if it were not installed\n"
        "import benchmark\n"
        "args = benchmark.build_parser().parse_args(sys.argv[1:])\n"
        "args.argv = sys.argv[1:]\n"
        "benchmark._validate(args)\n"
        "runners, unavailable = benchmark.make_runners(args, [])\n"
        "print(json.dumps({'names': [r.name for r in runners], 'unavailable': unavailable}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, "--task", "infer", "--compare", "onnxruntime"],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["names"] == ["ours", "ours_optimized"]
    reason = out["unavailable"]["onnxruntime"]
    assert "onnxruntime is not installed" in reason and "pip install" in reason and "\n" not in reason

    from mindcv_res2net.benchmark.speed import speed_markdown
    report = {"results": {"onnxruntime": {"available": False, "reason": reason}}, "ratios": {},
              "peak_rss_mb": 1.0, "notes": []}
    assert f"| onnxruntime | not available: {reason} |" in speed_markdown(report)


def test_train_with_adamw(tmp_path):
    """--opt adamw: our fused AdamW in TrainStep, torch.optim.AdamW for the PyTorch reference."""
    argv = ["--task", "train", "--mode", "1", "--image_size", "32", "--batch_size", "2", "--steps", "1",
            "--warmup", "0", "--opt", "adamw", "--json", "out.json"]
    try:
        import torch  # noqa: F401
        argv += ["--compare", "torch"]
    except ImportError:
        pass
    proc = _run(argv, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / "out.json") as f:
        report = json.load(f)
    assert report["optimizer"] == "adamw" and "optimizer adamw" in proc.stdout
    assert all(r["available"] for r in report["results"].values()), report["results"]


def _bench_args(argv):
    import benchmark
    args = benchmark.build_parser().parse_args(argv)
    args.argv = list(argv)
    benchmark._validate(args)
    return benchmark, args


def test_unavailable_reference_is_reported():
    """MindCV has no Res2NeXt: the reference is listed as not available (with the reason), and
    timm without torchvision falls back to the torch.nn reference with a note."""
    pytest.importorskip("mindcv")
    benchmark, args = _bench_args(["--model", "res2next50", "--task", "infer", "--compare", "mindcv,timm,torch"])
    notes = []
    runners, unavailable = benchmark.make_runners(args, notes)
    names = [r.name for r in runners]
    assert names[0] == "ours" and "mindcv" not in names
    assert "res2next50" in unavailable["mindcv"]
    try:
        import timm  # noqa: F401
        assert "timm" in names or "timm" in unavailable
    except Exception:  # noqa: BLE001 -- timm needs torchvision
        assert names.count("torch") + ("torch" in unavailable) == 1 and "timm" not in names
        assert any("timm" in n for n in notes)


def test_data_task(tmp_path):
    proc = _run(["--task", "data", "--image_size", "32", "--batch_size", "2", "--steps", "2", "--warmup", "1",
                 "--num_images", "6", "--workers", "1,2", "--json", "d.json"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / "d.json") as f:
        report = json.load(f)
    if not report["available"]:
        pytest.skip(report["reason"])
    assert sorted(report["workers"]) == ["1", "2"]
    for res in report["workers"].values():
        assert res["images_per_sec"] > 0 and res["n_images"] >= 4
    assert not [p for p in os.listdir(tmp_path) if p.startswith("r2bench")]


# ------------------------------------------------------------------------------------------------
# user errors: one line, exit status 2
# ------------------------------------------------------------------------------------------------

def test_unknown_model_exits_2_with_one_line(tmp_path):
    proc = _run(["--model", "res2net5"], tmp_path, timeout=300)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: unknown model 'res2net5'"), proc.stderr
    assert "res2net50" in lines[0]  # a suggestion
    assert "Traceback" not in proc.stderr + proc.stdout


@pytest.mark.parametrize("argv,words", [
    (["--batch_size", "0"], ["batch_size"]),
    (["--steps", "0"], ["steps"]),
    (["--compare", "tf"], ["--compare", "tf"]),
    (["--model", "res2net_dla60", "--image_size", "48"], ["multiple of 32"]),
    (["--amp_level", "O5"], ["amp_level"]),
    (["--mode", "3"], ["mode"]),
    (["--task", "data", "--compare", "mindcv"], ["--compare"]),
    (["--compare", "onnxruntime"], ["onnxruntime", "--task infer"]),
    (["--opt", "lars"], ["--opt", "lars"]),
    (["--task", "fit"], ["--task"]),
])
def test_user_errors(argv, words):
    import benchmark

    from mindcv_res2net.errors import UserError
    with pytest.raises(UserError) as info:
        benchmark.main(argv)
    for word in words:
        assert word in str(info.value)


# ------------------------------------------------------------------------------------------------
# the torch.nn reference used by --compare torch
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["res2net50_v1b", "res2next50", "res2next_dla60"])
def test_bench_torch_matches_the_functional_reference(name):
    torch = pytest.importorskip("torch")
    import torch_reference as ref

    from mindcv_res2net.benchmark.torch_models import create_torch_model
    model = create_torch_model(name)
    state = ref.make_state_dict(name, layout="timm")
    model.load_state_dict(state, strict=True)  # the official / timm keys and shapes
    assert sum(p.numel() for p in model.parameters()) == ref.count_learnable(state)
    model.eval()
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32))
    with torch.no_grad():
        np.testing.assert_allclose(model(x).numpy(), ref.forward(name, state, x).numpy(), rtol=1e-4, atol=1e-4)
