"""Tiny distributed workloads for tests/test_distributed.py (run under mpirun, msrun or alone).

    python dist_check.py MODE OUT_DIR [--kill-rank R] [--kill-how exit|exit0|sigkill|raise]

MODE (one, or several joined by commas, run in order):
basic:      init_distributed, all_reduce_sum, barrier, broadcast_parameters; writes
            OUT_DIR/rank<R>.json.
grads:      gradients of a small Dense net (no BatchNorm) on a fixed global batch: each rank
            takes its contiguous shard, grads are averaged with nn.DistributedGradReducer;
            writes OUT_DIR/grads_rank<R>.npz (OUT_DIR/grads_single.npz when not distributed).
die:        after init and a few all-reduces, rank --kill-rank dies; the others keep
            all-reducing (they must be stopped by the watchdog / launcher, not finish).
stats:      parameters_divergence and average_batch_norm_statistics on weights that agree on every
            rank and on weights that differ by a known amount (meant for 3 or more ranks, where a
            float32 sum divided by the rank count rounds). Writes OUT_DIR/stats_rank<R>.json.
bcast:      broadcast_parameters on parameters of every dtype (with -0.0, NaN payloads,
            subnormals, extreme integers) and on a TrainStep cell (AdamW, dynamic loss scale,
            EMA, accumulation) whose state differs per rank; broadcast_object; a rank whose
            cell differs. Writes OUT_DIR/bcast_rank<R>.json.
"""
import argparse
import hashlib
import json
import os
import signal
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

import numpy as np  # noqa: E402

T0 = time.monotonic()
import mindspore as ms  # noqa: E402
from mindspore import nn  # noqa: E402

from mindcv_res2net import distributed as dist  # noqa: E402
from mindcv_res2net.distributed import state as dist_state  # noqa: E402

GLOBAL_BATCH = 8
IN_FEATURES, HIDDEN, CLASSES = 12, 16, 5


class TinyNet(nn.Cell):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Dense(IN_FEATURES, HIDDEN)
        self.act = nn.Tanh()
        self.fc2 = nn.Dense(HIDDEN, CLASSES)

    def construct(self, x):
        return self.fc2(self.act(self.fc1(x)))


def make_net(seed):
    np.random.seed(seed)
    ms.set_seed(seed)
    net = TinyNet()
    rng = np.random.RandomState(seed)
    for p in net.get_parameters():  # explicit numpy init: identical for the same seed
        p.set_data(ms.Tensor(rng.normal(0, 0.3, p.shape).astype(np.float32)))
    return net


def global_batch():
    rng = np.random.RandomState(1234)
    x = rng.normal(size=(GLOBAL_BATCH, IN_FEATURES)).astype(np.float32)
    y = rng.randint(0, CLASSES, size=(GLOBAL_BATCH,)).astype(np.int32)
    return x, y


def mode_basic(info, out_dir, t_init):
    r = info.rank
    vec = dist.all_reduce_sum(np.array([r + 1.0, 2.0 * r, 0.5], np.float32))
    counts = dist.all_reduce_sum(np.array([[r, 1], [10 * r, 3]], np.int64))
    scalar = dist.all_reduce_sum(np.float32(r))
    # what validation sends: [correct1, correct5, loss_sum, count] in float64; counts must be exact
    big = dist.all_reduce_sum(np.array([123456789.0 + r, 3.0 * 10 ** 12 + r, 0.1 * (r + 1), -7.0], np.float64))
    bools = dist.all_reduce_sum(np.array([True, r == 0, False]))
    dist.barrier()
    net = make_net(seed=100 + r)  # different weights per rank on purpose
    before = dist.parameters_divergence(net)
    dist.broadcast_parameters(net)
    after = dist.parameters_divergence(net)
    net0 = make_net(seed=100)
    same_as_rank0 = all(np.array_equal(a.asnumpy(), b.asnumpy())
                        for a, b in zip(net.get_parameters(), net0.get_parameters()))
    result = dict(rank=info.rank, world_size=info.world_size, local_rank=info.local_rank,
                  is_distributed=info.is_distributed, launcher=info.launcher,
                  device_target=info.device_target, main=dist.is_main_process(),
                  vec=vec.tolist(), vec_dtype=str(vec.dtype), counts=counts.tolist(),
                  counts_dtype=str(counts.dtype), scalar=float(scalar),
                  big=big.tolist(), big_dtype=str(big.dtype), bools=bools.tolist(), divergence_before=before,
                  divergence_after=after, same_as_rank0=same_as_rank0, init_s=t_init,
                  ms_role=os.environ.get("MS_ROLE"), watchdog_bound=_watchdog_bound())
    with open(os.path.join(out_dir, f"rank{r}.json"), "w", encoding="utf-8") as fh:
        json.dump(result, fh)


