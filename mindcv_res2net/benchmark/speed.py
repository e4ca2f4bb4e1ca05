"""``--task train`` / ``--task infer``: every implementation is built, called once (timed as
``compile_s``), warmed up, then timed over ``--steps`` rounds in an order rotated from round to
round, after an untimed ``--settle_ms`` pause, so that a slow-down of the machine hits all alike.
"""
import contextlib
import statistics
import time

from ..models.flops import count_macs
from ..models.factory import create_model
from .common import (current_rss_mb, environment, fmt, ms_device_memory, no_init_parameters, peak_rss_mb,
                     setup_mindspore)
from .settings import command
from .runners import DEPLOYED, MindSporeRunner, Unavailable, make_runners


def _summary(runner, batch_size):
    times = runner.times
    median = statistics.median(times)
    out = {
        "implementation": runner.implementation, "available": True, "precision": runner.precision,
        "images_per_sec": batch_size / median if median > 0 else float("inf"),
        "ms_per_step": median * 1e3, "ms_per_step_min": min(times) * 1e3,
        "ms_per_step_mean": statistics.fmean(times) * 1e3, "ms_per_step_max": max(times) * 1e3,
        "times_ms": [t * 1e3 for t in times],
        "cpu_ms_per_step": statistics.median(runner.cpu_times) * 1e3,
        "compile_s": runner.compile_s, "build_s": runner.build_s,
        "rss_growth_mb": runner.rss_growth_mb, "peak_rss_mb": runner.peak_rss_mb,
        "device_peak_mb": runner.device_peak_mb,
    }
    if runner.notes:
        out["notes"] = list(runner.notes)
    return out


def measure(runners, args, unavailable, log=print):
    """Set up, compile and warm up each runner, then alternate them over ``args.steps`` rounds."""
    ms_mem = ms_device_memory() if args.device_target != "CPU" else None
    ready = []
    for runner in runners:
        rss0 = current_rss_mb()
        start = time.perf_counter()
        try:
            runner.setup()
        except Unavailable as exc:
            if runner.name == "ours":
                raise
            unavailable[runner.name] = str(exc)
            continue
        runner.build_s = time.perf_counter() - start
        if ms_mem is not None and isinstance(runner, MindSporeRunner):
            with contextlib.suppress(Exception):
                ms_mem[0]()
        start = time.perf_counter()
        runner.step()
        runner.compile_s = time.perf_counter() - start
        for _ in range(args.warmup):
            runner.step()
        runner.rss_growth_mb = current_rss_mb() - rss0
        runner.peak_rss_mb = peak_rss_mb()
        runner.device_peak_mb = runner.device_memory()
        if runner.device_peak_mb is None and ms_mem is not None and isinstance(runner, MindSporeRunner):
            with contextlib.suppress(Exception):
                runner.device_peak_mb = ms_mem[1]()
        runner.times, runner.cpu_times = [], []
        ready.append(runner)
        log(f"  {runner.name}: built in {runner.build_s:.1f} s, first call {runner.compile_s:.1f} s, "
            f"{args.warmup} warm-up call(s) done")
    settle = max(0.0, float(args.settle_ms)) / 1e3
    for i in range(args.steps):
        k = i % len(ready)
        for runner in ready[k:] + ready[:k]:
            if settle:
                time.sleep(settle)
            cpu0, start = time.process_time(), time.perf_counter()
            runner.step()
            runner.times.append(time.perf_counter() - start)
            runner.cpu_times.append(time.process_time() - cpu0)
    return {r.name: _summary(r, args.batch_size) for r in ready}


def _ratios(results):
    """img/s ratios: each ``ours*`` row to each reference, ``ours_optimized/ours`` and
    ``ours_frozen<K>/ours``, and each
    deployed row (our model in another runtime: ``onnxruntime``, ``onnxruntime_int8``) to each reference,
    ``ours*`` and the other deployed rows (``onnxruntime_int8/onnxruntime``)."""
    def ratio(a, b):
        return results[a]["images_per_sec"] / results[b]["images_per_sec"]

    ratios = {}
    ours = [n for n in results if n.startswith("ours")]
    deployed = [n for n in results if n in DEPLOYED]
    refs = [n for n in results if n not in ours and n not in deployed]
    for a in ours:
        for b in refs:
            ratios[f"{a}/{b}"] = ratio(a, b)
    for variant in [n for n in ours if n != "ours"]:  # ours_optimized, ours_frozen<K>: against ours
        if "ours" in results:
            ratios[f"{variant}/ours"] = ratio(variant, "ours")
    for a in deployed:
        for b in refs + ours + [d for d in deployed if d != a]:
            ratios[f"{a}/{b}"] = ratio(a, b)
    return ratios


