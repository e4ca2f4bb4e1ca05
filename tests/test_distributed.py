"""Distributed set-up on CPU: mpirun (mpi4py bridge) and msrun, 2 ranks, tiny Dense net.

The multi-process tests launch tests/dist_scripts/dist_check.py in subprocesses (own session,
killed on time-out) and skip when mpirun / mpi4py / msrun are missing. Scheduler logs go to
the test's tmp dir. Extra failure scenarios (rank 0 killed, an exception on a rank, a rank
that never starts, a rank that ends long after the other, msrun losing a rank) run only with
MINDCV_RES2NET_DIST_EXTRA=1: together they take a few more minutes on 2 cores.
"""
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

from mindcv_res2net import distributed as dist
from mindcv_res2net.distributed import mpi_bridge
from mindcv_res2net.distributed import state as dist_state
from mindcv_res2net.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tests", "dist_scripts", "dist_check.py")
FAIL_BOUND_S = 120.0
LAUNCH_ENV_KEYS = ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "MS_ROLE",
                   "MS_WORKER_NUM", "MS_SCHED_HOST", "MS_SCHED_PORT", "MS_NODE_ID", "RANK_TABLE_FILE",
                   "MINDSPORE_HCCL_CONFIG_PATH", "RANK_SIZE", "RANK_ID")
EXTRA = os.environ.get("MINDCV_RES2NET_DIST_EXTRA", "") not in ("", "0")
needs_extra = pytest.mark.skipif(not EXTRA, reason="extra failure scenario; set MINDCV_RES2NET_DIST_EXTRA=1")


