"""The training run: check the inputs, build the parts from the resolved config, start or resume,
loop over epochs, validate, checkpoint.

``train(args)`` is all that ``train.py`` calls. Resuming (``--resume auto`` or a path) restores the
model, optimizer moments and step, EMA, loss-scale state and epoch; the data order and the
augmentation randomness are functions of (seed, epoch, rank), so an interrupted run that resumes
ends with the same weights as an uninterrupted one. In a distributed run rank 0 alone decides
whether and from where to resume and sends the state to every rank, so ranks that cannot see the
checkpoint folder (no shared file system) continue identically. The learning-rate schedule is not
state: it is rebuilt from the config, so a run can be extended (``--epoch_size``) on resume.
"""
import logging
import math
import os
import time

import mindspore as ms
import numpy as np

from ..weights.checkpoint_file import is_meta_entry, meta_of, read_checkpoint, read_checkpoint_meta
from ..distributed import (average_batch_norm_statistics, broadcast_object, broadcast_parameters,
                           parameters_divergence)
from ..data.transforms import EvalPreprocessing
from .. import atomic_io
from ..errors import UserError
from ..models.factory import check_model_name, create_model
from ..weights.model_loading import load_model_weights
from . import data_setup
from .checkpoint_manager import CheckpointManager, RunLock, probe_writable
from .frozen_stages import freeze_stages
from ..evaluation.evaluate import evaluate
from ..loss.losses import balanced_class_weights, create_loss
from ..optim.optim_factory import create_optimizer, is_schedule_parameter, set_global_step
from .overflow import OverflowGuard, startup_note
from .run_log import EpochRecords, Progress, keep_previous_version, setup_logging
from ..distributed.process_setup import setup_runtime
from ..scheduler.scheduler_factory import create_scheduler
from .summary import TrainingSummary
from .train_step import TrainStep


# ---------------------------------------------------------------------------------- inputs
def _check_inputs(args):
    """The cheap checks, before MindSpore, the cluster or the data pipeline are touched."""
    check_model_name(args.model)
    if args.ckpt_path and not os.path.isfile(args.ckpt_path):
        raise UserError(f"--ckpt_path file not found: {args.ckpt_path}. Pass an existing checkpoint, or drop "
                        "--ckpt_path to train from scratch.")
    if args.resume_opt:
        _resume_opt_to_resume(args)
    data_setup.check_data_dirs(args, [args.train_split] + ([args.val_split] if args.val_while_train else []))
    _check_schedule(args)


# steps per epoch of the schedule checked before the data is scanned: enough for the checks that count
# steps (cyclic's two per cycle); the real count is checked again when the run builds its schedule
CHECK_STEPS_PER_EPOCH = 100


def _check_schedule(args):
    """The schedule's keys, checked before any rank joins the cluster; its notes are logged once,
    when the run builds the real schedule."""
    schedule_logger = logging.getLogger(create_scheduler.__module__)
    level = schedule_logger.level
    schedule_logger.setLevel(logging.ERROR)
    try:
        _create_lr(args, steps_per_epoch=CHECK_STEPS_PER_EPOCH)
    finally:
        schedule_logger.setLevel(level)


def _resume_opt_to_resume(args):
    """MindCV's ``ckpt_path`` + ``resume_opt``: continue that checkpoint's training. Here a training
    checkpoint holds the optimizer state itself, so this is ``--resume ckpt_path``."""
    if not args.ckpt_path:
        raise UserError("resume_opt needs ckpt_path: give the training checkpoint to continue with --ckpt_path, "
                        "or use --resume auto / --resume PATH.")
    if args.resume:
        raise UserError(f"resume_opt with ckpt_path {args.ckpt_path} and resume {args.resume} both say where to "
                        "continue from: keep one of them.")
    if "epoch" not in read_checkpoint_meta(args.ckpt_path):
        raise UserError(f"resume_opt: {args.ckpt_path} holds weights only (no optimizer state or epoch; MindCV keeps "
                        "those in a separate optim_<model>.ckpt, which is not read here). Continue from a checkpoint "
                        "written by train.py, or drop resume_opt to fine-tune from these weights.")
    args.resume, args.ckpt_path = args.ckpt_path, None


