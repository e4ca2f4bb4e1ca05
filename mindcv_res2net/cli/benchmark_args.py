"""benchmark.py's command line: the parser and the checks that need no model code.

The model name is checked by :func:`mindcv_res2net.benchmark.runners.check_model` (it needs the
registry, hence MindSpore); everything here runs before MindSpore is imported.
"""
import argparse
import os

from .options import BoolFlag, Parser, add_debug, split_list
from ..errors import UserError
from ..benchmark.published import RECIPE_DEVICES, ROW_NAMES
from ..benchmark.settings import OPTIMIZER_SETTINGS

TASKS = ("train", "infer", "data")
REFERENCES = ("mindcv", "torch", "timm", "onnxruntime", "onnxruntime_int8")
AMP_LEVELS = ("O0", "O1", "O2", "O3")


def build_parser():
    p = Parser(prog="benchmark.py",
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
    p.add_argument("--opt", default="momentum", type=str.lower, choices=sorted(OPTIMIZER_SETTINGS),
                   help="train task: the optimizer of every implementation (momentum: SGD momentum 0.9, lr "
                        "0.01, wd 1e-4; adam: lr 1e-3, L2 1e-4; adamw: lr 1e-3, decoupled wd 0.05); "
                        "PyTorch runs torch.optim's SGD / Adam / AdamW")
    p.add_argument("--frozen_stages", type=int, default=-1,
                   help="train task: also measure ours with the stem and stages 1..K frozen (train.py's "
                        "frozen_stages, with norm_eval), as 'ours_frozen<K>', in the same run (-1: not measured)")
    p.add_argument("--device_target", default="auto", help="auto, CPU, GPU or Ascend")
    p.add_argument("--steps", type=int, default=20, help="timed rounds (data: batches)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls after the first one (data: batches)")
    p.add_argument("--compare", default="",
                   help="comma-separated references measured in the same run: mindcv, torch, timm, "
                        "onnxruntime (infer only: our model exported to ONNX as export.py does, run by "
                        "onnxruntime with MindSpore's CPU thread count), onnxruntime_int8 (that file "
                        "quantized as export.py --quantize int8 does, calibrated on random images: speed only)")
    p.add_argument("--settle_ms", type=float, default=20.0,
                   help="untimed pause before each timed step, so that the thread pools of the previous "
                        "implementation (MindSpore, OpenMP) stop spinning before the next one is timed")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results to this JSON file")
    p.add_argument("--table", action=BoolFlag,
                   help="print the table of every model (parameters, MACs at 224 px, published accuracy)")
    p.add_argument("--workers", default="1,2", help="data task: decode/augment worker counts to measure")
    p.add_argument("--num_images", type=int, default=256,
                   help="data task: synthetic 500x375 JPEGs to generate (cycled through)")
    p.add_argument("--data_dir", default=None,
                   help="data task: an ImageFolder root (DATA_DIR/train/<class>/*.jpg) to read instead of "
                        "generated JPEGs")
    p.add_argument("--mindrecord_dir", default=None,
                   help="data task: a MindRecord set of the same images (written by 'python -m "
                        "mindcv_res2net.data.prepare mindrecord'), measured beside ImageFolder; default: one "
                        "written to a temporary folder in this run; 'none': ImageFolder only")
    p.add_argument("--seed", type=int, default=0)
    _add_reproduce_options(p)
    add_debug(p)
    return p


def _add_reproduce_options(p):
    g = p.add_argument_group("reproduce MindCV's Res2Net table (--reproduce)")
    g.add_argument("--reproduce", action=BoolFlag,
                   help="validate released checkpoints (--ckpt) or train each row's recipe, then write "
                        "OUT/table.md and OUT/table.json beside MindCV's published figures")
    g.add_argument("--ckpt", action="append", default=[], metavar="ROW=PATH",
                   help="a released checkpoint of a row (repeatable): validated with the row's recipe, no training")
    g.add_argument("--out", default=None, help="the folder of the rows and the table")
    g.add_argument("--rows", default=",".join(ROW_NAMES), help="the rows to train (comma-separated)")
    g.add_argument("--devices", type=int, default=1,
                   help="ranks to train on (mpirun -n N when N > 1); fewer than the recipe's 8 keep the published "
                        "global batch by gradient accumulation (8 / N)")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="set_keys",
                   help="override a recipe key for every row (repeatable; a list as KEY='0.08 1.0'): the rows "
                        "are then rehearsals, not comparable to the published ones")
    g.add_argument("--recipe", default="gpu", choices=("gpu", "ascend"),
                   help="which of the published recipes: configs/res2net/<row>_gpu.yaml or _ascend.yaml")
    g.add_argument("--from_runs", default=None, metavar="OUT",
                   help="rebuild OUT/table.md and table.json from the row folders alone (runs trained elsewhere)")


