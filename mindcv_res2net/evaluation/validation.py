"""``validate.py``'s work: evaluate a checkpoint and/or its exported files exactly, report (and
write JSON).

Order: the cheap checks first (the files, the model name, the data folder; nothing is built and
no cluster is joined before they pass), then the checkpoint's metadata (read once), then the data
pipeline.

Settings. Each of the model name and the evaluation preprocessing keys (``EVAL_KEYS``: dataset,
image_resize, crop_pct, interpolation, mean, std, in_channels) comes from the first of: the run
itself (command line or ``-c`` YAML), the checkpoint (train.py stores the preprocessing its model
was evaluated with, and its name), the exported files' metadata, the defaults. A checkpoint without
them (MindCV's, PyTorch files) changes nothing. One log line says where each key came from.

Labels follow ``--class_list`` when given, else the checkpoint's ``class_names`` when it has them
(checkpoints written by ``train.py`` do), else the training label names stored in the exported
file (``label_names`` of ``label_source`` ``training``; never its display names): val folders are
mapped through that list, so a val split with a class folder missing (or in another order) is
still scored correctly; else the sorted val folders, as for MindCV's checkpoints (and for the
export of a 1000-class checkpoint without names, whose file states the ImageNet WordNet ids: it is
labelled as its checkpoint is). Val folders that are some but not all of the ImageNet WordNet ids
get a warning there: their sorted order is not the ImageNet class order.

Exported files (``--onnx_path``: onnxruntime; ``--mindir_path``: MindSpore's GraphCell) are
evaluated on the same pipeline. With ``--ckpt_path`` (or ``--pretrained``) as well, the checkpoint
and each file run on the same batches and both results are reported; a file that gives any image
another top-1 class than the checkpoint (beyond ties, see ``compare``) is an error after the report.
An int8 file (``export.py --quantize int8``: its metadata has ``quantization``) is expected to
differ: its top-1, top-5 and loss are reported beside the checkpoint's as differences
(``top1_diff_points``, ``top5_diff_points``, ``loss_diff`` in the JSON), never as an error.

``--per_class`` (``per_class``): each evaluated model also gets a per-class report (support, recall,
precision, F1, the confusion matrix, the misclassified images; exact under ``mpirun``): a
``per_class`` object beside its figures in the JSON (top level and ``results``), a table on the
console and files in ``per_class_dir`` (see ``per_class``). Without it nothing is counted.
"""
import json
import logging
import os

from ..weights.checkpoint_file import PYTORCH_SUFFIXES, meta_of, open_checkpoint, read_checkpoint
from ..deploy.class_names import IMAGENET_WNIDS_FILE, imagenet_wordnet_ids
from ..data.transforms import EVAL_KEYS, EvalPreprocessing, describe_preprocessing
from ..distributed import get_dist_info
from .. import atomic_io
from ..errors import UserError
from ..models import is_model
from ..models.factory import check_model_name, create_model
from ..models.inference import optimize_for_inference
from ..deploy.runtimes import check_deployed_path, open_deployed
from ..weights.model_loading import load_model_weights
from ..training import data_setup
from .compare import TIE_RTOL, evaluate_together
from .evaluate import evaluate
from .per_class import PerClassCounter, add_reports, check_output_dir, evaluation_order, log_reports
from .per_class import report_class_names
from ..training.run_log import Progress, setup_logging
from ..distributed.process_setup import setup_runtime
from ..training.train_step import apply_amp

# config keys a checkpoint's or an exported file's metadata supplies unless the run sets them
FILE_KEYS = ("model",) + EVAL_KEYS


def read_checkpoint_facts(path):
    """``(classifier size or None, metadata)`` of a MindSpore checkpoint, read once."""
    entries = read_checkpoint(path)
    for name in ("classifier.weight", "ema.classifier.weight"):
        if name in entries and hasattr(entries[name], "shape"):
            return int(entries[name].shape[0]), meta_of(entries)
    return None, meta_of(entries)


def checkpoint_class_names(path, num_classes=None, logger=None, meta=None):
    """The training class names stored with a checkpoint (``train.py`` stores them), in label
    order; None when it has none (MindCV's checkpoints, PyTorch files) or they do not fit the
    classifier (logged). ``meta``: the checkpoint's metadata when read already."""
    if str(path).lower().endswith(PYTORCH_SUFFIXES):
        return None
    names = (read_checkpoint_facts(path)[1] if meta is None else meta).get("class_names")
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
    if getattr(args, "per_class", False):
        check_output_dir(args)