def _watchdog_bound():
    """Rank 0 under mpirun: the (address, port) pairs its watchdog listener was bound to."""
    bridge = dist_state.STATE.get("bridge")
    bound = getattr(bridge, "bound", None) if bridge is not None else None
    return [list(b) for b in bound] if bound is not None else None


EXOTIC_DTYPES = ("float32", "float16", "float64", "int32", "int64", "int8", "uint8", "bool")


def exotic_values(seed):
    """One array per dtype; seed 0 (rank 0) includes the values a float sum would not keep."""
    rng = np.random.RandomState(seed)
    out = {}
    for name in EXOTIC_DTYPES:
        dtype = np.dtype(name)
        if dtype == np.bool_:
            arr = rng.rand(7) > 0.5
        elif dtype.kind == "f":
            arr = rng.normal(0, 3, 9).astype(dtype)
            if seed == 0:
                info = np.finfo(dtype)
                arr[:8] = np.array([-0.0, np.inf, -np.inf, info.max, -info.tiny, info.tiny / 4, -info.tiny / 2,
                                    1.0 / 3.0], np.float64).astype(dtype)
                bits = arr.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[dtype.itemsize])
                bits[8] = {2: 0x7E01, 4: 0x7FC01234, 8: 0x7FF8000000ABCDEF}[dtype.itemsize]  # NaN, payload
        else:
            info = np.iinfo(dtype)
            arr = rng.randint(-50, 50, 6).astype(dtype) if info.min < 0 else rng.randint(0, 50, 6).astype(dtype)
            if seed == 0:
                arr[:2] = [info.max, info.min]
        out[name] = arr.reshape(-1, 1) if arr.size % 3 else arr.reshape(3, -1)
    out["scalar_int32"] = np.array(123456789 if seed == 0 else seed, np.int32)  # shape (), as global_step
    return out


def _digest(params):
    h = hashlib.sha256()
    for p in params:
        value = p.asnumpy()
        h.update(f"{p.name}|{value.dtype.str}|{value.shape}|".encode())
        h.update(np.ascontiguousarray(value).tobytes())
    return h.hexdigest()


class ExoticCell(nn.Cell):
    def __init__(self, values):
        super().__init__()
        for name, value in values.items():
            setattr(self, f"p_{name}", ms.Parameter(ms.Tensor(value), name=f"p_{name}", requires_grad=False))


def _scramble(train_step, rank):
    """Give every parameter of the cell a rank-dependent value (other weights, moments, step ...)."""
    rng = np.random.RandomState(1000 + rank)
    for p in train_step.get_parameters():
        value = p.asnumpy()
        if np.issubdtype(value.dtype, np.integer):
            new = rng.randint(0, 1000, value.shape).astype(value.dtype) + rank
        else:
            new = rng.normal(0, 0.1, value.shape).astype(value.dtype)
            if new.size and rank == 0:
                new.reshape(-1)[0] = -0.0
        p.set_data(ms.Tensor(new))


