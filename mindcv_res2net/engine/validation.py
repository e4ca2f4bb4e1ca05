"""``validate.py``'s work: evaluate a checkpoint and/or its exported files exactly, report (and
write JSON).

Order: the cheap checks first (the files, the model name, the data folder; nothing is built and
no cluster is joined before they pass), then the checkpoint's classifier size and stored
``class_names``, then the data pipeline. Labels follow ``--class_list`` when given, else the
checkpoint's ``class_names`` when it has them (checkpoints written by ``train.py`` do), else the
class names stored in the exported file: val folders are mapped through that list, so a val split
with a class folder missing (or in another order) is still scored correctly; else the sorted val
folders, as for MindCV's checkpoints.

Exported files (``--onnx_path``: onnxruntime; ``--mindir_path``: MindSpore's GraphCell) are
evaluated on the same pipeline. Its preprocessing (image size, crop_pct, interpolation, mean, std)
and the model name come from the file's metadata, except for the keys the run sets itself (command
line or YAML). With ``--ckpt_path`` (or ``--pretrained``) as well, the checkpoint and each file run
on the same batches and both results are reported; a file that gives any image another top-1 class
than the checkpoint (beyond ties, see ``compare``) is an error after the report.
"""
import json
import logging
import os

from ..checkpoint import PYTORCH_SUFFIXES, read_checkpoint, read_checkpoint_meta
from ..cli.config import get_defaults
from ..errors import UserError
from ..models import is_model
from ..models.factory import check_model_name, create_model
from ..models.inference import optimize_for_inference
from ..runtimes import check_deployed_path, open_deployed
from ..weights import load_model_weights
from . import data_setup
from .compare import TIE_RTOL, evaluate_together
from .evaluate import evaluate
from .run_log import Progress, setup_logging
from .runtime import setup_runtime
from .train_step import apply_amp

# config keys an exported file's metadata supplies unless the run sets them
FILE_KEYS = ("model", "image_resize", "in_channels", "crop_pct", "interpolation", "mean", "std")


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
    checkpoint and exported files, the model name, the data folder. Raises ``UserError`` naming
    the input."""
    onnx_path, mindir_path = getattr(args, "onnx_path", None), getattr(args, "mindir_path", None)
    if not args.ckpt_path and not args.pretrained and not onnx_path and not mindir_path:
        raise UserError("nothing to evaluate: pass --ckpt_path FILE (a MindSpore checkpoint, ours or "
                        "MindCV's), --pretrained True, --onnx_path FILE or --mindir_path FILE")
    if args.ckpt_path:
        path = os.fspath(args.ckpt_path)
        if not os.path.exists(path):
            raise UserError(f"checkpoint file not found: {path}. Check --ckpt_path (a .ckpt written by "
                            f"train.py, or MindCV's)")
        if os.path.isdir(path):
            raise UserError(f"--ckpt_path is a directory, not a file: {path}. Pass the .ckpt file itself")
    if onnx_path:
        check_deployed_path(onnx_path, "--onnx_path")
    if mindir_path:
        check_deployed_path(mindir_path, "--mindir_path")
    if args.ckpt_path or args.pretrained:
        check_model_name(args.model)
    data_setup.check_data_dirs(args, [args.val_split])


def _file_settings(model):
    """The config values an exported file states: its input shape and its metadata."""
    meta = model.metadata
    settings = {"image_resize": model.input_shape[-1], "in_channels": model.input_shape[0]}
    if meta.get("model_name") and is_model(meta["model_name"]):
        settings["model"] = meta["model_name"]
    for key in ("crop_pct", "interpolation", "mean", "std"):
        if key in meta:
            settings[key] = meta[key]
    if model.input_shape[1] != model.input_shape[2]:
        raise UserError(f"{model.path} takes {model.input_shape[1]}x{model.input_shape[2]} images; validate.py "
                        f"evaluates square images only")
    return settings


def _given(args, given_keys):
    """The config keys this run sets itself; without ``given_keys``, those that differ from the defaults."""
    if given_keys is not None:
        return set(given_keys)
    defaults = get_defaults("validate")
    return {key for key in FILE_KEYS if getattr(args, key, None) != defaults.get(key)}


def apply_file_settings(args, deployed, given_keys=None, logger=None):
    """Take the model name and preprocessing from the exported files (the keys the run does not
    set itself); check the files agree with each other and with the run's image size and channels."""
    if not deployed:
        return args
    given = _given(args, given_keys)
    first = _file_settings(deployed[0])
    for other in deployed[1:]:
        theirs = _file_settings(other)
        for key in sorted(set(first) & set(theirs)):
            if first[key] != theirs[key]:
                raise UserError(f"{deployed[0].path} and {other.path} differ in {key} ({first[key]} / "
                                f"{theirs[key]}): validate them in separate runs")
    for key in ("image_resize", "in_channels"):
        if key in given and getattr(args, key) != first[key]:
            what = "image size" if key == "image_resize" else "input channels"
            raise UserError(f"--{key} {getattr(args, key)} does not fit {deployed[0].path}, whose {what} is "
                            f"{first[key]}: leave {key} out (the file's is used)")
    if "model" in given and first.get("model", args.model) != args.model:
        (logger or logging.getLogger("mindcv_res2net")).warning(
            "%s holds a %s model, but --model is %s", deployed[0].path, first["model"], args.model)
    taken = []
    for key, value in first.items():
        if key not in given:
            if getattr(args, key, None) != value:
                taken.append(f"{key} {value}")
            setattr(args, key, value)
    if taken and logger is not None:
        logger.info("from %s: %s", deployed[0].path, ", ".join(taken))
    if (args.ckpt_path or args.pretrained) and "model" not in first and "model" not in given:
        (logger or logging.getLogger("mindcv_res2net")).warning(
            "%s does not name its model: the checkpoint is built as --model %s", deployed[0].path, args.model)
    return args


