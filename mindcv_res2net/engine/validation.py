"""``validate.py``'s work: load a checkpoint, evaluate exactly, report (and write JSON).

Order: the cheap checks first (checkpoint file, model name, data folder; nothing is built
and no cluster is joined before they pass), then the checkpoint's classifier size and stored
``class_names``, then the data pipeline. Labels follow ``--class_list`` when given, else the
checkpoint's ``class_names`` when it has them (checkpoints written by ``train.py`` do): val
folders are mapped through that list, so a val split with a class folder missing (or in another
order) is still scored correctly; else the sorted val folders, as for MindCV's checkpoints.
"""
import json
import logging
import os

from ..checkpoint import PYTORCH_SUFFIXES, load_model_weights, read_checkpoint, read_checkpoint_meta
from ..data.dataset import check_data_dir
from ..errors import UserError
from ..models import create_model
from ..models.factory import check_model_name
from . import data_setup
from .evaluate import evaluate
from .run_log import Progress, setup_logging
from .runtime import setup_runtime


def checkpoint_num_classes(path):
    """The classifier size stored in a checkpoint (None when it has no classifier)."""
    arrays = read_checkpoint(path)
    for name in ("classifier.weight", "ema.classifier.weight"):
        if name in arrays and hasattr(arrays[name], "shape"):
            return int(arrays[name].shape[0])
    return None


def checkpoint_class_names(path, num_classes=None, logger=None):
    """The training class names stored with a checkpoint (``train.py`` stores them), in label
    order; None when it has none (MindCV's checkpoints, PyTorch files) or they do not fit the
    classifier (logged)."""
    if str(path).lower().endswith(PYTORCH_SUFFIXES):
        return None
    names = read_checkpoint_meta(path).get("class_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        return None
    if num_classes is not None and len(names) != num_classes:
        (logger or logging.getLogger("mindcv_res2net")).warning(
            "checkpoint %s stores %d class names for a %d-class classifier: ignoring them (labels "
            "come from the val folders)", path, len(names), num_classes)
        return None
    return names


def check_inputs(args):
    """What can be checked without MindSpore work, in this order: something to evaluate, the
    checkpoint file, the model name, the data folder. Raises ``UserError`` naming the input."""
    if not args.ckpt_path and not args.pretrained:
        raise UserError("nothing to evaluate: pass --ckpt_path FILE (a MindSpore checkpoint, ours or "
                        "MindCV's) or --pretrained True")
    if args.ckpt_path:
        path = os.fspath(args.ckpt_path)
        if not os.path.exists(path):
            raise UserError(f"checkpoint file not found: {path}. Check --ckpt_path (a .ckpt written by "
                            f"train.py, or MindCV's)")
        if os.path.isdir(path):
            raise UserError(f"--ckpt_path is a directory, not a file: {path}. Pass the .ckpt file itself")
    check_model_name(args.model)
    check_data_dir(args.dataset, args.data_dir, args.val_split)


def validate(args):
    check_inputs(args)
    dist = setup_runtime(args)
    logger = setup_logging(None, dist.rank, dist.world_size, debug=getattr(args, "debug", False))
    ckpt_classes = checkpoint_num_classes(args.ckpt_path) if args.ckpt_path else None
    ckpt_names = checkpoint_class_names(args.ckpt_path, ckpt_classes, logger) if args.ckpt_path else None
    if ckpt_names is not None and args.class_list:
        # an explicit list maps the folders onto the classifier's outputs: it decides the labels
        logger.info("labels follow --class_list %s, not the class names stored in %s", args.class_list,
                    args.ckpt_path)
        ckpt_names = None
    elif ckpt_names is not None:
        logger.info("labels follow the %d class names stored in %s", len(ckpt_names), args.ckpt_path)
    if ckpt_classes is not None and args.num_classes and ckpt_classes != args.num_classes:
        raise UserError(f"checkpoint {args.ckpt_path} has a {ckpt_classes}-class classifier but --num_classes "
                        f"is {args.num_classes}: pass --num_classes {ckpt_classes}, or the checkpoint trained "
                        f"for {args.num_classes} classes")
    val_data = data_setup.build_val(args, dist, class_names=ckpt_names)
    num_classes = args.num_classes or ckpt_classes or len(val_data.class_names)
    if len(val_data.class_names) > num_classes:
        raise UserError(f"the validation set {val_data.root} has {len(val_data.class_names)} classes but the "
                        f"model has {num_classes}: check --data_dir/--val_split, or pass --class_list to map "
                        "the folders onto the model's classes")
    net = create_model(args.model, pretrained=args.pretrained, num_classes=num_classes,
                       in_channels=args.in_channels)
    if args.ckpt_path:
        report = load_model_weights(net, args.ckpt_path, strict=True, num_classes=num_classes,
                                    in_channels=args.in_channels, use_ema=bool(args.ema))
        logger.info(report.summary() if hasattr(report, "summary") else f"loaded {args.ckpt_path}")
    from ..inference import optimize_for_inference
    eval_net = optimize_for_inference(net)

    progress = Progress(val_data.steps_per_epoch, "validate", enabled=dist.rank == 0)
    metrics = evaluate(eval_net, val_data, num_batches=val_data.steps_per_epoch,
                       progress=lambda i, n: progress.update())
    progress.close()
    skipped = val_data.take_skipped_count()
    if skipped:
        logger.warning("%d unreadable image(s) skipped", skipped)
    result = {"model": args.model, "ckpt_path": args.ckpt_path, "top1": metrics["top1"],
              "top5": metrics["top5"], "loss": metrics["loss"], "num_samples": metrics["num_samples"]}
    if dist.rank == 0:
        logger.info("%s on %d images: top-1 %.2f%%, top-5 %.2f%%, loss %.4f (%.1f s)", args.model,
                    metrics["num_samples"], 100 * metrics["top1"], 100 * metrics["top5"], metrics["loss"],
                    metrics["seconds"])
        if getattr(args, "json", None):
            tmp = args.json + ".tmp"
            os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
            with open(tmp, "w") as f:
                json.dump(result, f, indent=2)
            os.replace(tmp, args.json)
    logging.getLogger("mindcv_res2net").debug("validation result: %s", result)
    return result