def mode_bcast(info, out_dir):
    from mindcv_res2net.training.train_step import TrainStep
    from mindcv_res2net.loss.losses import create_loss
    from mindcv_res2net.optim.optim_factory import create_optimizer
    r = info.rank
    result = {"rank": r}
    # 1. every dtype, bit for bit
    cell = ExoticCell(exotic_values(seed=r))
    dist.broadcast_parameters(cell)
    reference = exotic_values(seed=0)
    result["exotic"] = {name: bool(getattr(cell, f"p_{name}").asnumpy().tobytes() == ref.tobytes()
                                   and getattr(cell, f"p_{name}").asnumpy().dtype == ref.dtype)
                        for name, ref in reference.items()}
    # 2. a TrainStep with another state on every rank
    net = make_net(seed=7)
    opt = create_optimizer(net, opt="adamw", lr=np.full(20, 0.01, np.float32), weight_decay=0.01)
    step = TrainStep(net, create_loss("CE"), opt, loss_scale_type="dynamic", loss_scale=1024.0,
                     accumulation_steps=2, ema=True, ema_decay=0.9)
    _scramble(step, r)
    digest0 = dist.broadcast_object(_digest(step.get_parameters()) if r == 0 else None)
    result["train_step_dtypes"] = sorted({str(p.asnumpy().dtype) for p in step.get_parameters()})
    result["train_step_differs_before"] = _digest(step.get_parameters()) != digest0
    dist.broadcast_parameters(step)
    result["train_step_same_as_rank0"] = _digest(step.get_parameters()) == digest0
    x, y = global_batch()
    step.set_train(True)
    for _ in range(2):  # the cell still trains after the broadcast, identically on every rank
        step(ms.Tensor(x[:4]), ms.Tensor(y[:4]))
    result["divergence_after_steps"] = dist.parameters_divergence(step)
    # 3. broadcast_object
    sent = {"epoch": 3, "path": "ckpt/r\u00e9s2net-3_12.ckpt", "best_top1": 0.1234567890123, "none": None,
            "list": [1, 2.5, "x", True, [None]], "big": 2 ** 70, "np_int": np.int64(5), "np_arr": np.arange(3),
            "tuple": (1, 2)}
    result["object"] = dist.broadcast_object(sent if r == 0 else {"rank": r})
    result["object_none"] = dist.broadcast_object(None if r == 0 else "other")
    result["object_empty_str"] = dist.broadcast_object("" if r == 0 else "other")
    try:
        dist.broadcast_object({"bad": {1j}} if r == 0 else None)
        result["object_bad"] = "no error"
    except TypeError as exc:
        result["object_bad"] = f"TypeError: {exc}"
    # 4. a rank whose cell differs: every rank raises, none hangs
    odd = ExoticCell({"w": np.zeros((2, 3 + r), np.float32)})
    try:
        dist.broadcast_parameters(odd)
        result["mismatch"] = "no error"
    except dist.DistributedError as exc:
        result["mismatch"] = str(exc)
    dist.barrier()
    with open(os.path.join(out_dir, f"bcast_rank{r}.json"), "w", encoding="utf-8") as fh:
        json.dump(result, fh, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v))


class StatsCell(nn.Cell):
    """A weight and BatchNorm-style moving statistics, set from numpy."""

    def __init__(self, weight, mean, var):
        super().__init__()
        self.w = ms.Parameter(ms.Tensor(weight), name="w")
        self.bn_moving_mean = ms.Parameter(ms.Tensor(mean), name="bn.moving_mean", requires_grad=False)
        self.bn_moving_variance = ms.Parameter(ms.Tensor(var), name="bn.moving_variance", requires_grad=False)


def stats_values(rank, differ):
    """(weight, mean, var) of ``rank``: the same on every rank unless ``differ``."""
    rng = np.random.RandomState(31)
    weight, mean = rng.normal(0, 1, 997).astype(np.float32), rng.normal(0, 1, 64).astype(np.float32)
    var = rng.uniform(0.1, 3, 64).astype(np.float32)
    if differ:
        weight = weight + np.float32(1e-3) * np.float32(rank) * np.arange(997, dtype=np.float32)
        mean, var = mean * np.float32(1 + 0.1 * rank), var + np.float32(0.25 * rank)
    return weight, mean, var


def mode_stats(info, out_dir):
    result = {"rank": info.rank, "world_size": info.world_size}
    for differ in (False, True):
        weight, mean, var = stats_values(info.rank, differ)
        cell = StatsCell(weight, mean, var)
        tag = "differ" if differ else "same"
        result[f"divergence_{tag}"] = dist.parameters_divergence(cell)
        dist.average_batch_norm_statistics(cell)
        result[f"mean_{tag}"] = cell.bn_moving_mean.asnumpy().view(np.uint32).tolist()
        result[f"var_{tag}"] = cell.bn_moving_variance.asnumpy().view(np.uint32).tolist()
    with open(os.path.join(out_dir, f"stats_rank{info.rank}.json"), "w", encoding="utf-8") as fh:
        json.dump(result, fh)


