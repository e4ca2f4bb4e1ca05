"""Benchmark the Res2Net family: training / inference speed against references, the input
pipeline, and the model table (parameters, MACs, published accuracy).

    python benchmark.py --table                                   # markdown table of every model
    python benchmark.py --model res2net50 --task train --batch_size 8 --compare mindcv,torch
    python benchmark.py --model res2net50 --task infer --batch_size 8 --compare mindcv,torch --json r.json
    python benchmark.py --task data --batch_size 32 --workers 1,2  # JPEG decode + ImageNet train transforms

Speed (``--task train|infer``): every implementation is built, called once (the first call, timed
as ``compile_s``: graph compilation in graph mode, plus that step), run ``--warmup`` more times,
and then timed over ``--steps`` rounds; in each round every implementation runs one step, in an
order rotated from round to round (after an untimed ``--settle_ms`` pause, so that the previous
implementation's thread pools stop spinning), so that a slow-down of the machine hits all of them
alike.
Reported: the median ms/step and img/s (= batch / median step), min / mean / max, and the ratio
ours / reference of img/s (> 1: ours is faster).

Implementations: ``ours`` (mindcv_res2net, with ``train_step.TrainStep`` for training),
``ours_optimized`` (inference only: ``optimize_for_inference``, BatchNorm folded), ``mindcv``
(MindCV's own Res2Net, same TrainStep / AMP wrapper), ``torch`` (``mindcv_res2net.bench_torch``,
a torch.nn Res2Net; SGD momentum + CE step) and ``timm`` (timm's model when timm imports, else
the ``torch`` reference in its place, with a note). A reference that is not installed or lacks
the model is reported as not available.

Memory: ``rss_growth_mb`` is how much the process's resident memory grew while that
implementation was built, compiled and warmed up (implementations share one process, so this is
an indication, not an isolated peak); ``peak_rss_mb`` is the whole process's peak. On GPU /
Ascend ``device_peak_mb`` is the device's peak allocation during that implementation's first
call and warm-up.
"""
import argparse
import contextlib
import difflib
import json
import logging
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time

from mindcv_res2net.cli import run_main
from mindcv_res2net.errors import UserError

TASKS = ("train", "infer", "data")
REFERENCES = ("mindcv", "torch", "timm")
AMP_LEVELS = ("O0", "O1", "O2", "O3")

# set by the ``__main__`` block: end the process with os._exit after flushing (skips the
# interpreter teardown, where MindCV's Cell.__del__ prints noise and MindSpore takes seconds)
_HARD_EXIT = False

_logger = logging.getLogger("mindcv_res2net.benchmark")


# ------------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UserError(f"command line: {message}. Run with --help for the valid options")