# ---------------------------------------------------------------------------------- build
def scaled_lr(args, world=1):
    """``(lr, note)``: the peak lr after ``lr_scale`` for this run's global batch (batch_size x ranks x
    gradient_accumulation_steps against ``lr_base_batch``), and the line that says so (None: unscaled)."""
    lr, how = args.lr, getattr(args, "lr_scale", "none")
    if how == "none":
        return lr, None
    global_batch = int(args.batch_size) * int(world) * int(args.gradient_accumulation_steps)
    ratio = global_batch / float(args.lr_base_batch)
    factor = ratio if how == "linear" else math.sqrt(ratio)
    return lr * factor, (f"lr_scale {how}: lr {lr:g} x {'' if how == 'linear' else 'sqrt'}(global batch "
                         f"{global_batch} / lr_base_batch {args.lr_base_batch}) = {lr * factor:g}")


def _create_lr(args, steps_per_epoch, world=1):
    return create_scheduler(
        steps_per_epoch, scheduler=args.scheduler, lr=scaled_lr(args, world)[0], min_lr=args.min_lr,
        warmup_epochs=args.warmup_epochs, warmup_factor=args.warmup_factor, decay_epochs=args.decay_epochs,
        decay_rate=args.decay_rate, milestones=args.multi_step_decay_milestones, num_epochs=args.epoch_size,
        num_cycles=args.num_cycles, cycle_decay=args.cycle_decay, lr_epoch_stair=args.lr_epoch_stair)


def _freeze(net, args, logger):
    """``frozen_stages`` / ``norm_eval`` (``training.frozen_stages``), said in one log line."""
    frozen, held = freeze_stages(net, getattr(args, "frozen_stages", -1), getattr(args, "norm_eval", False))
    if frozen:
        k = args.frozen_stages
        stages = "" if k < 1 else " and stage 1" if k == 1 else f" and stages 1-{k}"
        held_note = f"; norm_eval: {len(held)} BatchNorm layer(s) use and keep their moving statistics" if held else ""
        logger.info("frozen_stages %d: %d parameter(s) frozen (stem%s)%s", k, len(frozen), stages, held_note)


def _class_weights(args, train_data, num_classes, logger):
    """The loss's class weights: ``class_weights`` as given, or ``balanced`` from the training labels."""
    given = getattr(args, "class_weights", None)
    if given is None:
        return None
    if given == "balanced":
        source = getattr(train_data.loader.dataset_info, "source", None)
        labels = getattr(source, "labels", None)
        if labels is None:
            raise UserError("class_weights: balanced needs the training labels, which a MindRecord set does not "
                            "give before reading: give one weight per class instead")
        weights = balanced_class_weights(labels, num_classes)
        logger.info("class_weights balanced: %s", ", ".join(f"{w:.4g}" for w in weights))
        return list(weights)
    if len(given) != num_classes:
        raise UserError(f"class_weights gives {len(given)} weights for {num_classes} classes: give one weight per "
                        "class, in label order (or class_weights: balanced)")
    return list(given)


