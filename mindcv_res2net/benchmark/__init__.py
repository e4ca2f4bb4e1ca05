"""What benchmark.py runs: speed against references, the input pipeline, the model table.

    settings        what the reports record about a run (no MindSpore)
    common          memory and environment probes, MindSpore setup, number formatting
    runners         the implementations under test (ours, ours_optimized, mindcv, torch, timm, onnxruntime)
    torch_models    the PyTorch (torch.nn) reference of every registered model (needs torch)
    speed           --task train / infer: build, compile, warm up, time in rotated rounds, report
    input_pipeline  --task data: JPEG decode + training transforms throughput per worker count
    table           --table: parameters, MACs and published accuracy of every registered model
    published, reproduce, reproduce_table
                    --reproduce: MindCV's published table, the reproduction runs, the table they make

Each ``run_*(args)`` prints its markdown and returns the JSON report; benchmark.py parses the
command line (``mindcv_res2net.cli.benchmark_args``, free of MindSpore), picks one and writes the JSON.
"""
from ..lazy_exports import lazy_exports

_EXPORTS = {"run_table": "table", "check_model": "runners", "make_runners": "runners"}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
