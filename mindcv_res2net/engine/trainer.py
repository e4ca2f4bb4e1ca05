"""The training run: build the parts from the resolved config, loop over epochs, validate,
checkpoint, resume.

``train(args)`` is all that ``train.py`` calls. Resuming (``--resume auto`` or a path) restores the
model, optimizer moments and step, EMA, loss-scale state and epoch; the data order and the
augmentation randomness are functions of (seed, epoch, rank), so an interrupted run that resumes
ends with the same weights as an uninterrupted one.
"""
import math
import os
import time

import mindspore as ms
import numpy as np

from ..checkpoint import load_model_weights, read_checkpoint, read_checkpoint_meta
from ..distributed import average_batch_norm_statistics, broadcast_parameters, parameters_divergence
from ..errors import UserError
from ..models import create_model
from . import data_setup
from .checkpoint_manager import CheckpointManager, probe_writable
from .evaluate import evaluate
from .loss import create_loss
from .optimizer import create_optimizer, set_global_step
from .run_log import EpochRecords, Progress, setup_logging
from .runtime import setup_runtime
from .scheduler import create_scheduler
from .train_step import TrainStep


def _resolve_resume(args, manager):
    if not args.resume:
        return None
    if str(args.resume).lower() == "auto":
        return manager.find_latest()  # None: a fresh start
    if not os.path.isfile(args.resume):
        raise UserError(f"--resume file not found: {args.resume}. Pass an existing checkpoint, or --resume auto.")
    return args.resume


def _restore(path, train_step, optimizer, logger):
    """Load a full training checkpoint into the train-step cell; returns its metadata."""
    arrays, meta = read_checkpoint(path), read_checkpoint_meta(path)
    if "epoch" not in meta:
        raise UserError(f"{path} holds no training state (epoch, step): it cannot be resumed from. "
                        "Use --ckpt_path to fine-tune from it instead.")
    params = {p.name: p for p in train_step.get_parameters()}
    missing = [n for n in params if n not in arrays]
    # scalars such as global_step may come back as shape () for a (1,) parameter: same size is fine
    shape_bad = [n for n in params if n in arrays and np.size(arrays[n]) != int(np.prod(params[n].shape))]
    if missing or shape_bad:
        raise UserError(f"cannot resume from {path}: it does not match this run's model/optimizer "
                        f"({len(missing)} missing, e.g. {missing[:3]}; {len(shape_bad)} of another shape, "
                        f"e.g. {shape_bad[:3]}). Was it written by another --model or --opt?")
    values = {n: np.reshape(arrays[n], params[n].shape).astype(arrays[n].dtype) for n in params}
    ms.load_param_into_net(train_step, {n: ms.Parameter(ms.Tensor(v), name=n) for n, v in values.items()},
                           strict_load=True)
    logger.info("resumed from %s (epoch %s, %s steps done)", path, meta.get("epoch"), meta.get("steps_done"))
    return meta