def _build_train_step(args, num_classes, steps_per_epoch, world, logger, class_weights=None):
    net = create_model(args.model, pretrained=args.pretrained, num_classes=num_classes,
                       in_channels=args.in_channels, drop_rate=args.drop_rate, drop_path_rate=args.drop_path_rate,
                       zero_init_last=args.zero_init_last)
    if args.ckpt_path:
        load_model_weights(net, args.ckpt_path, strict=True, num_classes=num_classes,
                           in_channels=args.in_channels)  # logs "loaded N parameters from ..."
    if world > 1:
        broadcast_parameters(net)  # identical starting weights on every rank, whatever the initialisers
    if getattr(args, "sync_bn", False):
        data_setup.convert_sync_bn(net, args, logger)
    _freeze(net, args, logger)
    lr = _create_lr(args, steps_per_epoch, world)
    note = scaled_lr(args, world)[1]
    if note:
        logger.info(note)
    optimizer = create_optimizer(
        net, opt=args.opt, lr=lr, weight_decay=args.weight_decay, momentum=args.momentum,
        nesterov=args.use_nesterov, weight_decay_filter=args.weight_decay_filter, eps=args.eps,
        layer_decay=args.layer_decay)
    loss_fn = create_loss(args.loss, label_smoothing=args.label_smoothing, reduction=args.reduction,
                          aug_splits=args.aug_splits, class_weights=class_weights)
    train_step = TrainStep(
        net, loss_fn, optimizer, amp_level=args.amp_level, amp_cast_list=args.amp_cast_list,
        loss_scale_type=args.loss_scale_type,
        loss_scale=args.loss_scale, drop_overflow_update=args.drop_overflow_update, clip_grad=args.clip_grad,
        clip_value=args.clip_value, accumulation_steps=int(args.gradient_accumulation_steps), ema=args.ema,
        ema_decay=args.ema_decay)
    train_step.set_train(True)
    return net, lr, optimizer, train_step


# ---------------------------------------------------------------------------------- start or resume
def _resolve_resume(args, manager):
    if not args.resume:
        return None
    if str(args.resume).lower() == "auto":
        return manager.find_latest()  # None: a fresh start
    if not os.path.isfile(args.resume):
        raise UserError(f"--resume file not found: {args.resume}. Pass an existing checkpoint, or --resume auto.")
    return args.resume


def _preview(names, limit=3):
    return ", ".join(map(str, names[:limit])) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _restore(path, args, train_step, class_names, logger):
    """Load a training checkpoint into the train-step cell after checking that it belongs to this
    run's model, classes and optimizer; returns its metadata."""
    entries = read_checkpoint(path)
    meta = meta_of(entries)
    if "epoch" not in meta:
        raise UserError(f"{path} holds no training state (epoch, step): it cannot be resumed from. "
                        "Use --ckpt_path to fine-tune from it instead.")
    stored_model = meta.get("model")
    if stored_model and stored_model != args.model:
        raise UserError(f"cannot resume from {path}: it was written by a {stored_model} run and this run trains "
                        f"{args.model}. Pass --model {stored_model}, or resume from a {args.model} checkpoint.")
    stored_classes = meta.get("class_names")
    if stored_classes is not None and list(stored_classes) != list(class_names):
        diff = [f"#{i}: {a!r} vs {b!r}" for i, (a, b) in enumerate(zip(stored_classes, class_names)) if a != b]
        raise UserError(f"cannot resume from {path}: its {len(stored_classes)} classes differ from the "
                        f"{len(class_names)} of --data_dir ({_preview(diff) or 'one list is longer'}; checkpoint "
                        "vs data). Resume with the data set the run was started on.")
    params = {p.name: p for p in train_step.get_parameters()}
    # the learning-rate schedule (one array, or one per group with layer_decay) is rebuilt from the config
    state = [n for n in params if not is_schedule_parameter(n)]
    missing = [n for n in state if n not in entries]
    # scalars such as global_step may come back as shape () for a (1,) parameter: same size is fine
    shape_bad = [n for n in state if n in entries and np.size(entries[n]) != int(np.prod(params[n].shape))]
    unexpected = [n for n, v in entries.items()
                  if n not in params and not is_meta_entry(n, v) and not is_schedule_parameter(n)]
    if missing or shape_bad or unexpected:
        raise UserError(f"cannot resume from {path}: it does not match this run's model/optimizer "
                        f"({len(missing)} missing, e.g. {missing[:3]}; {len(shape_bad)} of another shape, "
                        f"e.g. {shape_bad[:3]}; {len(unexpected)} unexpected, e.g. {unexpected[:3]}). "
                        "Was it written by another --model, --opt, --ema or --num_classes?")
    values = {n: np.reshape(entries[n], params[n].shape).astype(entries[n].dtype) for n in state}
    ms.load_param_into_net(train_step, {n: ms.Parameter(ms.Tensor(v), name=n) for n, v in values.items()},
                           strict_load=True)
    for name in [n for n in params if is_schedule_parameter(n)]:
        if name in entries:
            stored, now = np.asarray(entries[name]).reshape(-1), params[name].asnumpy().reshape(-1)
            if stored.shape != now.shape or not np.array_equal(stored, now):
                logger.info("the learning-rate schedule of this config (%d steps) differs from the one stored in "
                            "%s (%d steps): continuing with this config's schedule", now.size, path, stored.size)
    logger.info("resumed from %s (epoch %s, %s steps done)", path, meta.get("epoch"), meta.get("steps_done"))
    return meta