def launch_env(root):
    """The environment for a launcher started by a test: no launcher variables of the test's own
    process, the repository ``root`` importable, this Python's bin first on PATH."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV_KEYS}
    env.update(PYTHONPATH=root, GLOG_v="3", PATH=os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""))
    return env


def _mpi4py_ok():
    try:
        import mpi4py  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
        return True
    except ImportError:
        return False


MPIRUN = shutil.which("mpirun")
MSRUN = shutil.which("msrun", path=os.path.dirname(sys.executable)) or shutil.which("msrun")
needs_mpirun = pytest.mark.skipif(MPIRUN is None or not _mpi4py_ok(),
                                  reason="needs OpenMPI's mpirun and mpi4py (pip install mpi4py)")
needs_msrun = pytest.mark.skipif(MSRUN is None, reason="needs MindSpore's msrun on PATH")


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------
def _child_env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV_KEYS}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.setdefault("GLOG_v", "3")
    env["MINDCV_RES2NET_DIST_LOG_DIR"] = str(tmp_path / "dist_logs")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _mpirun_cmd(n, *args, env_keys=()):
    cmd = [MPIRUN]
    if os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    cmd += ["--oversubscribe", "-n", str(n)]
    for key in ("PYTHONPATH", "PATH", "GLOG_v", "MINDCV_RES2NET_DIST_LOG_DIR") + tuple(env_keys):
        cmd += ["-x", key]
    return cmd + [sys.executable, SCRIPT] + [str(a) for a in args]


def _msrun_cmd(n, log_dir, *args):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return [MSRUN, f"--worker_num={n}", f"--local_worker_num={n}", f"--master_port={port}",
            f"--log_dir={log_dir}", "--join=True", SCRIPT] + [str(a) for a in args]


def _run(cmd, env, timeout):
    """Run in a new session; kill the whole group on time-out. Returns (rc, output, seconds, end)."""
    start = time.time()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,  # pylint: disable=consider-using-with
                            start_new_session=True, cwd=ROOT)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # lets netns_two_hosts.sh remove its namespaces
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        pytest.fail(f"timed out after {timeout} s: {' '.join(cmd)}\n{out.decode(errors='replace')[-4000:]}")
    end = time.time()
    return proc.returncode, out.decode(errors="replace"), end - start, end


def _tail(text, n=3000):
    return text[-n:]


def _check_basic(out_dir, launcher, world=2, local_ranks=None):
    local_ranks = list(range(world)) if local_ranks is None else local_ranks
    results = []
    for r in range(world):
        with open(out_dir / f"rank{r}.json", encoding="utf-8") as fh:
            results.append(json.load(fh))
    for r, res in enumerate(results):
        assert res["rank"] == r and res["world_size"] == world and res["launcher"] == launcher
        assert res["is_distributed"] and res["main"] == (r == 0)
        assert res["local_rank"] == local_ranks[r] and res["device_target"] == "CPU" and res["ms_role"] == "MS_WORKER"
        # sum over ranks of [r+1, 2r, 0.5] and of [[r, 1], [10r, 3]]
        assert res["vec"] == [3.0, 2.0, 1.0] and res["vec_dtype"] == "float32"
        assert res["counts"] == [[1, 2], [10, 6]] and res["counts_dtype"] == "int64"
        assert res["scalar"] == 1.0
        assert res["big_dtype"] == "float64" and res["bools"] == [2, 1, 0]
        assert res["big"][:2] == [246913579.0, 6.0 * 10 ** 12 + 1] and res["big"][3] == -14.0  # exact
        assert abs(res["big"][2] - 0.3) < 1e-7
        assert res["divergence_before"] > 0.1  # each rank built its net from another seed ...
        assert res["divergence_after"] == 0.0  # ... and broadcast_parameters made them identical
        assert res["same_as_rank0"]
    return results


def _assert_no_survivor(out_dir):
    assert not list(out_dir.glob("survived_rank*")), "a rank kept running after its peer died"


# ------------------------------------------------------------------------------------------
# in-process: launch detection, argument checks, single-process helpers
# ------------------------------------------------------------------------------------------
@pytest.fixture
def clean_state(monkeypatch):
    for key in LAUNCH_ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setitem(dist_state.STATE, "info", dist.DistInfo())
    monkeypatch.setitem(dist_state.STATE, "initialized", False)
    monkeypatch.setitem(dist_state.STATE, "bridge", None)
    yield monkeypatch


def test_detect_launcher():
    assert dist.detect_launcher({}) == "none"
    assert dist.detect_launcher({"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "1"}) == "mpirun"
    assert dist.detect_launcher({"MS_ROLE": "MS_WORKER", "OMPI_COMM_WORLD_SIZE": "2",
                                 "OMPI_COMM_WORLD_RANK": "0"}) == "msrun"
    assert dist.detect_launcher({"RANK_TABLE_FILE": "/x.json", "RANK_SIZE": "8"}) == "rank_table"
    assert set(dist.LAUNCHERS) == {"none", "mpirun", "msrun", "rank_table"}


def test_parse_distribute():
    for value in ("auto", None, "AUTO"):
        assert dist.parse_distribute(value) == "auto"
    for value in (True, "true", "True", "1", 1, "yes"):
        assert dist.parse_distribute(value) is True
    for value in (False, "false", "False", "0", 0, "no"):
        assert dist.parse_distribute(value) is False
    with pytest.raises(UserError, match="distribute must be"):
        dist.parse_distribute("maybe")


def test_distribute_true_without_launcher_says_how_to_launch(clean_state):  # pylint: disable=unused-argument,redefined-outer-name
    with pytest.raises(UserError) as err:
        dist.init_distributed(True)
    message = str(err.value)
    assert "mpirun -n N python train.py" in message and "msrun --worker_num=N" in message
    assert "--distribute False" in message


def test_distribute_false_under_a_launcher_is_refused(clean_state):  # pylint: disable=redefined-outer-name
    clean_state.setenv("OMPI_COMM_WORLD_SIZE", "2")
    clean_state.setenv("OMPI_COMM_WORLD_RANK", "0")
    with pytest.raises(UserError, match="one of 2 started by mpirun"):
        dist.init_distributed(False)


def test_single_process_defaults(clean_state):  # pylint: disable=unused-argument,redefined-outer-name
    info = dist.init_distributed("auto")
    assert info == dist.get_dist_info()
    assert (info.rank, info.world_size, info.local_rank, info.is_distributed, info.launcher) == (0, 1, 0, False, "none")
    assert info.device_target in ("CPU", "GPU", "Ascend")
    assert dist.is_main_process()
    assert dist.init_distributed("auto") is info  # idempotent
    counts = np.array([3, 4], np.int64)
    out = dist.all_reduce_sum(counts)
    assert out.tolist() == [3, 4] and out.dtype == np.int64 and out is not counts
    dist.barrier()


def test_resolve_device_target():
    assert dist.resolve_device_target("cpu") == "CPU"
    assert dist.resolve_device_target(None) in ("CPU", "GPU", "Ascend")
    with pytest.raises(UserError, match="unknown device_target"):
        dist.resolve_device_target("tpu")
    for name in ("GPU", "Ascend"):
        if dist.resolve_device_target("auto") == "CPU":  # this MindSpore build has no accelerator
            with pytest.raises(UserError, match="not usable"):
                dist.resolve_device_target(name)


def test_cluster_timeouts_are_bounded():
    for key in ("MS_TOPO_TIMEOUT", "MS_NODE_TIMEOUT", "MS_RECEIVE_MSG_TIMEOUT"):
        assert 0 < int(dist.CLUSTER_ENV_DEFAULTS[key]) <= 120


def test_broadcasts_are_no_ops_in_a_single_process(clean_state):  # pylint: disable=unused-argument,redefined-outer-name
    obj = {"epoch": 2, "t": (1, 2)}
    assert dist.broadcast_object(obj) is obj


# ------------------------------------------------------------------------------------------
# exposure of the mpirun bridge: watchdog address, scheduler log, who listens on the port
# ------------------------------------------------------------------------------------------
def test_watchdog_listens_on_the_job_address_only():
    bridge = mpi_bridge._MpiBridge(0, 2)  # pylint: disable=protected-access
    bridge.listen(["127.0.0.1"])  # what _init_mpirun offers when every rank is on this host
    try:
        assert [addr for addr, _ in bridge.bound] == ["127.0.0.1"]
        assert [s.getsockname()[0] for s in bridge.listeners] == ["127.0.0.1"]
        port = bridge.ports[0]
        for addr in mpi_bridge._local_ipv4_addresses():  # pylint: disable=protected-access
            with pytest.raises(OSError):  # not reachable from another interface (another host)
                socket.create_connection((addr, port), timeout=2).close()
        # a peer joins through the listener with the job's token; a stranger without it does not
        stranger = socket.create_connection(("127.0.0.1", port), timeout=2)
        stranger.sendall(b"HELLO 1 not-the-token\n")
        peer = mpi_bridge._MpiBridge(1, 2)  # pylint: disable=protected-access
        assert peer.connect_to_rank0(["127.0.0.1"], bridge.ports, bridge.token) == [0]
        bridge.accept_peers(timeout=5)
        assert sorted(bridge.peers) == [1] and not bridge.missing_peers() and not bridge.listeners
        stranger.close()
        peer.upstream.close()
    finally:
        bridge.close()


def test_watchdog_falls_back_to_every_interface_only_for_a_foreign_address(capfd):
    bridge = mpi_bridge._MpiBridge(0, 2)  # pylint: disable=protected-access
    try:
        bridge.listen(["127.0.0.1", "192.0.2.1"])  # the second: not this host's (MINDCV_RES2NET_SCHED_HOST behind NAT)
        assert [addr for addr, _ in bridge.bound] == ["127.0.0.1", "0.0.0.0"]
        assert "192.0.2.1" in capfd.readouterr().err
    finally:
        bridge.close()


class _FakePopen:
    """Stands in for the scheduler child: exits at once (poll() == 1), records its log file."""

    def __init__(self, *args, **kwargs):  # pylint: disable=unused-argument
        self.stdout_name = kwargs["stdout"].name
        self.returncode, self.pid, self.stdin = 1, 0, None

    def poll(self):
        return self.returncode

    def kill(self):
        pass


def test_scheduler_log_is_private_and_never_follows_a_symlink(tmp_path, monkeypatch):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.delenv("MINDCV_RES2NET_DIST_LOG_DIR", raising=False)
    monkeypatch.setattr(mpi_bridge.subprocess, "Popen", _FakePopen)
    port = 40123
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    # a symlink planted where an earlier version wrote the log: <tmp>/mindcv_res2net_dist/scheduler_<host>_<port>.log
    planted_dir = tmp / "mindcv_res2net_dist"
    planted_dir.mkdir()
    (planted_dir / f"scheduler_{socket.gethostname()}_{port}.log").symlink_to(victim)
    bridge = mpi_bridge._MpiBridge(0, 2)  # pylint: disable=protected-access
    with pytest.raises(dist.DistributedError, match="exited with 1"):
        bridge.start_scheduler("127.0.0.1", port, 2, None, timeout=5)
    log = bridge.sched_log
    assert victim.read_text() == "precious"
    assert not os.path.islink(log) and os.path.dirname(log) != str(planted_dir)
    assert os.path.dirname(os.path.dirname(log)) == str(tmp)
    assert stat.S_IMODE(os.stat(os.path.dirname(log)).st_mode) == 0o700  # a private directory
    assert stat.S_IMODE(os.stat(log).st_mode) == 0o600
    assert os.path.basename(log).startswith("scheduler_") and log.endswith(".log")

    # a log directory the user chose: a name planted in it is not opened either
    user_dir = tmp_path / "user_logs"
    user_dir.mkdir()
    monkeypatch.setenv("MINDCV_RES2NET_DIST_LOG_DIR", str(user_dir))
    (user_dir / f"scheduler_{socket.gethostname()}_{port}.log").symlink_to(victim)
    bridge = mpi_bridge._MpiBridge(0, 2)  # pylint: disable=protected-access
    with pytest.raises(dist.DistributedError, match="exited with 1"):
        bridge.start_scheduler("127.0.0.1", port, 2, None, timeout=5)
    assert victim.read_text() == "precious"
    assert os.path.dirname(bridge.sched_log) == str(user_dir) and not os.path.islink(bridge.sched_log)


_LISTENER_CHILD = """
import os, socket, sys, time
port = int(sys.argv[1])
if os.fork() == 0:  # as the scheduler supervisor: the listening process is its child
    if port:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()
    time.sleep(60)
    os._exit(0)