def _macs_per_image(args):
    """The model's MACs for one image (None if they cannot be counted)."""
    with contextlib.suppress(Exception):
        with no_init_parameters():
            net = create_model(args.model, num_classes=args.num_classes)
        return count_macs(net, (3, args.image_size, args.image_size))
    return None


def run_speed(args):
    """Measure ``args.task`` (train or infer) for ours and ``args.references``; print the table and
    return the JSON report."""
    setup_mindspore(args)
    mode_name = "graph" if args.mode == 0 else "pynative"
    optimizer = f", optimizer {args.opt}" if args.task == "train" else ""
    print(f"benchmark {args.task}: {args.model}, batch {args.batch_size}, {args.image_size} px, "
          f"{mode_name} mode, {args.amp_level}, {args.device_target}{optimizer}, {args.steps} timed round(s) after "
          f"1 + {args.warmup} warm-up call(s)", flush=True)
    notes = []
    if args.device_target not in ("GPU", "Ascend"):
        notes.append("CPU run: device memory is not measured")
    runners, unavailable = make_runners(args, notes)
    results = measure(runners, args, unavailable)
    for name, reason in unavailable.items():
        results[name] = {"available": False, "reason": reason}
    ratios = _ratios({k: v for k, v in results.items() if v.get("available")})

    macs = _macs_per_image(args)
    if macs is not None:
        factor = 3 if args.task == "train" else 1  # backward ~ 2x the forward
        for res in results.values():
            if res.get("available"):
                res["effective_gmacs_per_sec"] = res["images_per_sec"] * macs * factor / 1e9

    report = {
        "benchmark": "mindcv_res2net", "task": args.task, "model": args.model, "batch_size": args.batch_size,
        "image_size": args.image_size, "num_classes": args.num_classes, "mode": args.mode, "mode_name": mode_name,
        "amp_level": args.amp_level, "device_target": args.device_target, "steps": args.steps,
        "optimizer": args.opt if args.task == "train" else None,
        "warmup": args.warmup, "settle_ms": args.settle_ms, "macs_per_image": macs, "results": results,
        "ratios": ratios, "notes": notes,
        "peak_rss_mb": peak_rss_mb(), "environment": environment(args),
        "command": command(args),
    }
    print(speed_markdown(report))
    return report


def speed_markdown(report):
    """The report's results as a markdown table, with the ratios and notes under it."""
    lines = ["", "| implementation | img/s | ms/step (median) | min / max ms | CPU ms/step | first call (s) "
                 "| build (s) | RSS growth (MB) | device peak (MB) | precision |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in report["results"].items():
        if not r.get("available"):
            lines.append(f"| {name} | not available: {r['reason']} | | | | | | | | |")
            continue
        lines.append(f"| {name} | {fmt(r['images_per_sec'], '.2f')} | {fmt(r['ms_per_step'])} | "
                     f"{fmt(r['ms_per_step_min'])} / {fmt(r['ms_per_step_max'])} | {fmt(r['cpu_ms_per_step'])} | "
                     f"{fmt(r['compile_s'])} | "
                     f"{fmt(r['build_s'])} | {fmt(r['rss_growth_mb'], '.0f')} | "
                     f"{fmt(r['device_peak_mb'], '.0f')} | {r['precision']} |")
    if report["ratios"]:
        lines.append("")
        lines.append("img/s ratios (> 1: the first is faster): " +
                     ", ".join(f"{k} = {v:.2f}" for k, v in report["ratios"].items()))
    lines.append(f"peak RSS of this process: {report['peak_rss_mb']:.0f} MB")
    for name, r in report["results"].items():
        for note in r.get("notes", []):
            lines.append(f"note ({name}): {note}")
    for note in report["notes"]:
        lines.append(f"note: {note}")
    return "\n".join(lines)