def _start_or_resume(args, manager, train_step, class_names, world, logger):
    """Rank 0 decides: a fresh start or a resume (from which checkpoint, which epoch, which best
    top-1), prepares the folder's index, and loads the state; every rank gets the decision and, on a
    resume, rank 0's whole training state. Returns ``(start_epoch, best_top1, resumed_path)``."""
    decision = None
    if manager.enabled:
        try:
            path = _resolve_resume(args, manager)
            if path:
                meta = _restore(path, args, train_step, class_names, logger)
                manager.continue_run(meta, path, overwrite=args.overwrite, logger=logger)
                best = max(float(meta.get("best_top1", -1.0)), manager.best_top1_on_disk() or -1.0)
                decision = {"path": path, "epoch": int(meta["epoch"]), "best_top1": best}
            else:
                if args.resume:
                    logger.info("--resume auto: no checkpoint of %s in %s, starting from scratch",
                                args.model, args.ckpt_save_dir)
                manager.start_fresh(overwrite=args.overwrite, logger=logger)
                decision = {"path": None, "epoch": 0, "best_top1": -1.0}
        except UserError as exc:
            if world == 1:
                raise
            decision = {"error": str(exc)}
    if world > 1:
        decision = broadcast_object(decision)
        if "error" in decision:
            raise UserError(decision["error"])
        if decision["path"]:
            broadcast_parameters(train_step)  # weights, moments, step, EMA, loss scale: rank 0's
            if not manager.enabled:
                logger.info("resumed at epoch %d with rank 0's state (%s)", decision["epoch"], decision["path"])
    return decision["epoch"], decision["best_top1"], decision["path"]


