"""``validate.py``'s work: load a checkpoint, evaluate exactly, report (and write JSON)."""
import json
import logging
import os

from ..checkpoint import load_model_weights, read_checkpoint
from ..errors import UserError
from ..models import create_model
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


def validate(args):
    dist = setup_runtime(args)
    logger = setup_logging(None, dist.rank, dist.world_size, debug=getattr(args, "debug", False))
    if not args.ckpt_path and not args.pretrained:
        raise UserError("nothing to evaluate: pass --ckpt_path FILE (a MindSpore checkpoint, ours or "
                        "MindCV's) or --pretrained True")
    val_data = data_setup.build_val(args, dist)
    ckpt_classes = checkpoint_num_classes(args.ckpt_path) if args.ckpt_path else None
    num_classes = args.num_classes or ckpt_classes or len(val_data.class_names)
    if ckpt_classes is not None and ckpt_classes != num_classes:
        raise UserError(f"checkpoint {args.ckpt_path} has a {ckpt_classes}-class classifier but --num_classes "
                        f"is {num_classes}: pass --num_classes {ckpt_classes}, or the checkpoint trained for "
                        f"{num_classes} classes")
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
