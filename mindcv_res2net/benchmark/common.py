"""What every benchmark task shares: memory and environment probes, MindSpore setup, formatting."""
import contextlib
import os
import platform
import resource
import sys

import mindspore as ms

from ..distributed import resolve_device_target
from ..distributed.process_setup import _warn_slow_cpu_convolution


def peak_rss_mb():
    """The process's peak resident memory so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def current_rss_mb():
    """The process's resident memory now (MB; NaN where it cannot be read)."""
    try:
        import psutil
        return psutil.Process().memory_info().rss / 2 ** 20
    except ImportError:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
        except (OSError, ValueError):
            return float("nan")


def version(module_name):
    """``module_name.__version__`` ("installed" without one), or None when it does not import."""
    try:
        module = __import__(module_name)
        return getattr(module, "__version__", "installed")
    except Exception:  # noqa: BLE001 -- any import failure means "not available"
        return None


def environment(args):
    """Versions, platform and CPU count, for the JSON report."""
    env = {
        "mindspore": ms.__version__, "python": platform.python_version(), "platform": platform.platform(),
        "cpu_count": os.cpu_count(), "device_target": getattr(args, "device_target", None),
    }
    try:
        env["cpu_affinity"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    for name in ("torch", "mindcv", "timm", "onnxruntime"):
        if name in sys.modules:
            env[name] = getattr(sys.modules[name], "__version__", "installed")
    if "torch" in sys.modules:
        env["torch_threads"] = sys.modules["torch"].get_num_threads()
    return env


def setup_mindspore(args):
    """Resolve ``args.device_target``, set the execution mode and the device, seed MindSpore."""
    args.device_target = resolve_device_target(args.device_target)
    ms.set_context(mode=ms.GRAPH_MODE if args.mode == 0 else ms.PYNATIVE_MODE)
    ms.set_device(args.device_target)
    _warn_slow_cpu_convolution(args.device_target)
    ms.set_seed(args.seed)


def ms_device_memory():
    """(reset, peak_mb) callables for MindSpore's device memory, or None if unsupported."""
    try:
        rt = ms.runtime
        return rt.reset_peak_memory_stats, lambda: rt.max_memory_allocated() / 2 ** 20
    except AttributeError:
        return None


def no_init_parameters():
    """``mindspore.nn.utils.no_init_parameters()`` (build without drawing initial weights)."""
    try:
        from mindspore.nn.utils import no_init_parameters as context
    except ImportError:  # pragma: no cover -- older MindSpore
        return contextlib.nullcontext()
    return context()


def fmt(value, spec=".1f"):
    """``value`` formatted with ``spec``; ``-`` for None, ``str(value)`` when it does not apply."""
    if value is None:
        return "-"
    try:
        return format(value, spec)
    except (TypeError, ValueError):
        return str(value)