# ---------------------------------------------------------------------------------- one epoch
def _train_epoch(args, epoch, train_data, train_step, lr, world, loader_rate, logger, main_process, guard,
                 summary):
    """One pass over ``train_data``; returns the epoch's row of metrics (train part). ``guard`` (an
    ``OverflowGuard``) decides about overflowing steps; ``summary`` gets the log-interval figures."""
    steps_per_epoch = train_data.steps_per_epoch
    guard.start_epoch()
    progress = Progress(steps_per_epoch, f"epoch {epoch + 1}/{args.epoch_size}", enabled=main_process)
    epoch_start = time.time()
    loss_sum, loss_count, wait_time, epoch_wait = 0.0, 0, 0.0, 0.0
    scale_value = math.nan
    step_times = []  # seconds of each train step (the device work; the wait for data excluded)
    window_start, window_images = time.time(), 0
    t_fetch = time.time()
    for step_in_epoch, (images, labels) in enumerate(train_data):
        waited = time.time() - t_fetch
        wait_time += waited
        epoch_wait += waited
        t_step = time.time()
        loss, overflow, scale = train_step(images, labels)
        loss_value = float(loss.asnumpy())
        step_times.append(time.time() - t_step)
        scale_value = float(scale.asnumpy())
        if not guard.step(bool(overflow.asnumpy()), loss_value, scale_value, epoch + 1, step_in_epoch + 1):
            loss_sum += loss_value
            loss_count += 1
        window_images += images.shape[0] // max(1, args.aug_splits) * world  # images, not their aug_splits copies
        global_step = epoch * steps_per_epoch + step_in_epoch
        progress.update(f"loss {loss_value:.4f} lr {lr[global_step]:.5f}")
        if (step_in_epoch + 1) % args.log_interval == 0 or step_in_epoch + 1 == steps_per_epoch:
            elapsed = time.time() - window_start
            loader_share = wait_time / max(elapsed, 1e-9)
            loader_note = f"; loader alone {loader_rate:.0f} img/s" if loader_rate else ""
            line = (f"epoch {epoch + 1}/{args.epoch_size} step {step_in_epoch + 1}/{steps_per_epoch} "
                    f"loss {loss_value:.4f} lr {lr[global_step]:.6f} {window_images / elapsed:.1f} img/s "
                    f"({world} rank(s){loader_note}; waiting for data {100 * loader_share:.0f}% of the time)")
            (logger.debug if progress.active else logger.info)(line)
            summary.log_step(global_step + 1, loss_value, float(lr[global_step]), scale_value,
                             window_images / elapsed, 100 * loader_share)
            window_start, window_images, wait_time = time.time(), 0, 0.0
        t_fetch = time.time()
    progress.close()
    overflowed = guard.end_epoch(epoch + 1)
    epoch_time = time.time() - epoch_start
    skipped = train_data.take_skipped_count()
    if skipped:
        logger.warning("epoch %d: %d unreadable image(s) skipped (see the warnings above)", epoch + 1, skipped)
    if loss_count == 0:
        cause = "" if guard.any_update else f"; {guard.likely_cause(scale_value)}"
        logger.warning("epoch %d: every step overflowed; no update was applied and the train loss is NaN%s",
                       epoch + 1, cause)
    return {"epoch": epoch + 1, "train_loss": loss_sum / loss_count if loss_count else math.nan,
            "lr": float(lr[min((epoch + 1) * steps_per_epoch - 1, len(lr) - 1)]),
            "epoch_time_s": epoch_time, "train_img_per_s": steps_per_epoch * args.batch_size * world / epoch_time,
            "loader_img_per_s": loader_rate, "data_wait_pct": 100.0 * epoch_wait / max(epoch_time, 1e-9),
            "skipped_images": skipped, "overflow_steps": overflowed,
            "train_step_ms": 1000 * steady_median(step_times), "ranks": world,
            "global_batch": args.batch_size * world * int(getattr(args, "gradient_accumulation_steps", 1))}


def steady_median(seconds):
    """The median of ``seconds`` without the first value (a graph's compile, an iterator's start),
    unless it is the only one."""
    values = sorted(seconds[1:] or seconds)
    if not values:
        return math.nan
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else 0.5 * (values[mid - 1] + values[mid])


def _validate(net, val_data, ema, epoch, logger):
    if ema is not None:
        ema.swap()
    metrics = evaluate(net, val_data)
    if ema is not None:
        ema.swap()
    net.set_train(True)
    logger.info("epoch %d: val top-1 %.2f%%, top-5 %.2f%%, loss %.4f on %d images%s", epoch + 1,
                100 * metrics["top1"], 100 * metrics["top5"], metrics["loss"], metrics["num_samples"],
                " (EMA weights)" if ema is not None else "")
    return metrics


# ---------------------------------------------------------------------------------- the run
def train(args, config_yaml=None):
    """Train ``args.model`` as ``args`` says (the keys of ``cli/keys.py``).

    ``config_yaml``: the run's resolved configuration as YAML text (what train.py's
    ``config.dump_config(args)`` gives), written to ``ckpt_save_dir/config.yaml`` by rank 0;
    None writes no config.yaml."""
    _check_inputs(args)
    dist = setup_runtime(args)
    save_dir = args.ckpt_save_dir
    lock = None
    if dist.rank == 0:
        probe_writable(save_dir)
        lock = RunLock(save_dir).acquire()
    try:
        return _train(args, dist, save_dir, config_yaml)
    finally:
        if lock is not None:
            lock.release()