def build_parser():
    p = _Parser(prog="benchmark.py", allow_abbrev=False,
                description="Benchmark Res2Net models (speed against MindCV / PyTorch, the input "
                            "pipeline) or print the model table.",
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="res2net50", help="model name (mindcv_res2net.list_models())")
    p.add_argument("--task", default="train", choices=TASKS,
                   help="train: forward+backward+update; infer: eval forward; data: input pipeline alone")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--image_size", type=int, default=224)
    p.add_argument("--num_classes", type=int, default=1000)
    p.add_argument("--mode", type=int, default=0, help="0: graph mode, 1: PyNative mode")
    p.add_argument("--amp_level", default="O0", help="O0 (fp32), O1, O2, O3 (MindCV levels)")
    p.add_argument("--device_target", default="auto", help="auto, CPU, GPU or Ascend")
    p.add_argument("--steps", type=int, default=20, help="timed rounds (data: batches)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls after the first one (data: batches)")
    p.add_argument("--compare", default="",
                   help="comma-separated references measured in the same run: mindcv, torch, timm")
    p.add_argument("--settle_ms", type=float, default=20.0,
                   help="untimed pause before each timed step, so that the thread pools of the previous "
                        "implementation (MindSpore, OpenMP) stop spinning before the next one is timed")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results to this JSON file")
    p.add_argument("--table", action="store_true",
                   help="print the table of every model (parameters, MACs at 224 px, published accuracy)")
    p.add_argument("--workers", default="1,2", help="data task: decode/augment worker counts to measure")
    p.add_argument("--num_images", type=int, default=256,
                   help="data task: synthetic 500x375 JPEGs to generate (cycled through)")
    p.add_argument("--data_dir", default=None,
                   help="data task: an ImageFolder root (DATA_DIR/train/<class>/*.jpg) to read instead of "
                        "generated JPEGs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    return p


def _split_list(text):
    return [t.strip() for t in str(text or "").split(",") if t.strip()]


def _validate(args):
    if not args.table:
        _check_model(args.model)
    if args.batch_size <= 0:
        raise UserError(f"batch_size must be > 0, got {args.batch_size}. Pass --batch_size 1 or more")
    if args.steps <= 0:
        raise UserError(f"steps must be > 0, got {args.steps}. Pass --steps 1 or more")
    if args.warmup < 0:
        raise UserError(f"warmup must be >= 0, got {args.warmup}")
    if args.num_classes <= 0:
        raise UserError(f"num_classes must be > 0, got {args.num_classes}")
    if args.mode not in (0, 1):
        raise UserError(f"mode must be 0 (graph) or 1 (pynative), got {args.mode}")
    args.amp_level = str(args.amp_level).upper()
    if args.amp_level not in AMP_LEVELS:
        raise UserError(f"unknown amp_level: {args.amp_level!r}. Use one of: {', '.join(AMP_LEVELS)}")
    if args.task != "data" and not args.table:
        if args.image_size < 32:
            raise UserError(f"image_size must be >= 32 (the models reduce it 32-fold), got {args.image_size}")
        if "dla" in args.model and args.image_size % 32:
            raise UserError(f"{args.model}: image_size must be a multiple of 32 (the DLA tree max-pools), "
                            f"got {args.image_size}")
    elif args.image_size < 8:
        raise UserError(f"image_size must be >= 8, got {args.image_size}")
    refs = []
    for name in _split_list(args.compare):
        key = name.lower()
        if key not in REFERENCES:
            raise UserError(f"unknown reference in --compare: {name!r}. Use a comma-separated list of: "
                            f"{', '.join(REFERENCES)}")
        if key not in refs:
            refs.append(key)
    if refs and args.task == "data":
        raise UserError("--compare applies to --task train and infer, not to --task data")
    args.references = refs
    try:
        args.worker_counts = [int(w) for w in _split_list(args.workers)]
    except ValueError:
        raise UserError(f"--workers must be comma-separated whole numbers, got {args.workers!r}") from None
    if not args.worker_counts or min(args.worker_counts) <= 0:
        raise UserError(f"--workers must list worker counts >= 1, got {args.workers!r}")
    if args.task == "data" and not args.table and args.data_dir is None and args.num_images < args.batch_size:
        raise UserError(f"num_images ({args.num_images}) must be >= batch_size ({args.batch_size})")


def _check_model(name):
    from mindcv_res2net.models.registry import is_model, list_models
    if not is_model(name):
        close = difflib.get_close_matches(name, list_models(), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UserError(f"unknown model {name!r}.{hint} See mindcv_res2net.list_models() for all names")


# ------------------------------------------------------------------------------------------------
# environment and memory
# ------------------------------------------------------------------------------------------------

def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _current_rss_mb():
    try:
        import psutil
        return psutil.Process().memory_info().rss / 2 ** 20
    except ImportError:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
        except (OSError, ValueError):
            return float("nan")


def _version(module_name):
    try:
        module = __import__(module_name)
        return getattr(module, "__version__", "installed")
    except Exception:  # noqa: BLE001 -- any import failure means "not available"
        return None


def _environment(args):
    import mindspore as ms
    env = {
        "mindspore": ms.__version__, "python": platform.python_version(), "platform": platform.platform(),
        "cpu_count": os.cpu_count(), "device_target": getattr(args, "device_target", None),
    }
    try:
        env["cpu_affinity"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    for name in ("torch", "mindcv", "timm"):
        if name in sys.modules:
            env[name] = getattr(sys.modules[name], "__version__", "installed")
    if "torch" in sys.modules:
        env["torch_threads"] = sys.modules["torch"].get_num_threads()
    return env


def _setup_mindspore(args):
    import mindspore as ms
    from mindcv_res2net.distributed import resolve_device_target

    args.device_target = resolve_device_target(args.device_target)
    ms.set_context(mode=ms.GRAPH_MODE if args.mode == 0 else ms.PYNATIVE_MODE)
    if hasattr(ms, "set_device"):
        ms.set_device(args.device_target)
    else:  # pragma: no cover -- older MindSpore
        ms.set_context(device_target=args.device_target)
    try:
        from mindcv_res2net.engine.runtime import _warn_slow_cpu_convolution
    except ImportError:
        _warn_slow_cpu_convolution = _warn_slow_cpu_fallback
    _warn_slow_cpu_convolution(args.device_target)
    ms.set_seed(args.seed)


def _warn_slow_cpu_fallback(device_target):
    import mindspore as ms
    if device_target == "CPU" and tuple(ms.__version__.split(".")[:2]) in (("2", "9"), ("2", "10")):
        _logger.warning("MindSpore %s runs 3x3 convolutions on CPU about 300x slower than 2.8.0. "
                        "Install the pinned version: pip install mindspore==2.8.0", ms.__version__)


def _ms_device_memory():
    """(reset, peak_mb) callables for MindSpore's device memory, or None on CPU / if unsupported."""
    try:
        import mindspore as ms
        rt = ms.runtime
        return rt.reset_peak_memory_stats, lambda: rt.max_memory_allocated() / 2 ** 20
    except Exception:  # noqa: BLE001
        return None


# ------------------------------------------------------------------------------------------------
# implementations under test
# ------------------------------------------------------------------------------------------------

class Unavailable(Exception):
    """This implementation cannot be measured here (not installed, no such model ...)."""


class Runner:
    """One implementation: ``setup()`` builds it, ``step()`` runs one synchronous step."""

    name = "?"
    implementation = "?"

    def __init__(self, args):
        self.args = args
        self.notes = []
        self.precision = "fp32" if args.amp_level == "O0" else f"MindSpore AMP {args.amp_level}"

    def setup(self):
        raise NotImplementedError

    def step(self):
        raise NotImplementedError

    def device_memory(self):
        return None


def _random_batch(args):
    import numpy as np
    rng = np.random.default_rng(args.seed)
    images = rng.standard_normal((args.batch_size, 3, args.image_size, args.image_size)).astype(np.float32)
    labels = rng.integers(0, args.num_classes, args.batch_size).astype(np.int32)
    return images, labels


class MindSporeRunner(Runner):
    """ours / ours_optimized / mindcv: the network built by ``build()``, trained with TrainStep
    (SGD momentum 0.9, lr 0.01, weight decay 1e-4, CE with label smoothing 0.1; fixed loss scale
    1024 when amp_level != O0, as in MindCV's recipes) or run in eval mode."""

    def __init__(self, args, name, implementation, build, optimize=False):
        super().__init__(args)
        self.name, self.implementation = name, implementation
        self._build, self.optimize = build, optimize
        self._call = None

    def setup(self):
        import mindspore as ms
        from mindcv_res2net.engine import TrainStep, apply_amp, create_loss, create_optimizer

        args = self.args
        net = self._build()
        images, labels = _random_batch(args)
        self.images = ms.Tensor(images)
        if args.task == "train":
            self.labels = ms.Tensor(labels)
            loss = create_loss("CE", label_smoothing=0.1)
            opt = create_optimizer(net, opt="momentum", lr=0.01, weight_decay=1e-4, momentum=0.9)
            fixed_scale = 1.0 if args.amp_level == "O0" else 1024.0
            self.cell = TrainStep(net, loss, opt, amp_level=args.amp_level, loss_scale_type="fixed",
                                  loss_scale=fixed_scale)
            self.cell.set_train(True)
        else:
            net.set_train(False)
            if self.optimize:
                net = _optimize_for_inference()(net)
            self.cell = apply_amp(net, args.amp_level)
            self.cell.set_train(False)
        self.net = net

    def step(self):
        if self.args.task == "train":
            loss, _overflow, _scale = self.cell(self.images, self.labels)
            loss.asnumpy()
        else:
            out = self.cell(self.images)
            (out[0] if isinstance(out, (tuple, list)) else out).asnumpy()


def _optimize_for_inference():
    try:
        from mindcv_res2net.inference import optimize_for_inference
    except ImportError as exc:
        raise Unavailable(f"mindcv_res2net.inference.optimize_for_inference not available ({exc})") from None
    return optimize_for_inference


def _ours_builder(args):
    def build():
        from mindcv_res2net import create_model
        return create_model(args.model, num_classes=args.num_classes)
    return build


def _mindcv_builder(args):
    try:
        from mindcv.models import create_model as mindcv_create_model
        from mindcv.models import list_models as mindcv_list_models
    except Exception as exc:  # noqa: BLE001 -- ImportError or a broken installation
        raise Unavailable(f"MindCV is not installed or does not import ({type(exc).__name__}: {exc})") from None
    from mindcv_res2net.models.registry import resolve_name
    name = resolve_name(args.model)
    if name not in mindcv_list_models():
        raise Unavailable(f"MindCV has no {name} (its Res2Nets: "
                          f"{', '.join(m for m in mindcv_list_models() if 'res2' in m)})")

    def build():
        return mindcv_create_model(name, num_classes=args.num_classes, pretrained=False)
    return build


class TorchRunner(Runner):
    """torch / timm: a PyTorch model; train = SGD momentum 0.9 (lr 0.01, wd 1e-4) + CE (label
    smoothing 0.1); infer = eval + inference_mode. fp32 on CPU; on CUDA, amp_level != O0 runs
    under fp16 autocast (with a GradScaler for training)."""

    def __init__(self, args, name, implementation, build):
        super().__init__(args)
        self.name, self.implementation, self._build = name, implementation, build

    def setup(self):
        import torch
        args = self.args
        self.torch = torch
        cuda = args.device_target == "GPU" and torch.cuda.is_available()
        self.device = torch.device("cuda" if cuda else "cpu")
        if args.device_target != "CPU" and not cuda:
            self.notes.append(f"PyTorch runs on CPU (no CUDA device for device_target {args.device_target})")
        self.autocast = cuda and args.amp_level != "O0"
        self.precision = "fp16 autocast" if self.autocast else "fp32"
        if args.amp_level != "O0" and not self.autocast:
            self.notes.append(f"amp_level {args.amp_level} not applied to PyTorch on CPU: it runs fp32")
        torch.manual_seed(args.seed)
        model = self._build().to(self.device)
        images, labels = _random_batch(args)
        self.images = torch.from_numpy(images).to(self.device)
        self.labels = torch.from_numpy(labels).long().to(self.device)
        if args.task == "train":
            model.train()
            self.opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
            self.loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
            self.scaler = torch.amp.GradScaler("cuda", init_scale=1024.0) if self.autocast else None
        else:
            model.eval()
        self.model = model
        if cuda:
            torch.cuda.reset_peak_memory_stats()

    def _sync(self, tensor):
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()
        else:
            tensor.detach().reshape(-1)[0].item()

    def step(self):
        torch = self.torch
        ctx = torch.autocast("cuda", dtype=torch.float16) if self.autocast else contextlib.nullcontext()
        if self.args.task == "train":
            self.opt.zero_grad(set_to_none=True)
            with ctx:
                loss = self.loss_fn(self.model(self.images), self.labels)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.step(self.opt)
                self.scaler.update()
            else:
                loss.backward()
                self.opt.step()
            self._sync(loss)
        else:
            with torch.inference_mode(), ctx:
                out = self.model(self.images)
            self._sync(out)

    def device_memory(self):
        if self.device.type == "cuda":
            return self.torch.cuda.max_memory_allocated() / 2 ** 20
        return None


def _torch_builder(args):
    try:
        import torch  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        raise Unavailable(f"PyTorch is not installed or does not import ({type(exc).__name__}: {exc})") from None
    from mindcv_res2net.bench_torch import TORCH_ARCHS, create_torch_model
    from mindcv_res2net.models.registry import resolve_name
    name = resolve_name(args.model)
    if name not in TORCH_ARCHS:
        raise Unavailable(f"no torch reference for {name}")
    return lambda: create_torch_model(name, num_classes=args.num_classes)


def _timm_importable():
    try:
        import timm  # noqa: F401
        return True
    except Exception:  # noqa: BLE001 -- timm needs torchvision; any failure = not importable
        return False


def _timm_builder(args):
    import timm
    from mindcv_res2net.bench_torch import TIMM_NAMES
    from mindcv_res2net.models.registry import resolve_name
    timm_name = TIMM_NAMES.get(resolve_name(args.model))
    if timm_name is None:
        raise Unavailable(f"timm has no {resolve_name(args.model)}")
    return lambda: timm.create_model(timm_name, pretrained=False, num_classes=args.num_classes)


def make_runners(args, notes):
    """The implementations to measure (``ours`` first) and the unavailable ones {name: reason}."""
    runners, unavailable = [], {}
    runners.append(MindSporeRunner(args, "ours", "mindcv_res2net", _ours_builder(args)))
    if args.task == "infer":
        try:
            _optimize_for_inference()
            runners.append(MindSporeRunner(args, "ours_optimized", "mindcv_res2net + optimize_for_inference",
                                           _ours_builder(args), optimize=True))
        except Unavailable as exc:
            unavailable["ours_optimized"] = str(exc)
    refs = list(args.references)
    if "timm" in refs and not _timm_importable():
        notes.append("timm is not importable here (it needs torchvision, which is absent): the torch.nn "
                     "reference (mindcv_res2net.bench_torch, reported as 'torch') is measured in its place")
        refs = [("torch" if r == "timm" else r) for r in refs]
        refs = [r for i, r in enumerate(refs) if r not in refs[:i]]
    for ref in refs:
        try:
            if ref == "mindcv":
                runners.append(MindSporeRunner(args, "mindcv", "MindCV " + str(_version("mindcv")),
                                               _mindcv_builder(args)))
            elif ref == "torch":
                runners.append(TorchRunner(args, "torch", "PyTorch torch.nn reference (bench_torch)",
                                           _torch_builder(args)))
            else:
                runners.append(TorchRunner(args, "timm", "timm " + str(_version("timm")), _timm_builder(args)))
        except Unavailable as exc:
            unavailable[ref] = str(exc)
    return runners, unavailable


# ------------------------------------------------------------------------------------------------
# measuring
# ------------------------------------------------------------------------------------------------

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
    ms_mem = _ms_device_memory() if args.device_target != "CPU" else None
    ready = []
    for runner in runners:
        rss0 = _current_rss_mb()
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
        runner.rss_growth_mb = _current_rss_mb() - rss0
        runner.peak_rss_mb = _peak_rss_mb()
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
    ratios = {}
    ours = [n for n in results if n.startswith("ours")]
    refs = [n for n in results if not n.startswith("ours")]
    for a in ours:
        for b in refs:
            ratios[f"{a}/{b}"] = results[a]["images_per_sec"] / results[b]["images_per_sec"]
    if "ours" in results and "ours_optimized" in results:
        ratios["ours_optimized/ours"] = results["ours_optimized"]["images_per_sec"] / results["ours"]["images_per_sec"]
    return ratios


def _fmt(value, spec=".1f"):
    if value is None:
        return "-"
    try:
        return format(value, spec)
    except (TypeError, ValueError):
        return str(value)


def run_speed(args):
    _setup_mindspore(args)
    mode_name = "graph" if args.mode == 0 else "pynative"
    print(f"benchmark {args.task}: {args.model}, batch {args.batch_size}, {args.image_size} px, "
          f"{mode_name} mode, {args.amp_level}, {args.device_target}, {args.steps} timed round(s) after "
          f"1 + {args.warmup} warm-up call(s)", flush=True)
    notes = []
    if args.device_target not in ("GPU", "Ascend"):
        notes.append("CPU run: device memory is not measured")
    runners, unavailable = make_runners(args, notes)
    results = measure(runners, args, unavailable)
    for name, reason in unavailable.items():
        results[name] = {"available": False, "reason": reason}
    ratios = _ratios({k: v for k, v in results.items() if v.get("available")})

    macs = None
    with contextlib.suppress(Exception):
        from mindcv_res2net import create_model
        from mindcv_res2net.flops import count_macs
        with _no_init_parameters():
            net = create_model(args.model, num_classes=args.num_classes)
        macs = count_macs(net, (3, args.image_size, args.image_size))
    if macs is not None:
        factor = 3 if args.task == "train" else 1  # backward ~ 2x the forward
        for res in results.values():
            if res.get("available"):
                res["effective_gmacs_per_sec"] = res["images_per_sec"] * macs * factor / 1e9

    report = {
        "benchmark": "mindcv_res2net", "task": args.task, "model": args.model, "batch_size": args.batch_size,
        "image_size": args.image_size, "num_classes": args.num_classes, "mode": args.mode, "mode_name": mode_name,
        "amp_level": args.amp_level, "device_target": args.device_target, "steps": args.steps,
        "warmup": args.warmup, "settle_ms": args.settle_ms, "macs_per_image": macs, "results": results,
        "ratios": ratios, "notes": notes,
        "peak_rss_mb": _peak_rss_mb(), "environment": _environment(args),
        "command": "python benchmark.py " + " ".join(args.argv),
    }
    print(_speed_markdown(report))
    return report


def _speed_markdown(report):
    lines = ["", "| implementation | img/s | ms/step (median) | min / max ms | CPU ms/step | first call (s) "
                 "| build (s) | RSS growth (MB) | device peak (MB) | precision |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in report["results"].items():
        if not r.get("available"):
            lines.append(f"| {name} | not available: {r['reason']} | | | | | | | | |")
            continue
        lines.append(f"| {name} | {_fmt(r['images_per_sec'], '.2f')} | {_fmt(r['ms_per_step'])} | "
                     f"{_fmt(r['ms_per_step_min'])} / {_fmt(r['ms_per_step_max'])} | {_fmt(r['cpu_ms_per_step'])} | "
                     f"{_fmt(r['compile_s'])} | "
                     f"{_fmt(r['build_s'])} | {_fmt(r['rss_growth_mb'], '.0f')} | "
                     f"{_fmt(r['device_peak_mb'], '.0f')} | {r['precision']} |")
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


# ------------------------------------------------------------------------------------------------
# data pipeline
# ------------------------------------------------------------------------------------------------

def run_data(args):
    try:
        from mindcv_res2net.data import make_synthetic_jpegs, measure_pipeline_throughput
    except ImportError as exc:
        reason = f"mindcv_res2net.data.measure_pipeline_throughput not available ({exc})"
        print(f"benchmark data: not available: {reason}")
        return {"benchmark": "mindcv_res2net", "task": "data", "available": False, "reason": reason,
                "command": "python benchmark.py " + " ".join(args.argv)}
    tmp = None
    try:
        if args.data_dir:
            root = args.data_dir
            if not os.path.isdir(os.path.join(root, "train")):
                raise UserError(f"--data_dir needs a train/ folder of class folders: {root}. Point it at an "
                                f"ImageFolder root, or leave it out to use generated JPEGs")
            source = f"ImageFolder {root}/train"
        else:
            tmp = tempfile.mkdtemp(prefix="r2bench_jpegs_")
            start = time.perf_counter()
            make_synthetic_jpegs(tmp, n_images=args.num_images, size=(500, 375), seed=args.seed)
            print(f"generated {args.num_images} synthetic 500x375 JPEGs in {time.perf_counter() - start:.1f} s",
                  flush=True)
            root, source = tmp, f"{args.num_images} synthetic 500x375 JPEGs (photo-like, quality 90)"
        n_images = args.steps * args.batch_size
        print(f"benchmark data: {source}; decode + random-resized-crop {args.image_size} + flip + normalise + "
              f"CHW + batch {args.batch_size}; {n_images} images timed after {args.warmup} batch(es)", flush=True)
        workers = {}
        for w in args.worker_counts:
            res = measure_pipeline_throughput(root, num_workers=w, n_images=n_images, image_size=args.image_size,
                                              batch_size=args.batch_size, warmup_batches=args.warmup)
            workers[str(w)] = res
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    lines = ["", "| workers | img/s | img/s per worker | img per CPU-second | images timed | mean JPEG (KB) |",
             "|---|---|---|---|---|---|"]
    for w, r in workers.items():
        lines.append(f"| {w} | {r['images_per_sec']:.1f} | {r['images_per_sec_per_worker']:.1f} | "
                     f"{_fmt(r.get('images_per_cpu_second'))} | {r['n_images']} | "
                     f"{_fmt(r.get('mean_file_kb'), '.0f')} |")
    lines.append(f"peak RSS of this process: {_peak_rss_mb():.0f} MB")
    print("\n".join(lines))
    return {"benchmark": "mindcv_res2net", "task": "data", "available": True, "source": source,
            "batch_size": args.batch_size, "image_size": args.image_size, "workers": workers,
            "peak_rss_mb": _peak_rss_mb(), "environment": _environment(args),
            "command": "python benchmark.py " + " ".join(args.argv)}


# ------------------------------------------------------------------------------------------------
# model table
# ------------------------------------------------------------------------------------------------

def _published(name):
    """((official top1, top5) or None, (MindCV top1, top5) or None) from the pretrained registry."""
    try:
        from mindcv_res2net.models.pretrained import get_pretrained_cfg
        sources = get_pretrained_cfg(name)["sources"]
    except Exception:  # noqa: BLE001 -- no registry, or no weights for this model
        return None, None

    def pick(*tags):
        for tag in tags:
            s = sources.get(tag)
            if s and s.get("top1") is not None:
                return s["top1"], s.get("top5")
        return None

    return pick("official", "timm", "timm_legacy"), pick("mindcv")


def _dla_unused_project_macs(net, size=224):
    """MACs of the official DLA files' ``project`` convs that timm (and we) leave out.

    In the official release every tree whose channels change has a ``project`` (1x1 conv + BN)
    applied to its down-sampled input; only level-1 trees use the result, but the forward pass
    computes it in the deeper trees too. The models here have timm's structure (no such convs),
    so this is what a profiler of the official model counts on top of ``count_macs``.
    """
    def first_block(tree):
        while tree.levels > 1:
            tree = tree.tree1
        return tree.tree1

    def last_root(tree):
        while tree.levels > 1:
            tree = tree.tree2
        return tree.root

    total = 0

    def walk(tree, side):
        nonlocal total
        if tree.levels == 1:
            return
        in_ch, out_ch = first_block(tree).conv1.in_channels, last_root(tree).conv.out_channels
        if in_ch != out_ch:
            total += side * side * in_ch * out_ch
        walk(tree.tree1, side)
        walk(tree.tree2, side)

    for level in range(2, 6):
        walk(getattr(net, f"level{level}"), size // 2 ** level)
    return total


# the order of the README's table (families together); other registered models follow, sorted
_TABLE_ORDER = ("res2net50", "res2net101", "res2net152", "res2net50_26w_6s", "res2net50_26w_8s", "res2net50_48w_2s",
                "res2net50_14w_8s", "res2next50", "res2net50_v1b", "res2net101_v1b", "res2net152_v1b",
                "res2net_dla60", "res2next_dla60")


def _no_init_parameters():
    """``mindspore.nn.utils.no_init_parameters()`` (build without drawing initial weights)."""
    try:
        from mindspore.nn.utils import no_init_parameters
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    return no_init_parameters()


def build_table(log=None):
    """One row per registered model (aliases excluded), computed from the models themselves."""
    from mindcv_res2net import create_model
    from mindcv_res2net.flops import count_macs
    from mindcv_res2net.models.layers import count_params
    from mindcv_res2net.models.registry import list_models, resolve_name
    aliases = {}
    for alias in sorted(set(list_models()) - set(list_models(include_aliases=False))):
        aliases.setdefault(resolve_name(alias), []).append(alias)
    order = {name: i for i, name in enumerate(_TABLE_ORDER)}
    names = sorted(list_models(include_aliases=False), key=lambda n: (order.get(n, len(order)), n))
    rows = []
    for name in names:
        with _no_init_parameters():  # the table needs shapes, not weight values
            net = create_model(name, num_classes=1000)
        official, mindcv = _published(name)
        row = {
            "model": name, "aliases": aliases.get(name, []),
            "params": count_params(net, trainable_only=True), "params_with_bn_stats": count_params(net, False),
            "macs_224": count_macs(net, (3, 224, 224)),
            "official_top1_top5": official, "mindcv_top1_top5": mindcv,
        }
        if "dla" in name:
            row["macs_224_with_unused_project"] = row["macs_224"] + _dla_unused_project_macs(net)
        rows.append(row)
        if log:
            log(f"  {name}: done")
        del net
    return rows


def table_markdown(rows):
    def acc(pair):
        return "-" if not pair else f"{pair[0]:.2f} / {pair[1]:.2f}"

    lines = ["| model (timm alias) | params (M) | with BN moving stats (M) | MACs at 224 px (G) | "
             "official top-1 / top-5 | MindCV top-1 / top-5 |", "|---|---|---|---|---|---|"]
    for r in rows:
        name = f"`{r['model']}`" + (f" (`{'`, `'.join(r['aliases'])}`)" if r["aliases"] else "")
        macs = f"{r['macs_224'] / 1e9:.3f}"
        if "macs_224_with_unused_project" in r:
            macs += f" ({r['macs_224_with_unused_project'] / 1e9:.3f}*)"
        lines.append(f"| {name} | {r['params'] / 1e6:.2f} | {r['params_with_bn_stats'] / 1e6:.2f} | {macs} | "
                     f"{acc(r['official_top1_top5'])} | {acc(r['mindcv_top1_top5'])} |")
    lines.append("")
    lines.append("Params: learnable parameters at 1000 classes; with BN moving stats = MindCV's \"Params\" column. "
                 "MACs: convolutions + classifier, one 224x224 image (`mindcv_res2net.flops.count_macs`). "
                 "Top-1 / top-5: published ImageNet-1k val accuracy of the released weights (`-`: none published).")
    if any("macs_224_with_unused_project" in r for r in rows):
        lines.append("\\* DLA-60: the models have timm's structure; in brackets the count with the official "
                     "release's unused `project` 1x1 convs added, which its forward pass computes and discards "
                     "(the official paper reports 4.2 G / 3.6 G).")
    return "\n".join(lines)


def run_table(args):
    import mindspore as ms
    ms.set_context(mode=ms.PYNATIVE_MODE)
    rows = build_table()
    print(table_markdown(rows))
    return {"benchmark": "mindcv_res2net", "task": "table", "rows": rows,
            "environment": _environment(args), "command": "python benchmark.py " + " ".join(args.argv)}


# ------------------------------------------------------------------------------------------------
# entry
# ------------------------------------------------------------------------------------------------

def _write_json(path, report):
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=2, default=str)
        f.write("\n")
    os.replace(tmp, path)


def main(argv):
    args = build_parser().parse_args(argv)
    args.argv = list(argv)
    _validate(args)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    if args.table:
        report = run_table(args)
    elif args.task == "data":
        report = run_data(args)
    else:
        report = run_speed(args)
    if args.json:
        _write_json(args.json, report)
        print(f"results written to {args.json}")
    return _finish(0)


def _finish(code):
    if _HARD_EXIT:
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(code)
    return code


if __name__ == "__main__":
    _HARD_EXIT = True
    # MindSpore's own log at ERROR level (set before it is imported): compiling MindCV's graph
    # prints dozens of harmless WARNING lines. GLOG_v=2 (or 1) in the environment shows them again.
    os.environ.setdefault("GLOG_v", "3")
    run_main(main)
