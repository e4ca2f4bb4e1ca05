"""Benchmark the Res2Net family: training / inference speed against references, the input
pipeline, and the model table (parameters, MACs, published accuracy).

    python benchmark.py --table                                   # markdown table of every model
    python benchmark.py --model res2net50 --task train --batch_size 8 --compare mindcv,torch
    python benchmark.py --model res2net50 --task infer --batch_size 8 --compare mindcv,torch --json r.json
    python benchmark.py --model res2net50 --task infer --batch_size 8 --compare mindcv,torch,onnxruntime
    python benchmark.py --model res2net50 --task train --batch_size 8 --opt adamw --compare mindcv,torch
    python benchmark.py --task data --batch_size 32 --workers 1,2  # JPEG decode + ImageNet train transforms
    python benchmark.py --reproduce --ckpt res2net50=r50.ckpt --data_dir /data/imagenet --out repro   # MindCV's table
    python benchmark.py --reproduce --data_dir /data/imagenet --out repro --devices 8                 # ... by training
    python benchmark.py --reproduce --from_runs repro              # the table again from the row folders

The work is done by the package ``mindcv_res2net.benchmark`` (one module per task); this script
parses the command line, runs the task and writes the JSON.

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
(MindCV's own Res2Net, same TrainStep / AMP wrapper), ``torch`` (``mindcv_res2net/benchmark/torch_models.py``,
a torch.nn Res2Net; SGD momentum + CE step), ``timm`` (timm's model when timm imports, else
the ``torch`` reference in its place, with a note) and ``onnxruntime`` (inference only: our model
exported to ONNX with a variable batch by export.py's code, into a temporary folder, run by
onnxruntime with as many intra-op threads as MindSpore's CPU runtime; its ratios are reported to
every reference and to ``ours`` / ``ours_optimized``). A reference that is not installed or lacks
the model is reported as not available.

Reproduction (``--reproduce``): MindCV's Res2Net table, from released checkpoints or by training each
row's recipe through train.py and validate.py (``mindcv_res2net.benchmark.reproduce``).

Memory: ``rss_growth_mb`` is how much the process's resident memory grew while that
implementation was built, compiled and warmed up (implementations share one process, so this is
an indication, not an isolated peak); ``peak_rss_mb`` is the whole process's peak. On GPU /
Ascend ``device_peak_mb`` is the device's peak allocation during that implementation's first
call and warm-up.
"""
import json
import logging
import os
import sys

from mindcv_res2net.atomic_io import write_text_atomic
from mindcv_res2net.benchmark.settings import command
from mindcv_res2net.cli.benchmark_args import build_parser, validate
from mindcv_res2net.benchmark.reproduce import run_reproduce  # runs the scripts in subprocesses: no MindSpore here
from mindcv_res2net.cli import run_main

# set by the ``__main__`` block: end the process with os._exit after flushing (skips the
# interpreter teardown, where MindCV's Cell.__del__ prints noise and MindSpore takes seconds)
_HARD_EXIT = False


def _validate(args):
    """Check the command line; the model name last, as it imports MindSpore (the registry)."""
    validate(args)
    if not args.table and not args.reproduce and not args.from_runs:
        from mindcv_res2net.benchmark.runners import check_model  # imports MindSpore

        check_model(args.model, args.image_size if args.task != "data" else None)


def make_runners(args, notes):
    """The implementations to measure and the unavailable ones (``benchmark.runners.make_runners``)."""
    from mindcv_res2net.benchmark.runners import make_runners as make  # imports MindSpore

    return make(args, notes)


def _task(args):
    """The ``run_*(args)`` of the chosen task (importing it imports MindSpore)."""
    if args.table:
        from mindcv_res2net.benchmark.table import run_table

        return run_table
    if args.reproduce or args.from_runs:
        return lambda a: run_reproduce(a, scripts_dir=os.path.dirname(os.path.abspath(__file__)))
    if args.task == "data":
        from mindcv_res2net.benchmark.input_pipeline import run_data

        return run_data
    from mindcv_res2net.benchmark.speed import run_speed

    return run_speed


def main(argv):
    args = build_parser().parse_args(argv)
    args.argv = list(argv)
    args.command = command(args)
    _validate(args)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    report = _task(args)(args)
    if args.json:
        path = os.path.abspath(args.json)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_text_atomic(path, json.dumps(report, indent=2, default=str) + "\n", what="benchmark results")
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