def _parse_pairs(values, flag):
    pairs = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise UserError(f"{flag} {item!r}: write KEY=VALUE, e.g. {flag} "
                            + ("res2net50=res2net50.ckpt" if flag == "--ckpt" else "epoch_size=2"))
        pairs[key.strip().lstrip("-")] = value.strip()
    return pairs


def _check_rows(names, flag):
    unknown = [n for n in names if n not in ROW_NAMES]
    if unknown:
        raise UserError(f"unknown row in {flag}: {', '.join(unknown)}. The rows of MindCV's table: "
                        f"{', '.join(ROW_NAMES)}")


def validate_reproduce(args):
    """Check the --reproduce command line; fill in ``row_names``, ``ckpt_paths``, ``overrides``."""
    args.ckpt_paths = _parse_pairs(args.ckpt, "--ckpt")
    args.overrides = _parse_pairs(args.set_keys, "--set")
    _check_rows(list(args.ckpt_paths), "--ckpt")
    if args.from_runs:
        if not os.path.isdir(args.from_runs):
            raise UserError(f"--from_runs folder not found: {args.from_runs}. Pass the --out folder of a reproduction.")
        args.row_names = []
        return
    if not args.out:
        raise UserError("--reproduce needs --out OUT: the folder for the rows and the table.")
    for row, path in args.ckpt_paths.items():
        if not os.path.isfile(path):
            raise UserError(f"--ckpt {row}={path}: file not found. Pass the path of the released checkpoint.")
    args.row_names = list(args.ckpt_paths) or split_list(args.rows)
    _check_rows(args.row_names, "--rows")
    if args.devices < 1 or (RECIPE_DEVICES % args.devices and not args.ckpt_paths
                            and "gradient_accumulation_steps" not in args.overrides):
        raise UserError(f"--devices {args.devices}: use 1, 2, 4 or 8 (the recipes' global batch is 8 x batch_size), "
                        "or choose the accumulation yourself with --set gradient_accumulation_steps=K")
    if not args.data_dir or not os.path.isdir(os.path.join(args.data_dir, "val")):
        raise UserError(f"--data_dir {args.data_dir}: no val/ folder in it. Pass the ImageNet root that holds "
                        "train/<class>/ and val/<class>/ (validate.py reads val/).")
    if not args.ckpt_paths and not os.path.isdir(os.path.join(args.data_dir, "train")):
        raise UserError(f"--data_dir {args.data_dir}: no train/ folder in it, which training needs. Pass the "
                        "ImageNet root, or --ckpt ROW=PATH to validate released checkpoints only.")


def validate(args):
    """Check the parsed command line (the model name aside) and fill in ``args.references`` and
    ``args.worker_counts``; ``UserError`` for a mistake."""
    if args.reproduce or args.from_runs:
        validate_reproduce(args)
        return
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
        if not -1 <= args.frozen_stages <= 4:
            raise UserError(f"--frozen_stages must be in [-1, 4], got {args.frozen_stages}")
        if args.frozen_stages >= 0 and args.task != "train":
            raise UserError("--frozen_stages applies to --task train only")
        if args.image_size < 32:
            raise UserError(f"image_size must be >= 32 (the models reduce it 32-fold), got {args.image_size}")
    elif args.image_size < 8:
        raise UserError(f"image_size must be >= 8, got {args.image_size}")
    refs = []
    for name in split_list(args.compare):
        key = name.lower()
        if key not in REFERENCES:
            raise UserError(f"unknown reference in --compare: {name!r}. Use a comma-separated list of: "
                            f"{', '.join(REFERENCES)}")
        if key not in refs:
            refs.append(key)
    if refs and args.task == "data":
        raise UserError("--compare applies to --task train and infer, not to --task data")
    for name in ("onnxruntime", "onnxruntime_int8"):
        if name in refs and args.task == "train" and not args.table:
            raise UserError(f"--compare {name} measures inference only: use it with --task infer")
    args.references = refs
    try:
        args.worker_counts = [int(w) for w in split_list(args.workers)]
    except ValueError:
        raise UserError(f"--workers must be comma-separated whole numbers, got {args.workers!r}") from None
    if not args.worker_counts or min(args.worker_counts) <= 0:
        raise UserError(f"--workers must list worker counts >= 1, got {args.workers!r}")
    if args.task == "data" and not args.table and args.data_dir is None and args.num_images < args.batch_size:
        raise UserError(f"num_images ({args.num_images}) must be >= batch_size ({args.batch_size})")
