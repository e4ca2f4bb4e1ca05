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
"""
import argparse
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
                  ms_role=os.environ.get("MS_ROLE"))
    with open(os.path.join(out_dir, f"rank{r}.json"), "w", encoding="utf-8") as fh:
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
    parser.add_argument("mode", help="basic, grads, die, or a comma-separated list such as basic,grads")
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
        else:
            parser.error(f"unknown mode {mode}")
    if info.rank == args.linger_rank:
        time.sleep(args.linger_s)
    print(f"rank {info.rank} finished at {time.time():.2f}", flush=True)


if __name__ == "__main__":
    main()