def _train(args, dist, save_dir, config_yaml):
    """The run itself, once rank 0 holds the folder's lock: build, start or resume, the epochs, the curves."""
    rank, world = dist.rank, dist.world_size
    main_process = rank == 0
    logger = setup_logging(os.path.join(save_dir, "logs"), rank, world, debug=getattr(args, "debug", False))
    logger.info("mindcv_res2net training: model %s, %d rank(s) (%s), mode %s, device %s",
                args.model, world, dist.launcher, "graph" if args.mode == 0 else "pynative", args.device_target)

    train_data, val_data, class_names, num_classes = _build_data(args, dist)
    steps_per_epoch = train_data.steps_per_epoch
    class_weights = _class_weights(args, train_data, num_classes, logger)
    net, lr, optimizer, train_step = _build_train_step(args, num_classes, steps_per_epoch, world, logger,
                                                       class_weights)
    manager = CheckpointManager(save_dir, args.model, args.keep_checkpoint_max, args.ckpt_save_policy,
                                enabled=main_process)
    start_epoch, best_top1, resumed = _start_or_resume(args, manager, train_step, class_names, world, logger)
    if resumed:
        set_global_step(optimizer, start_epoch * steps_per_epoch)
    records = EpochRecords(save_dir, enabled=main_process, resume_epoch=start_epoch if resumed else None)
    if main_process and config_yaml is not None:
        _write_config(save_dir, config_yaml, logger)
    loader_rate = _log_run_plan(args, train_data, num_classes, world, logger)
    ema = getattr(train_step, "ema", None)

    guard = OverflowGuard(args.amp_level, args.max_consecutive_overflows, args.ckpt_save_dir, logger,
                          batch_per_rank=args.batch_size, image_size=args.image_resize)
    summary = TrainingSummary(args.summary_dir, enabled=main_process and bool(args.summary_dir),
                              resume_step=start_epoch * steps_per_epoch if resumed else None)
    try:
        for epoch in range(start_epoch, args.epoch_size):
            train_data = data_setup.build_train(args, dist, epoch=epoch)  # seeded per epoch (resume)
            row = _train_epoch(args, epoch, train_data, train_step, lr, world, loader_rate, logger, main_process,
                               guard, summary)
            metrics = _sync_and_validate(args, epoch, net, val_data, ema, world, row, logger)
            records.add(row)
            summary.log_epoch(epoch + 1, (epoch + 1) * steps_per_epoch, row)
            best_top1 = _save_epoch(args, epoch, manager, train_step, steps_per_epoch, metrics, best_top1,
                                    num_classes, class_names, logger)
    finally:
        summary.close()

    if main_process:
        plot = records.plot(os.path.join(save_dir, "curves.png"))
        if plot:
            logger.info("curves plotted in %s", plot)
    return {"best_top1": best_top1 if best_top1 >= 0 else None, "epochs": args.epoch_size}


def _build_data(args, dist):
    """Build the training and validation data; returns (train, val, class names, num_classes)."""
    train_data = data_setup.build_train(args, dist, epoch=0)
    num_classes = data_setup.check_num_classes(args, train_data.class_names)
    class_names = list(train_data.class_names)
    val_data = data_setup.build_val(args, dist, class_names=class_names) if args.val_while_train else None
    if train_data.steps_per_epoch <= 0:
        raise UserError(f"batch_size {args.batch_size} x {dist.world_size} rank(s) is larger than the training set "
                        f"({train_data.num_samples} images) with drop_remainder: lower --batch_size.")
    return train_data, val_data, class_names, num_classes


def _write_config(save_dir, config_yaml, logger):
    """Write the run's config.yaml, keeping an earlier, different one beside it."""
    config_path = os.path.join(save_dir, "config.yaml")
    # how this process was started (resume / overwrite) is not the run's configuration
    kept = keep_previous_version(config_path, config_yaml, ignore_prefixes=("resume:", "overwrite:"))
    atomic_io.write_text_atomic(config_path, config_yaml, "config")
    if kept:
        logger.info("the earlier config.yaml differs from this run's: kept as %s", kept)