def mode_grads(info, out_dir):
    net = make_net(seed=7)
    loss_fn = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
    x, y = global_batch()
    shard = GLOBAL_BATCH // info.world_size
    xs, ys = x[info.rank * shard:(info.rank + 1) * shard], y[info.rank * shard:(info.rank + 1) * shard]
    params = net.trainable_params()

    def forward(data, label):
        return loss_fn(net(data), label)

    grad_fn = ms.value_and_grad(forward, None, params)
    loss, grads = grad_fn(ms.Tensor(xs), ms.Tensor(ys))
    if info.is_distributed:
        reducer = nn.DistributedGradReducer(params, mean=True, degree=info.world_size)
        grads = reducer(grads)
    arrays = {p.name: g.asnumpy() for p, g in zip(params, grads)}
    name = f"grads_rank{info.rank}.npz" if info.is_distributed else "grads_single.npz"
    np.savez(os.path.join(out_dir, name), **arrays)
    print(f"rank {info.rank} loss {float(loss.asnumpy()):.6f}", flush=True)


def mode_die(info, out_dir, kill_rank, how):
    x = np.ones(4, np.float32)
    for _ in range(3):
        dist.all_reduce_sum(x)
    with open(os.path.join(out_dir, f"alive_rank{info.rank}"), "w", encoding="utf-8") as fh:
        fh.write(str(time.time()))
    if info.rank == kill_rank:
        time.sleep(1.0)
        print(f"rank {info.rank}: dying now ({how})", flush=True)
        with open(os.path.join(out_dir, "killed_at"), "w", encoding="utf-8") as fh:
            fh.write(repr(time.time()))
        if how == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif how == "raise":
            raise RuntimeError(f"deliberate failure on rank {info.rank}")
        os._exit(0 if how == "exit0" else 3)
    deadline = time.monotonic() + 200
    while time.monotonic() < deadline:
        try:
            dist.all_reduce_sum(x)
        except RuntimeError as exc:  # a collective that times out is also an acceptable end
            print(f"rank {info.rank}: collective failed: {str(exc).splitlines()[0]}", flush=True)
            raise
        time.sleep(0.2)
    with open(os.path.join(out_dir, f"survived_rank{info.rank}"), "w", encoding="utf-8") as fh:
        fh.write("still running after 200 s")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", help="basic, grads, die, bcast, stats, or a comma-separated list such as basic,grads")
    parser.add_argument("out_dir")
    parser.add_argument("--distribute", default="auto")
    parser.add_argument("--graph", action="store_true", help="GRAPH_MODE (as train.py's mode 0) before init")
    parser.add_argument("--kill-rank", type=int, default=1)
    parser.add_argument("--delay-rank", type=int, default=-1, help="this rank starts init late")
    parser.add_argument("--delay-s", type=float, default=0.0)
    parser.add_argument("--linger-rank", type=int, default=-1, help="basic: this rank ends later")
    parser.add_argument("--linger-s", type=float, default=0.0)
    parser.add_argument("--kill-how", default="exit", choices=["exit", "exit0", "sigkill", "raise"])
    args = parser.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    if int(os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("MS_NODE_ID", "0")) or 0) == args.delay_rank:
        time.sleep(args.delay_s)
    if args.graph:
        ms.set_context(mode=ms.GRAPH_MODE)
    t = time.monotonic()
    info = dist.init_distributed(args.distribute, "CPU")
    t_init = time.monotonic() - t
    print(f"rank {info.rank}/{info.world_size} launcher={info.launcher} init {t_init:.1f}s "
          f"(process start to init done {time.monotonic() - T0:.1f}s)", flush=True)
    for mode in args.mode.split(","):
        if mode == "basic":
            mode_basic(info, args.out_dir, t_init)
        elif mode == "grads":
            mode_grads(info, args.out_dir)
        elif mode == "die":
            mode_die(info, args.out_dir, args.kill_rank, args.kill_how)
        elif mode == "bcast":
            mode_bcast(info, args.out_dir)
        elif mode == "stats":
            mode_stats(info, args.out_dir)
        else:
            parser.error(f"unknown mode {mode}")
    if info.rank == args.linger_rank:
        time.sleep(args.linger_s)
    print(f"rank {info.rank} finished at {time.time():.2f}", flush=True)
    dist.end_process(0)  # as every entry script ends (run_main)


if __name__ == "__main__":
    main()