def _file_class_names(deployed, num_classes, logger):
    names = None
    for model in deployed:
        theirs = model.metadata.get("class_names")
        if theirs is None:
            continue
        if num_classes is not None and len(theirs) != num_classes:
            logger.warning("%s stores %d class names for %d outputs: ignoring them", model.path, len(theirs),
                           num_classes)
            continue
        if names is not None and theirs != names:
            raise UserError(f"{deployed[0].path} and {model.path} store different class names: validate them "
                            f"in separate runs")
        names = theirs
    return names


def _num_classes(args, ckpt_classes, deployed):
    """The classifier size all sources agree on (None: from the data)."""
    sources = []
    if args.num_classes:
        sources.append((f"--num_classes {args.num_classes}", args.num_classes))
    if ckpt_classes is not None:
        sources.append((f"checkpoint {args.ckpt_path} ({ckpt_classes} classes)", ckpt_classes))
    for model in deployed:
        if not model.num_classes:
            raise UserError(f"{model.path} has no classifier output (an exported backbone): validate.py needs "
                            f"logits per class")
        sources.append((f"{model.path} ({model.num_classes} outputs)", model.num_classes))
    for name, value in sources[1:]:
        if value != sources[0][1]:
            raise UserError(f"{sources[0][0]} and {name} disagree on the number of classes: pass files of the "
                            f"same model")
    return sources[0][1] if sources else None


def _write_json(path, result):
    tmp = path + ".tmp"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(tmp, "w") as f:
        json.dump(result, f, indent=2)
    os.replace(tmp, path)


def _log_result(logger, label, res):
    logger.info("%s on %d images: top-1 %.2f%%, top-5 %.2f%%, loss %.4f (%.1f s)", label, res["num_samples"],
                100 * res["top1"], 100 * res["top5"], res["loss"], res["seconds"])