time.sleep(60)
"""


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="needs Linux /proc/net/tcp")
def test_scheduler_is_not_taken_for_a_foreign_listener(tmp_path, monkeypatch):
    started, real_popen = [], subprocess.Popen

    def popen(port):
        def fake(*args, **kwargs):  # pylint: disable=unused-argument
            proc = real_popen([sys.executable, "-c", _LISTENER_CHILD, str(port)],  # pylint: disable=consider-using-with
                                    stdout=kwargs["stdout"], stderr=subprocess.STDOUT, start_new_session=True)
            started.append(proc)
            return proc
        return fake

    foreign = socket.socket()
    foreign.bind(("127.0.0.1", 0))
    foreign.listen()
    port = foreign.getsockname()[1]
    try:
        # another program holds the port and the scheduler child never listens: refused, naming the holder
        monkeypatch.setattr(mpi_bridge.subprocess, "Popen", popen(0))
        bridge = mpi_bridge._MpiBridge(0, 2)  # pylint: disable=protected-access
        with pytest.raises(dist.DistributedError) as err:
            bridge.start_scheduler("127.0.0.1", port, 2, str(tmp_path / "logs"), timeout=3)
        assert f"port {port} is held by another program (pid {os.getpid()}" in str(err.value), str(err.value)
        # the scheduler child's own listener (in a process it forked) is recognised at once
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            free = probe.getsockname()[1]
        monkeypatch.setattr(mpi_bridge.subprocess, "Popen", popen(free))
        bridge = mpi_bridge._MpiBridge(0, 2)  # pylint: disable=protected-access
        bridge.start_scheduler("127.0.0.1", free, 2, str(tmp_path / "logs"), timeout=30)
    finally:
        foreign.close()
        for proc in started:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            proc.wait()


# ------------------------------------------------------------------------------------------
# multi-process
# ------------------------------------------------------------------------------------------
@needs_mpirun
def test_mpirun_two_ranks_and_gradients_match_single_process(tmp_path):
    out = tmp_path / "out"
    # GRAPH_MODE as train.py's default mode 0; the msrun test below runs in PyNative mode.
    # GLOG_v=1 (INFO) shows whether MindSpore's own clean-up at exit ran.
    rc, log, secs, _ = _run(_mpirun_cmd(2, "basic,grads", out, "--graph"), _child_env(tmp_path, GLOG_v=1),
                            timeout=240)
    assert rc == 0, _tail(log)
    results = _check_basic(out, "mpirun")
    # the normal end is end_process's barrier: rank 0 stopped the scheduler once both ranks had
    # finished, and neither rank ran MindSpore's collective teardown (racy in MindSpore 2.8: a
    # finished rank could end with a segmentation fault)
    sched_log = next((tmp_path / "dist_logs").glob("scheduler_*.log")).read_text(errors="replace")
    assert "supervisor: every rank finished; scheduler stopped" in sched_log, sched_log[-2000:]
    assert log.count(" finished at ") == 2 and "Begin finalizing collective manager" not in log, _tail(log)
    print(f"mpirun: 2 ranks, init_distributed {max(r['init_s'] for r in results):.1f} s, whole run {secs:.1f} s")
    assert "scheduler 127.0.0.1:" in log and "watchdog 127.0.0.1:" in log  # rank 0 says where they listen
    assert list((tmp_path / "dist_logs").glob("scheduler_*.log"))
    # one host: rank 0's watchdog listens on the loopback address only, not on every interface
    assert results[0]["watchdog_bound"] and all(a == "127.0.0.1" for a, _ in results[0]["watchdog_bound"]), results[0]

    rc, log1, _, _ = _run([sys.executable, SCRIPT, "grads", out, "--graph"], _child_env(tmp_path), timeout=120)
    assert rc == 0, _tail(log1)
    single = np.load(out / "grads_single.npz")
    ranks = [np.load(out / f"grads_rank{r}.npz") for r in range(2)]
    assert sorted(single.files) == sorted(ranks[0].files) and len(single.files) == 4
    for name in single.files:
        np.testing.assert_array_equal(ranks[0][name], ranks[1][name])
        np.testing.assert_allclose(ranks[0][name], single[name], rtol=1e-5, atol=1e-5)


EXPECTED_OBJECT = {"epoch": 3, "path": "ckpt/r\u00e9s2net-3_12.ckpt", "best_top1": 0.1234567890123, "none": None,
                   "list": [1, 2.5, "x", True, [None]], "big": 2 ** 70, "np_int": 5, "np_arr": [0, 1, 2],
                   "tuple": [1, 2]}


@needs_mpirun
def test_mpirun_broadcasts_are_bit_exact_for_every_dtype(tmp_path):
    """broadcast_parameters / broadcast_object, what a resume coordinated by rank 0 relies on."""
    out = tmp_path / "out"
    rc, log, secs, _ = _run(_mpirun_cmd(2, "bcast", out), _child_env(tmp_path), timeout=240)
    assert rc == 0, _tail(log)
    print(f"mpirun: 2 ranks, broadcasts {secs:.1f} s")
    for r in range(2):
        with open(out / f"bcast_rank{r}.json", encoding="utf-8") as fh:
            res = json.load(fh)
        # float32 -0.0, NaN payloads and subnormals; float16 / float64 / int64 extremes; bool; shape ()
        assert res["exotic"] and all(res["exotic"].values()), (r, res["exotic"])
        # a TrainStep (AdamW moments, global_step, loss scale, EMA, accumulation) ends equal to rank 0's
        assert res["train_step_dtypes"] == ["float32", "int32"]
        assert res["train_step_differs_before"] == (r != 0)
        assert res["train_step_same_as_rank0"], r
        assert res["divergence_after_steps"] == 0.0
        assert res["object"] == EXPECTED_OBJECT
        assert res["object_none"] is None and res["object_empty_str"] == ""
        assert res["object_bad"].startswith("TypeError: broadcast_object: rank 0 cannot send its object as JSON")
        assert "rank(s) 1 hold other parameters than rank 0" in res["mismatch"], res["mismatch"]
    assert "p_w (2, 4) float32 here, p_w (2, 3) float32 on rank 0" in json.loads(
        (out / "bcast_rank1.json").read_text())["mismatch"]


@needs_msrun
def test_msrun_two_ranks(tmp_path):
    out = tmp_path / "out"
    rc, log, secs, _ = _run(_msrun_cmd(2, tmp_path / "msrun_logs", "basic", out), _child_env(tmp_path), timeout=240)
    logs = "".join(p.read_text(errors="replace")[-2000:] for p in (tmp_path / "msrun_logs").glob("*.log"))
    assert rc == 0, _tail(log) + logs
    results = _check_basic(out, "msrun")
    print(f"msrun: 2 ranks, init_distributed {max(r['init_s'] for r in results):.1f} s, whole run {secs:.1f} s")


def _die(tmp_path, kill_rank, how, extra_env=None):
    out = tmp_path / "out"
    keys = tuple(extra_env or ())
    cmd = _mpirun_cmd(2, "die", out, "--kill-rank", kill_rank, "--kill-how", how, env_keys=keys)
    rc, log, secs, end = _run(cmd, _child_env(tmp_path, **(extra_env or {})), timeout=FAIL_BOUND_S + 120)
    assert (out / "killed_at").exists(), _tail(log)
    after_kill = end - float((out / "killed_at").read_text())
    print(f"{how} on rank {kill_rank}: every process gone {after_kill:.1f} s after the failure (run {secs:.1f} s)")
    assert rc != 0, _tail(log)
    assert after_kill < FAIL_BOUND_S, _tail(log)
    _assert_no_survivor(out)
    return log, after_kill


@needs_mpirun
def test_rank_killed_mid_run_ends_every_rank(tmp_path):
    log, _ = _die(tmp_path, 1, "sigkill")
    assert "rank 1 died" in log or "process rank 1" in log, _tail(log)


@needs_mpirun
def test_watchdog_alone_ends_the_job_when_a_rank_vanishes_with_status_0(tmp_path):
    # os._exit(0) after MPI was finalized: mpirun sees a normal exit, only the watchdog notices
    log, _ = _die(tmp_path, 1, "exit0")
    assert "rank 0: rank 1 died" in log, _tail(log)


@needs_mpirun
@needs_extra
def test_rank0_killed_ends_the_other_ranks(tmp_path):
    log, _ = _die(tmp_path, 0, "sigkill")
    assert "lost the connection to rank 0: rank 0 died" in log or "process rank 0" in log, _tail(log)
    logs = list((tmp_path / "dist_logs").glob("scheduler_*.log"))
    assert logs and "scheduler killed" in logs[0].read_text(errors="replace")


@needs_mpirun
@needs_extra
def test_exception_on_a_rank_is_reported_by_name(tmp_path):
    log, _ = _die(tmp_path, 1, "raise")
    assert "rank 1 failed: RuntimeError: deliberate failure on rank 1" in log, _tail(log)


@needs_mpirun
@needs_extra
def test_rank_that_never_starts_is_bounded(tmp_path):
    out = tmp_path / "out"
    cmd = _mpirun_cmd(2, "basic", out, "--delay-rank", 1, "--delay-s", 300, env_keys=("MINDCV_RES2NET_INIT_TIMEOUT",))
    rc, log, secs, _ = _run(cmd, _child_env(tmp_path, MINDCV_RES2NET_INIT_TIMEOUT=20), timeout=200)
    assert rc != 0 and secs < FAIL_BOUND_S, _tail(log)
    assert "_wait_for_every_rank_to_call_init_distributed" in log, _tail(log)


@needs_mpirun
@needs_extra
@pytest.mark.parametrize("late_rank", [0, 1])
def test_ranks_ending_at_different_times_is_normal(tmp_path, late_rank):
    out = tmp_path / "out"
    cmd = _mpirun_cmd(2, "basic", out, "--linger-rank", late_rank, "--linger-s", 15)
    rc, log, _, _ = _run(cmd, _child_env(tmp_path), timeout=240)
    assert rc == 0 and "aborting" not in log, _tail(log)
    # the early rank waited for the late one at the end-of-run barrier; then the scheduler stopped
    sched_log = next((tmp_path / "dist_logs").glob("scheduler_*.log"))
    assert "supervisor: every rank finished; scheduler stopped" in sched_log.read_text(errors="replace")


@needs_msrun
@needs_extra
def test_msrun_rank_killed_is_bounded(tmp_path):
    out = tmp_path / "out"
    cmd = _msrun_cmd(2, tmp_path / "msrun_logs", "die", out, "--kill-rank", 1, "--kill-how", "sigkill")
    rc, log, _, end = _run(cmd, _child_env(tmp_path, MS_NODE_TIMEOUT=45), timeout=FAIL_BOUND_S + 120)
    after_kill = end - float((out / "killed_at").read_text())
    print(f"msrun, rank 1 SIGKILL: every process gone {after_kill:.1f} s after the failure")
    assert rc != 0 and after_kill < FAIL_BOUND_S, _tail(log)
    _assert_no_survivor(out)


# ------------------------------------------------------------------------------------------
# two "hosts": network namespaces joined by a veth pair (root only, opt-in)
# ------------------------------------------------------------------------------------------
NETNS_SCRIPT = os.path.join(ROOT, "tests", "dist_scripts", "netns_two_hosts.sh")
needs_netns = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("unshare") is None,
                                 reason="needs root, ip (iproute2) and unshare to create network namespaces")


@needs_mpirun
@needs_netns
@needs_extra
def test_two_hosts_in_network_namespaces(tmp_path):
    out = tmp_path / "out"
    env = _child_env(tmp_path, PYTHON=sys.executable)
    rc, log, _, _ = _run(["bash", NETNS_SCRIPT, str(out), "basic"], env, timeout=300)
    assert rc == 0, _tail(log)
    results = _check_basic(out, "mpirun", local_ranks=[0, 0])  # one rank per "host"
    assert "scheduler 10.213.47.1:" in log  # rank 0's address on the veth, not 127.0.0.1
    assert [a for a, _ in results[0]["watchdog_bound"]] == ["10.213.47.1"], results[0]


def _ranks_running(out_dir):
    """PIDs of dist_check.py processes (the ranks, not mpirun) writing to out_dir."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                argv = fh.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if len(argv) > 2 and argv[1].endswith("dist_check.py") and str(out_dir) in argv:
            pids.append(int(entry))
    return pids