def train(args):
    dist = setup_runtime(args)
    rank, world = dist.rank, dist.world_size
    main_process = rank == 0
    save_dir = args.ckpt_save_dir
    if main_process:
        probe_writable(save_dir)
    logger = setup_logging(os.path.join(save_dir, "logs"), rank, world, debug=getattr(args, "debug", False))
    logger.info("mindcv_res2net training: model %s, %d rank(s) (%s), mode %s, device %s",
                args.model, world, dist.launcher, "graph" if args.mode == 0 else "pynative", args.device_target)

    # ------------------------------------------------------------------ data
    train_data = data_setup.build_train(args, dist, epoch=0)
    num_classes = data_setup.check_num_classes(args, train_data.class_names)
    val_data = data_setup.build_val(args, dist) if args.val_while_train else None
    steps_per_epoch = train_data.steps_per_epoch
    if steps_per_epoch <= 0:
        raise UserError(f"batch_size {args.batch_size} x {world} rank(s) is larger than the training set "
                        f"({train_data.num_samples} images) with drop_remainder: lower --batch_size.")

    # ------------------------------------------------------------------ model and optimizer
    net = create_model(args.model, pretrained=args.pretrained, num_classes=num_classes,
                       in_channels=args.in_channels, drop_rate=args.drop_rate, drop_path_rate=args.drop_path_rate,
                       zero_init_last=args.zero_init_last)
    if args.ckpt_path:
        report = load_model_weights(net, args.ckpt_path, strict=True, num_classes=num_classes,
                                    in_channels=args.in_channels)
        logger.info("fine-tuning from %s", report.summary() if hasattr(report, "summary") else args.ckpt_path)
    if world > 1:
        broadcast_parameters(net)  # identical starting weights on every rank, whatever the initialisers
    if getattr(args, "sync_bn", False):
        data_setup.convert_sync_bn(net, args, logger)
    accumulation = int(args.gradient_accumulation_steps)
    lr = create_scheduler(
        steps_per_epoch, scheduler=args.scheduler, lr=args.lr, min_lr=args.min_lr,
        warmup_epochs=args.warmup_epochs, warmup_factor=args.warmup_factor, decay_epochs=args.decay_epochs,
        decay_rate=args.decay_rate, milestones=args.multi_step_decay_milestones, num_epochs=args.epoch_size,
        num_cycles=args.num_cycles, cycle_decay=args.cycle_decay, lr_epoch_stair=args.lr_epoch_stair)
    optimizer = create_optimizer(
        net, opt=args.opt, lr=lr, weight_decay=args.weight_decay, momentum=args.momentum,
        nesterov=args.use_nesterov, weight_decay_filter=args.weight_decay_filter, eps=args.eps)
    loss_fn = create_loss(args.loss, label_smoothing=args.label_smoothing)
    train_step = TrainStep(
        net, loss_fn, optimizer, amp_level=args.amp_level, loss_scale_type=args.loss_scale_type,
        loss_scale=args.loss_scale, drop_overflow_update=args.drop_overflow_update, clip_grad=args.clip_grad,
        clip_value=args.clip_value, accumulation_steps=accumulation, ema=args.ema, ema_decay=args.ema_decay)
    train_step.set_train(True)

    manager = CheckpointManager(save_dir, args.model, args.keep_checkpoint_max, args.ckpt_save_policy,
                                enabled=main_process)
    start_epoch, best_top1 = 0, -1.0
    resume_path = _resolve_resume(args, manager)
    if resume_path:
        meta = _restore(resume_path, train_step, optimizer, logger)
        start_epoch = int(meta["epoch"])
        best_top1 = float(meta.get("best_top1", -1.0))
        set_global_step(optimizer, start_epoch * steps_per_epoch)
    elif args.resume and str(args.resume).lower() == "auto":
        logger.info("--resume auto: no checkpoint of %s in %s, starting from scratch", args.model, save_dir)
    records = EpochRecords(save_dir, enabled=main_process, resume=bool(resume_path))
    if main_process:
        import config as config_module  # the top-level config.py
        config_module.save_config(args, os.path.join(save_dir, "config.yaml"))

    if args.dataset_sink_mode:
        logger.info("dataset_sink_mode: not used; batches are fed one step at a time (MindSpore has no sink "
                    "mode on CPU, and this trainer does not implement it for GPU / Ascend: results are the "
                    "same, host-to-device copies overlap less)")
    ema = getattr(train_step, "ema", None)
    class_names = list(train_data.class_names)
    logger.info("%d training images, %d classes, %d steps/epoch x %d epochs, global batch %d",
                train_data.num_samples, num_classes, steps_per_epoch, args.epoch_size, args.batch_size * world)
    # the loader's own speed, beside the step speed in the logs: which of the two limits training
    loader_rate = data_setup.measure_loader(train_data)
    loader_rate = loader_rate * world if loader_rate else None
    if loader_rate:
        logger.info("data pipeline alone: %.0f img/s (%d rank(s), %d worker(s) each; measured before training)",
                    loader_rate, world, args.num_parallel_workers)

    # ------------------------------------------------------------------ epochs
    for epoch in range(start_epoch, args.epoch_size):
        train_data = data_setup.build_train(args, dist, epoch=epoch)  # seeded per epoch (resume)
        progress = Progress(steps_per_epoch, f"epoch {epoch + 1}/{args.epoch_size}", enabled=main_process)
        epoch_start = time.time()
        loss_sum, loss_count, wait_time, epoch_wait = 0.0, 0, 0.0, 0.0
        window_start, window_images = time.time(), 0
        t_fetch = time.time()
        for step_in_epoch, (images, labels) in enumerate(train_data):
            waited = time.time() - t_fetch
            wait_time += waited
            epoch_wait += waited
            loss, overflow, scale = train_step(images, labels)
            loss_value = float(loss.asnumpy())
            if bool(overflow.asnumpy()):
                if args.loss_scale_type != "dynamic":
                    raise UserError(
                        f"the loss became {loss_value} (NaN/Inf) at epoch {epoch + 1}, step {step_in_epoch + 1}; "
                        f"training stopped and the last good checkpoint in {save_dir} is kept. Lower --lr, "
                        "enable --clip_grad, or use --loss_scale_type dynamic with AMP.")
                logger.warning("overflow at epoch %d step %d: update skipped, loss scale now %g",
                               epoch + 1, step_in_epoch + 1, float(scale.asnumpy()))
            else:
                loss_sum += loss_value
                loss_count += 1
            window_images += images.shape[0] * world
            global_step = epoch * steps_per_epoch + step_in_epoch
            progress.update(f"loss {loss_value:.4f} lr {lr[global_step]:.5f}")
            if (step_in_epoch + 1) % args.log_interval == 0 or step_in_epoch + 1 == steps_per_epoch:
                elapsed = time.time() - window_start
                loader_share = wait_time / max(elapsed, 1e-9)
                loader_note = f"; loader alone {loader_rate:.0f} img/s" if loader_rate else ""
                line = (f"epoch {epoch + 1}/{args.epoch_size} step {step_in_epoch + 1}/{steps_per_epoch} "
                        f"loss {loss_value:.4f} lr {lr[global_step]:.6f} {window_images / elapsed:.1f} img/s "
                        f"({world} rank(s){loader_note}; waiting for data {100 * loader_share:.0f}% of the time)")
                if not progress.active:
                    logger.info(line)
                else:
                    logger.debug(line)
                window_start, window_images, wait_time = time.time(), 0, 0.0
            t_fetch = time.time()
        progress.close()
        epoch_time = time.time() - epoch_start
        train_loss = loss_sum / max(loss_count, 1)
        skipped = train_data.take_skipped_count()
        if skipped:
            logger.warning("epoch %d: %d unreadable image(s) skipped (see the warnings above)", epoch + 1, skipped)

        # one model on every rank for validation and the checkpoint: BN statistics averaged over ranks
        average_batch_norm_statistics(net)
        if world > 1:
            divergence = parameters_divergence(net)  # 0 unless the gradient all-reduce is broken
            (logger.warning if divergence > 0 else logger.info)(
                "epoch %d: largest weight difference between ranks %.3g", epoch + 1, divergence)
        row = {"epoch": epoch + 1, "train_loss": train_loss, "lr": float(lr[min((epoch + 1) * steps_per_epoch - 1,
                                                                                    len(lr) - 1)]),
               "epoch_time_s": epoch_time, "train_img_per_s": steps_per_epoch * args.batch_size * world / epoch_time,
               "loader_img_per_s": loader_rate, "data_wait_pct": 100.0 * epoch_wait / max(epoch_time, 1e-9),
               "skipped_images": skipped}
        metrics = None
        is_last = epoch + 1 == args.epoch_size
        if val_data is not None and ((epoch + 1) % args.val_interval == 0 or is_last):
            if ema is not None:
                ema.swap()
            metrics = evaluate(net, val_data)
            if ema is not None:
                ema.swap()
            net.set_train(True)
            row.update(val_top1=metrics["top1"], val_top5=metrics["top5"], val_loss=metrics["loss"])
            logger.info("epoch %d: val top-1 %.2f%%, top-5 %.2f%%, loss %.4f on %d images%s", epoch + 1,
                        100 * metrics["top1"], 100 * metrics["top5"], metrics["loss"], metrics["num_samples"],
                        " (EMA weights)" if ema is not None else "")
        logger.info("epoch %d/%d done in %.1f s: train loss %.4f, %.1f img/s, waiting for data %.0f%% of the time",
                    epoch + 1, args.epoch_size, epoch_time, train_loss, row["train_img_per_s"], row["data_wait_pct"])
        records.add(row)

        top1 = metrics["top1"] if metrics else None
        new_best = top1 is not None and top1 > best_top1
        if new_best:
            best_top1 = top1
        meta = {"epoch": epoch + 1, "steps_done": (epoch + 1) * steps_per_epoch, "model": args.model,
                "num_classes": num_classes, "in_channels": args.in_channels, "best_top1": best_top1,
                "class_names": class_names}
        if (epoch + 1) % args.ckpt_save_interval == 0 or is_last:
            path = manager.save(train_step, epoch + 1, steps_per_epoch, meta, metric=top1)
            if path:
                logger.info("saved %s", path)
        if new_best:
            manager.save_best(train_step, meta)
            logger.info("new best val top-1 %.2f%%: saved %s", 100 * top1, manager.best_path)

    if main_process:
        plot = records.plot(os.path.join(save_dir, "curves.png"))
        if plot:
            logger.info("curves plotted in %s", plot)
    return {"best_top1": best_top1 if best_top1 >= 0 else None, "epochs": args.epoch_size}