def validate(args, given_keys=None):
    """Evaluate what ``args`` names; return the result dict (also written to ``args.json``).

    ``given_keys``: the config keys the run set itself (command line or YAML); an exported file's
    metadata supplies the others of ``FILE_KEYS``. None: the keys that differ from the defaults.
    """
    check_inputs(args)
    deployed = open_deployed(getattr(args, "onnx_path", None), getattr(args, "mindir_path", None))
    dist = setup_runtime(args)
    logger = setup_logging(None, dist.rank, dist.world_size, debug=getattr(args, "debug", False))
    args = apply_file_settings(args, deployed, given_keys, logger if dist.rank == 0 else None)
    if deployed and (args.ckpt_path or args.pretrained):
        check_model_name(args.model)
    ckpt_classes = checkpoint_num_classes(args.ckpt_path) if args.ckpt_path else None
    ckpt_names = checkpoint_class_names(args.ckpt_path, ckpt_classes, logger) if args.ckpt_path else None
    num_classes = _num_classes(args, ckpt_classes, deployed)
    file_names = _file_class_names(deployed, num_classes, logger)
    if ckpt_names is not None and file_names is not None and ckpt_names != file_names:
        raise UserError(f"the class names stored in {args.ckpt_path} and in {deployed[0].path} differ: the file "
                        f"was not exported from this checkpoint")
    names, names_from = ckpt_names, args.ckpt_path
    if names is None and file_names is not None:
        names, names_from = file_names, deployed[0].path
    if names is not None and args.class_list:
        # an explicit list maps the folders onto the classifier's outputs: it decides the labels
        logger.info("labels follow --class_list %s, not the class names stored in %s", args.class_list, names_from)
        names = None
    elif names is not None:
        logger.info("labels follow the %d class names stored in %s", len(names), names_from)
    val_data = data_setup.build_val(args, dist, class_names=names)
    num_classes = num_classes or len(val_data.class_names)
    if len(val_data.class_names) > num_classes:
        raise UserError(f"the validation set {val_data.root} has {len(val_data.class_names)} classes but the "
                        f"model has {num_classes}: check --data_dir/--val_split, or pass --class_list to map "
                        "the folders onto the model's classes")
    eval_net = None
    if args.ckpt_path or args.pretrained:
        net = create_model(args.model, pretrained=args.pretrained, num_classes=num_classes,
                           in_channels=args.in_channels)
        if args.ckpt_path:
            # load_model_weights logs its own "loaded N parameters from ..." line
            load_model_weights(net, args.ckpt_path, strict=True, num_classes=num_classes,
                               in_channels=args.in_channels, use_ema=bool(args.ema))
        if args.val_amp_level == "O0":
            eval_net = optimize_for_inference(net)
        else:  # MindCV's val_amp_level: the plain network under mixed precision, float32 logits
            net.set_train(False)
            eval_net = apply_amp(net, args.val_amp_level)
            logger.info("evaluating at val_amp_level %s", args.val_amp_level)

    progress = Progress(val_data.steps_per_epoch, "validate", enabled=dist.rank == 0)
    if deployed:
        runs = evaluate_together(eval_net, deployed, val_data, rank=dist.rank, world_size=dist.world_size,
                                 progress=lambda i: progress.update())
    else:
        metrics = evaluate(eval_net, val_data, num_batches=val_data.steps_per_epoch,
                           progress=lambda i, n: progress.update())
        runs = [dict(metrics, label="reference")]
    progress.close()
    skipped = val_data.take_skipped_count()
    if skipped:
        logger.warning("%d unreadable image(s) skipped", skipped)
    result, mismatch = _report(args, runs, deployed, logger if dist.rank == 0 else None)
    if dist.rank == 0 and getattr(args, "json", None):
        _write_json(args.json, result)
    logging.getLogger("mindcv_res2net").debug("validation result: %s", result)
    if mismatch:
        raise UserError(mismatch)
    return result


def _report(args, runs, deployed, logger):
    """The result dict (top level: the checkpoint's figures, else the first file's), log lines, and
    the error text when a file disagrees with the checkpoint (else None)."""
    reference = runs[0] if runs[0]["label"] == "reference" else None
    ref_name = args.ckpt_path or f"the published {args.model} weights"
    by_path = dict(zip((m.path for m in deployed), runs[1:] if reference else runs))
    main = reference or runs[0]
    result = {"model": args.model, "ckpt_path": args.ckpt_path, "top1": main["top1"], "top5": main["top5"],
              "loss": main["loss"], "num_samples": main["num_samples"]}
    for model in deployed:
        result[model.option[2:]] = model.path
    if not deployed:
        if logger:
            _log_result(logger, args.model, main)
        return result, None
    result["backend"] = "mindspore" if reference else deployed[0].backend
    result["results"] = []
    if reference:
        result["results"].append({"source": ref_name, "format": "checkpoint", "backend": "mindspore",
                                  **_figures(reference)})
        if logger:
            _log_result(logger, f"{args.model} ({ref_name})", reference)
    problems = []
    for model in deployed:
        res = by_path[model.path]
        entry = {"source": model.path, "format": model.format, "backend": model.backend, **_figures(res)}
        if logger:
            _log_result(logger, model.label, res)
        if reference:
            loss_rel = abs(res["loss"] - reference["loss"]) / max(abs(reference["loss"]), 1e-12)
            entry.update({k: res[k] for k in ("argmax_differences", "ties", "max_abs_logit_diff",
                                               "max_rel_logit_diff")}, loss_rel_diff=loss_rel)
            if logger:
                logger.info("%s against %s: %d of %d images with another top-1 class (%d ties within %g), max "
                            "|logit difference| %.3g (%.3g relative), loss difference %.3g relative",
                            model.label, ref_name, res["argmax_differences"], res["num_samples"], res["ties"],
                            TIE_RTOL, res["max_abs_logit_diff"], res["max_rel_logit_diff"], loss_rel)
            if res["argmax_differences"]:
                problems.append(f"{model.path} ({res['argmax_differences']} of {res['num_samples']} images)")
        result["results"].append(entry)
    mismatch = None
    if problems:
        mismatch = (f"{' and '.join(problems)} gave another top-1 class than {ref_name} beyond ties (logits within "
                    f"{TIE_RTOL:g} relative): the exported file does not reproduce the checkpoint. Export it "
                    f"again from this checkpoint")
    return result, mismatch


def _figures(res):
    return {"top1": res["top1"], "top5": res["top5"], "loss": res["loss"], "num_samples": res["num_samples"],
            "seconds": res["seconds"]}