def _log_run_plan(args, train_data, num_classes, world, logger):
    """Log the start-up notes and the run's size, and time the loader alone; returns its img/s or None."""
    for note in _startup_notes(args):
        logger.info(note)
    if args.dataset_sink_mode:
        logger.info("dataset_sink_mode: not used; batches are fed one step at a time (MindSpore has no sink "
                    "mode on CPU, and this trainer does not implement it for GPU / Ascend: results are the "
                    "same, host-to-device copies overlap less)")
    logger.info("%d training images, %d classes, %d steps/epoch x %d epochs, global batch %d",
                train_data.num_samples, num_classes, train_data.steps_per_epoch, args.epoch_size,
                args.batch_size * world)
    # the loader's own speed, beside the step speed in the logs: which of the two limits training
    loader_rate = data_setup.measure_loader(train_data)
    loader_rate = loader_rate * world if loader_rate else None
    if loader_rate:
        logger.info("data pipeline alone: %.0f img/s (%d rank(s), %d worker(s) each; measured before training)",
                    loader_rate, world, args.num_parallel_workers)
    return loader_rate


def _sync_and_validate(args, epoch, net, val_data, ema, world, row, logger):
    """Average BatchNorm statistics over ranks, validate when due and log the epoch; returns the metrics."""
    # one model on every rank for validation and the checkpoint: BN statistics averaged over ranks
    average_batch_norm_statistics(net)
    if world > 1:
        divergence = parameters_divergence(net)  # 0 unless the gradient all-reduce is broken
        (logger.warning if divergence > 0 else logger.info)(
            "epoch %d: largest weight difference between ranks %.3g", epoch + 1, divergence)
    is_last = epoch + 1 == args.epoch_size
    metrics = None
    if val_data is not None and ((epoch + 1) % args.val_interval == 0 or is_last):
        metrics = _validate(net, val_data, ema, epoch, logger)
        row.update(val_top1=metrics["top1"], val_top5=metrics["top5"], val_loss=metrics["loss"])
    logger.info("epoch %d/%d done in %.1f s: train loss %.4f, %.1f img/s, waiting for data %.0f%% of the time",
                epoch + 1, args.epoch_size, row["epoch_time_s"], row["train_loss"], row["train_img_per_s"],
                row["data_wait_pct"])
    return metrics


def _save_epoch(args, epoch, manager, train_step, steps_per_epoch, metrics, best_top1, num_classes, class_names,
                logger):
    """Save the epoch's checkpoints as the policy says; returns the best val top-1 so far."""
    is_last = epoch + 1 == args.epoch_size
    top1 = metrics["top1"] if metrics else None
    new_best = top1 is not None and top1 > best_top1
    if new_best:
        best_top1 = top1
    meta = {"epoch": epoch + 1, "steps_done": (epoch + 1) * steps_per_epoch, "model": args.model,
            "num_classes": num_classes, "in_channels": args.in_channels, "best_top1": best_top1,
            "class_names": class_names, "preprocessing": EvalPreprocessing.from_keys(vars(args)).keys()}
    path, best = manager.save(train_step, epoch + 1, steps_per_epoch, meta, metric=top1, new_best=new_best,
                              epoch_checkpoint=(epoch + 1) % args.ckpt_save_interval == 0 or is_last)
    if best:
        logger.info("new best val top-1 %.2f%%: saved %s", 100 * top1, best)
    if path:
        logger.info("saved %s", path)
    return best_top1


def _startup_notes(args):
    """One line each about keys whose effect a user may not expect."""
    notes = []
    drop_note = startup_note(args)
    if drop_note:
        notes.append(drop_note)
    if args.amp_cast_list and args.amp_level in ("O0", "O3"):
        notes.append(f"amp_cast_list has no effect at amp_level {args.amp_level} (as in MindCV): O1 and O2 use it")
    if args.val_while_train and args.val_amp_level != args.amp_level:
        notes.append(f"val_amp_level {args.val_amp_level} is validate.py's; validation inside train.py runs the "
                     f"training network at amp_level {args.amp_level} (as in MindCV)")
    return notes