@needs_mpirun
@needs_netns
@needs_extra
def test_two_hosts_link_cut_is_bounded(tmp_path):
    """The link to rank 1's "host" goes down: both training processes exit within the bound.

    mpirun itself may then wait for its unreachable daemon (OpenMPI 4.1's abort path), so
    this test watches the training processes, then stops the launcher script.
    """
    out = tmp_path / "out"
    env = _child_env(tmp_path, PYTHON=sys.executable, CUT_LINK=1)
    proc = subprocess.Popen(["bash", NETNS_SCRIPT, str(out), "die", "--kill-rank", "5"], env=env,  # pylint: disable=consider-using-with
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)
    try:
        deadline = time.time() + 240
        while not (out / "killed_at").exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.5)
        assert (out / "killed_at").exists(), "the link was never cut"
        cut = float((out / "killed_at").read_text())
        while _ranks_running(out) and time.time() < cut + FAIL_BOUND_S + 30:
            time.sleep(0.5)
        gone = time.time() - cut
        left = _ranks_running(out)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the script's trap removes the namespaces
        try:
            log = proc.communicate(timeout=30)[0].decode(errors="replace")
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            log = proc.communicate()[0].decode(errors="replace")
    print(f"link between the two hosts cut: both training processes gone {gone:.1f} s later")
    assert not left and gone < FAIL_BOUND_S, _tail(log)
    # whichever notices first: our watchdog (rank 0: "rank 1 is unreachable"), rank 0's collective
    # time-out, or mpirun's own keep-alive ("lost communication with a remote daemon")
    assert ("rank 1 is unreachable" in log or "lost communication with a remote daemon" in log
            or "collective failed" in log), _tail(log)
    _assert_no_survivor(out)