def _file_settings(model):
    """The config values an exported file states: its model name and its preprocessing (its
    ``preprocessing`` metadata, else its input shape and plain fields)."""
    if model.input_shape[1] != model.input_shape[2]:
        raise UserError(f"{model.path} takes {model.input_shape[1]}x{model.input_shape[2]} images; validate.py "
                        f"evaluates square images only")
    settings = dict(model.preprocessing_keys())
    name = model.metadata.get("model_name")
    if name and is_model(name):
        settings["model"] = name
    return settings


def _given(args, given_keys):
    """The config keys this run sets itself (validate.py passes the keys of its command line and
    YAML file); None: none, so a checkpoint's or exported file's stored settings replace the values
    of ``args`` (a library caller that wants its own passes their names)."""
    return set(given_keys or ())


def _checkpoint_settings(meta, path):
    """The config values a checkpoint states (train.py's): its model and its preprocessing."""
    settings = {}
    stored = meta.get("preprocessing")
    if stored is not None:
        settings.update(EvalPreprocessing.from_keys(stored, source=f"checkpoint {path}").keys())
    if isinstance(meta.get("model"), str) and is_model(meta["model"]):
        settings["model"] = meta["model"]
    return settings


def apply_checkpoint_settings(args, meta, given, sources):
    """Take the model name and preprocessing stored with the checkpoint for the keys the run does not
    set itself (``given``); record each key taken in ``sources``. Returns the keys taken."""
    taken = set()
    for key, value in _checkpoint_settings(meta, args.ckpt_path).items():
        if key not in given:
            setattr(args, key, value)
            sources[key] = f"checkpoint {args.ckpt_path}"
            taken.add(key)
    return taken


def apply_file_settings(args, deployed, given_keys=None, logger=None, sources=None):
    """Take the model name and preprocessing from the exported files (the keys the run, or the
    checkpoint, does not set); check the files agree with each other and with the run's image size
    and channels. ``sources``: ``{key: where it came from}``, for messages; updated."""
    if not deployed:
        return args
    given = _given(args, given_keys)
    sources = {} if sources is None else sources
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
            where = f" ({sources[key]})" if key in sources else ""
            raise UserError(f"--{key} {getattr(args, key)}{where} does not fit {deployed[0].path}, whose {what} is "
                            f"{first[key]}: leave {key} out (the file's is used)")
    if "model" in given and first.get("model", args.model) != args.model:
        (logger or logging.getLogger("mindcv_res2net")).warning(
            "%s holds a %s model, but --model is %s", deployed[0].path, first["model"], args.model)
    for key, value in first.items():
        if key not in given:
            setattr(args, key, value)
            sources[key] = f"the metadata of {deployed[0].path}"
    if (args.ckpt_path or args.pretrained) and "model" not in first and "model" not in given:
        (logger or logging.getLogger("mindcv_res2net")).warning(
            "%s does not name its model: the checkpoint is built as --model %s", deployed[0].path, args.model)
    return args


def _run_sources(given, cli_keys, config_path):
    """``{key: "the command line" / "config FILE"}`` for the keys the run sets itself."""
    if cli_keys is None:
        return {key: "the run's settings" for key in given}
    return {key: "the command line" if key in cli_keys else f"config {config_path}" for key in given}


def _file_class_names(deployed, num_classes, logger):
    """The training label names the exported files state (``label_names`` from training; never
    display names), or None."""
    names = None
    for model in deployed:
        theirs = model.training_labels
        if theirs is None:
            continue
        if num_classes is not None and len(theirs) != num_classes:
            logger.warning("%s stores %d label names for %d outputs: ignoring them", model.path, len(theirs),
                           num_classes)
            continue
        if names is not None and theirs != names:
            raise UserError(f"{deployed[0].path} and {model.path} store different label names: validate them "
                            f"in separate runs")
        names = theirs
    return names


def _label_names(args, ckpt_names, file_names, deployed, logger):
    """The label names the val folders are mapped through (None: ``--class_list`` or the sorted folders)."""
    if ckpt_names is not None and file_names is not None and ckpt_names != file_names:
        raise UserError(f"the class names stored in {args.ckpt_path} and in {deployed[0].path} differ: the file "
                        f"was not exported from this checkpoint")
    names, names_from = ckpt_names, args.ckpt_path
    if names is None and file_names is not None:
        names, names_from = file_names, deployed[0].path
    if names is not None and args.class_list:
        # an explicit list maps the folders onto the classifier's outputs: it decides the labels
        logger.info("labels follow --class_list %s, not the class names stored in %s", args.class_list, names_from)
        return None
    if names is not None:
        logger.info("labels follow the %d class names stored in %s", len(names), names_from)
    return names


def _warn_wordnet_subset(args, folders, num_classes, logger):
    """Sorted val folders that are some, not all, of the ImageNet WordNet ids are not in ImageNet's
    class order: say so, and how to label them by id (the figures stay MindCV's)."""
    if num_classes != 1000 or args.class_list or len(folders) >= 1000:
        return
    wnids = imagenet_wordnet_ids()
    if set(folders) <= set(wnids) and list(folders) != wnids[:len(folders)]:
        logger.warning("the %d val folders are ImageNet WordNet ids but not all 1000 of them: labels follow their "
                       "sorted order (as in MindCV), not the ImageNet class order. To label them by WordNet id, pass "
                       "--class_list %s", len(folders), IMAGENET_WNIDS_FILE)


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
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_io.write_text_atomic(path, json.dumps(result, indent=2), "result JSON")


def _log_result(logger, label, res):
    logger.info("%s on %d images: top-1 %.2f%%, top-5 %.2f%%, loss %.4f (%.1f s)", label, res["num_samples"],
                100 * res["top1"], 100 * res["top5"], res["loss"], res["seconds"])


def _settings(args, deployed, given_keys, cli_keys, ckpt_meta, logger):
    """Apply the checkpoint's and then the exported files' settings to the keys the run leaves
    out; log where the preprocessing came from (``logger``: None on other ranks)."""
    given = _given(args, given_keys)
    sources = _run_sources(given, cli_keys, getattr(args, "config", None))
    taken = apply_checkpoint_settings(args, ckpt_meta, given, sources) if args.ckpt_path else set()
    args = apply_file_settings(args, deployed, given | taken, logger, sources)
    prep = EvalPreprocessing.from_keys(vars(args), source=", ".join(sorted(set(sources.values()))) or "the defaults")
    if logger is not None:
        logger.info("%s", describe_preprocessing(prep, sources))
    return args


def validate(args, given_keys=None, cli_keys=None):
    """Evaluate what ``args`` names; return the result dict (also written to ``args.json``).

    ``given_keys``: the config keys the run set itself (command line or YAML), ``cli_keys`` those of
    them given on the command line (for the log line); the checkpoint's and then an exported file's
    metadata supply the others of ``FILE_KEYS``. None: the keys that differ from the defaults.
    """
    check_inputs(args)
    deployed = open_deployed(getattr(args, "onnx_path", None), getattr(args, "mindir_path", None))
    dist = setup_runtime(args)
    logger = setup_logging(None, dist.rank, dist.world_size, debug=getattr(args, "debug", False))
    ckpt = open_checkpoint(args.ckpt_path) if args.ckpt_path else None  # read once, passed down
    ckpt_classes, ckpt_meta = read_checkpoint_facts(ckpt) if ckpt else (None, {})
    args = _settings(args, deployed, given_keys, cli_keys, ckpt_meta, logger if dist.rank == 0 else None)
    if args.ckpt_path or args.pretrained:
        check_model_name(args.model)
    ckpt_names = checkpoint_class_names(ckpt, ckpt_classes, logger, ckpt_meta) if ckpt else None
    num_classes = _num_classes(args, ckpt_classes, deployed)
    names = _label_names(args, ckpt_names, _file_class_names(deployed, num_classes, logger), deployed, logger)
    val_data = data_setup.build_val(args, dist, class_names=names)
    num_classes = num_classes or len(val_data.class_names)
    if len(val_data.class_names) > num_classes:
        raise UserError(f"the validation set {val_data.root} has {len(val_data.class_names)} classes but the "
                        f"model has {num_classes}: check --data_dir/--val_split, or pass --class_list to map "
                        "the folders onto the model's classes")
    if names is None and dist.rank == 0:
        _warn_wordnet_subset(args, val_data.class_names, num_classes, logger)
    eval_net = _build_network(args, ckpt, num_classes, logger) if args.ckpt_path or args.pretrained else None
    per_class, namer = _per_class_counter(args, val_data, num_classes)

    progress = Progress(val_data.steps_per_epoch, "validate", enabled=dist.rank == 0)
    if deployed:
        runs = evaluate_together(eval_net, deployed, val_data, rank=dist.rank, world_size=dist.world_size,
                                 progress=lambda i: progress.update(), per_class=per_class)
    else:
        metrics = evaluate(eval_net, val_data, num_batches=val_data.steps_per_epoch,
                           progress=lambda i, n: progress.update(), per_class=per_class)
        runs = [dict(metrics, label="reference")]
    progress.close()
    skipped = val_data.take_skipped_count()
    if skipped:
        logger.warning("%d unreadable image(s) skipped", skipped)
    if per_class is not None:
        labels = _run_labels(args, runs, deployed)
        add_reports(args, runs, labels, report_class_names(val_data.class_names, num_classes), namer,
                    write=dist.rank == 0)
    result, mismatch = _report(args, runs, deployed, logger if dist.rank == 0 else None)
    if per_class is not None and dist.rank == 0:
        log_reports(logger, args, runs, labels)
    if dist.rank == 0 and getattr(args, "json", None):
        _write_json(args.json, result)
    logging.getLogger("mindcv_res2net").debug("validation result: %s", result)
    if mismatch:
        raise UserError(mismatch)
    return result


def _build_network(args, ckpt, num_classes, logger):
    """The network of the checkpoint (or the published weights), ready for evaluation."""
    net = create_model(args.model, pretrained=args.pretrained, num_classes=num_classes, in_channels=args.in_channels)
    if args.ckpt_path:
        # load_model_weights logs its own "loaded N parameters from ..." line
        load_model_weights(net, ckpt, strict=True, num_classes=num_classes,
                           in_channels=args.in_channels, use_ema=bool(args.ema))
    if args.val_amp_level == "O0":
        return optimize_for_inference(net)
    # MindCV's val_amp_level: the plain network under mixed precision, float32 logits
    net.set_train(False)
    eval_net = apply_amp(net, args.val_amp_level)
    logger.info("evaluating at val_amp_level %s", args.val_amp_level)
    return eval_net


def _per_class_counter(args, val_data, num_classes):
    """With ``--per_class``: ``(a callable making a new PerClassCounter over this rank's images,
    index -> image name)``; else ``(None, None)`` (nothing is counted, no collective runs)."""
    if not getattr(args, "per_class", False):
        return None, None
    order, namer = evaluation_order(val_data.loader)
    return (lambda: PerClassCounter(num_classes, order)), namer


def _run_labels(args, runs, deployed):
    """A short name per run, for the per-class files and tables: the file name of the checkpoint
    (the model name for the published weights), then of each exported file."""
    labels = []
    if runs[0]["label"] == "reference":
        labels.append(os.path.basename(os.fspath(args.ckpt_path)) if args.ckpt_path else args.model)
    return labels + [os.path.basename(os.fspath(model.path)) for model in deployed]


def _report(args, runs, deployed, logger):
    """The result dict (top level: the checkpoint's figures, else the first file's), log lines, and
    the error text when a file disagrees with the checkpoint (else None)."""
    reference = runs[0] if runs[0]["label"] == "reference" else None
    ref_name = args.ckpt_path or f"the published {args.model} weights"
    by_path = dict(zip((m.path for m in deployed), runs[1:] if reference else runs))
    main = reference or runs[0]
    result = {"model": args.model, "ckpt_path": args.ckpt_path, "top1": main["top1"], "top5": main["top5"],
              "loss": main["loss"], "num_samples": main["num_samples"],
              # rank 0's steady-state speed at this batch size, and the run's shape (benchmark.py --reproduce)
              "ms_per_step": main.get("ms_per_step"), "img_per_s": main.get("img_per_s"),
              "batch_size": args.batch_size, "num_classes": args.num_classes, "device_target": args.device_target,
              "mode": args.mode, "ranks": get_dist_info().world_size}
    if "per_class" in main:
        result["per_class"] = main["per_class"]
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
            if model.quantization:  # a quantized copy: its figures differ by design; report by how much
                entry.update(_differences(res, reference), quantization=model.quantization)
                if logger:
                    _log_differences(logger, model.label, ref_name, entry)
            elif res["argmax_differences"]:
                problems.append(f"{model.path} ({res['argmax_differences']} of {res['num_samples']} images)")
        result["results"].append(entry)
    mismatch = None
    if problems:
        mismatch = (f"{' and '.join(problems)} gave another top-1 class than {ref_name} beyond ties (logits within "
                    f"{TIE_RTOL:g} relative): the exported file does not reproduce the checkpoint. Export it "
                    f"again from this checkpoint")
    return result, mismatch


def _differences(res, reference):
    """A quantized file's figures minus the checkpoint's: top-1 / top-5 in points, loss."""
    return {"top1_diff_points": 100 * (res["top1"] - reference["top1"]),
            "top5_diff_points": 100 * (res["top5"] - reference["top5"]), "loss_diff": res["loss"] - reference["loss"]}


def _log_differences(logger, label, ref_name, entry):
    logger.info("%s against %s: top-1 %+.2f points, top-5 %+.2f points, loss %+.4f; %d image(s) with "
                "another top-1 class (expected of a quantized model, not an error)", label, ref_name,
                entry["top1_diff_points"], entry["top5_diff_points"], entry["loss_diff"], entry["argmax_differences"])


def _figures(res):
    figures = {"top1": res["top1"], "top5": res["top5"], "loss": res["loss"], "num_samples": res["num_samples"],
               "seconds": res["seconds"], "ms_per_step": res.get("ms_per_step"), "img_per_s": res.get("img_per_s")}
    if "per_class" in res:  # validate.py --per_class
        figures["per_class"] = res["per_class"]
    return figures
