"""train.py on two "hosts": ``mpirun --hostfile`` across two network namespaces.

Each test creates two network namespaces joined by a veth pair, with 10.231.X.1 and 10.231.X.2
(addresses that exist only inside them; nothing else is reached), and starts
``mpirun -n 2 --hostfile`` in the first one. OpenMPI starts its daemon on the second "host"
through ``--mca plm_rsh_agent tests/dist_scripts/netns_rsh.sh`` (``ip netns exec`` instead of
ssh), so rank 0 runs in one namespace and rank 1 in the other (each with its own hostname) and
every byte between them, MindSpore's scheduler and all-reduce included, crosses the veth link.
Each rank has its own checkpoint folder, as without a shared file system.

* an epoch trains to identical weights on both ranks, over the veth addresses;
* rank 1 killed on the remote "host" ends the whole job within 2 minutes, naming rank 1.

Needs root, ``ip`` (iproute2) and ``unshare``, OpenMPI's mpirun and mpi4py; skipped otherwise,
or where the kernel refuses to create namespaces. The namespaces are removed in every case.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import time
import uuid

import pytest

from test_distributed import FAIL_BOUND_S, MPIRUN, ROOT, _child_env, _mpi4py_ok, _run, _tail
from test_resume_ranks import per_rank_train_command, rank_log

RSH_AGENT = os.path.join(ROOT, "tests", "dist_scripts", "netns_rsh.sh")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(MPIRUN is None, reason="needs OpenMPI's mpirun on PATH"),
    pytest.mark.skipif(not _mpi4py_ok(), reason="needs mpi4py (pip install mpi4py)"),
]


class NamespaceUnavailable(Exception):
    """The kernel or the user's rights do not allow creating the namespaces."""


def _ip(*args):
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if proc.returncode != 0:
        raise NamespaceUnavailable(f"`ip {' '.join(args)}` failed: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout


class TwoHosts:
    """Two network namespaces joined by a veth pair; ``hosts[i]`` is the address inside namespace i."""

    def __init__(self):
        tag = "mcr2" + uuid.uuid4().hex[:6]  # interface names stay under 16 characters
        self.ns = (f"{tag}a", f"{tag}b")
        self.dev = (f"{tag}x", f"{tag}y")
        subnet = 1 + int(tag[4:], 16) % 250
        self.hosts = (f"10.231.{subnet}.1", f"10.231.{subnet}.2")
        self.created = []

    def up(self):
        for ns in self.ns:
            _ip("netns", "add", ns)
            self.created.append(ns)
        _ip("link", "add", self.dev[0], "type", "veth", "peer", "name", self.dev[1])
        for ns, dev, host in zip(self.ns, self.dev, self.hosts):
            _ip("link", "set", dev, "netns", ns)
            _ip("-n", ns, "addr", "add", f"{host}/24", "dev", dev)
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "link", "set", dev, "up")

    def pids(self, index):
        try:
            return [int(p) for p in _ip("netns", "pids", self.ns[index]).split()]
        except NamespaceUnavailable:
            return []

    def down(self):
        for index in range(len(self.created)):
            for pid in self.pids(index):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        for ns in self.created:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30, check=False)
        self.created = []
        # a veth pair not yet moved into the namespaces (set-up failed half-way) is removed too
        subprocess.run(["ip", "link", "del", self.dev[0]], capture_output=True, timeout=30, check=False)

    def link_bytes(self):
        """Bytes sent plus received on the first namespace's end of the veth link."""
        stats = json.loads(_ip("-n", self.ns[0], "-s", "-j", "link", "show", self.dev[0]))[0]["stats64"]
        return int(stats["tx"]["bytes"]) + int(stats["rx"]["bytes"])

    def env(self, tmp_path):
        env = _child_env(tmp_path, NETNS_MAP=" ".join(f"{h}={n}" for h, n in zip(self.hosts, self.ns)))
        env.setdefault("MINDCV_RES2NET_INIT_TIMEOUT", "120")
        return env

    def mpirun(self, tmp_path, program):
        """argv: mpirun in the first namespace, one rank per "host" of the hostfile."""
        hostfile = tmp_path / "hostfile"
        hostfile.write_text("".join(f"{h} slots=1\n" for h in self.hosts))
        net = f"{self.hosts[0]}/24"
        cmd = [MPIRUN] + (["--allow-run-as-root"] if os.geteuid() == 0 else []) + [
            "-n", "2", "--hostfile", str(hostfile), "--mca", "plm_rsh_agent", RSH_AGENT,
            "--mca", "btl", "self,tcp", "--mca", "btl_tcp_if_include", net, "--mca", "oob_tcp_if_include", net,
            "--bind-to", "none"]
        for key in ("PATH", "PYTHONPATH", "GLOG_v", "MINDCV_RES2NET_DIST_LOG_DIR", "MINDCV_RES2NET_INIT_TIMEOUT"):
            cmd += ["-x", key]
        return (["ip", "netns", "exec", self.ns[0], "unshare", "--uts", "sh", "-c",
                 f'hostname {self.ns[0]} && exec "$@"', "sh"] + cmd + list(program))


@pytest.fixture
def two_hosts():
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces (ip netns add)")
    missing = [tool for tool in ("ip", "unshare") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"needs {' and '.join(missing)} (iproute2, util-linux) to create network namespaces")
    hosts = TwoHosts()
    try:
        try:
            hosts.up()
        except NamespaceUnavailable as exc:
            pytest.skip(f"cannot create network namespaces here: {exc}")
        yield hosts
    finally:
        hosts.down()


def _train_processes(hosts, index):
    """PIDs of train.py processes (the ranks) inside namespace ``index``."""
    found = []
    for pid in hosts.pids(index):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue
        if len(argv) > 1 and argv[1].endswith(b"train.py"):
            found.append(pid)
    return found


def test_two_hosts_train_an_epoch_with_identical_weights(two_hosts, fashion_mnist_subset, tmp_path):  # pylint: disable=redefined-outer-name
    subset = fashion_mnist_subset(40)
    base = tmp_path / "run"
    before = two_hosts.link_bytes()
    rc, out, secs, _ = _run(two_hosts.mpirun(tmp_path, per_rank_train_command(subset, base, "--epoch_size", 1)),
                            two_hosts.env(tmp_path), timeout=400)
    assert rc == 0, _tail(out, 5000)
    crossed = two_hosts.link_bytes() - before
    print(f"two hosts: 1 epoch in {secs:.0f} s, {crossed / 1e6:.0f} MB over the veth link")
    # the cluster runs on the namespaces' addresses: MindSpore's scheduler and rank 0's watchdog
    # listen on rank 0's veth address (not 127.0.0.1, not every interface)
    assert f"(scheduler {two_hosts.hosts[0]}:" in out, _tail(out)
    assert re.search(rf", watchdog {re.escape(two_hosts.hosts[0])}:\d+, log ", out), _tail(out)
    logs = [rank_log(base, r) for r in range(2)]
    for r, text in enumerate(logs):
        assert "2 rank(s) (mpirun)" in text, (r, text[-2000:])
        assert "epoch 1/1 done in" in text, (r, text[-2000:])
        assert "epoch 1: largest weight difference between ranks 0\n" in text, (r, text[-2000:])
    assert any(n.endswith(".ckpt") for n in os.listdir(base / "out_0"))
    # res2net50: ~100 MB of float32 weights are broadcast once and their gradients all-reduced at
    # each of the 2 steps, all of it between the two namespaces
    assert crossed > 100e6, crossed


def test_killed_rank_on_the_remote_host_ends_the_job(two_hosts, fashion_mnist_subset, tmp_path):  # pylint: disable=redefined-outer-name
    subset = fashion_mnist_subset(40)
    base = tmp_path / "run"
    out_path = tmp_path / "mpirun.out"
    argv = two_hosts.mpirun(tmp_path, per_rank_train_command(subset, base, "--epoch_size", 30))
    with open(out_path, "wb") as out_file:
        proc = subprocess.Popen(argv, env=two_hosts.env(tmp_path), stdout=out_file, stderr=subprocess.STDOUT,  # pylint: disable=consider-using-with
                                start_new_session=True, cwd=ROOT)
    try:
        deadline = time.time() + 300
        victims = []
        while time.time() < deadline and proc.poll() is None:
            log1 = base / "out_1" / "logs" / "rank_1.log"
            if log1.exists() and "epoch 1/30 step 1/" in log1.read_text(errors="replace"):
                victims = _train_processes(two_hosts, 1)
                break
            time.sleep(0.5)
        assert victims, "rank 1 never trained a step:\n" + _tail(out_path.read_text(errors="replace"))
        assert not set(victims) & set(_train_processes(two_hosts, 0))
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        killed = time.time()
        try:
            rc = proc.wait(timeout=FAIL_BOUND_S + 30)
        except subprocess.TimeoutExpired:
            rc = None
        gone = time.time() - killed
        left = _train_processes(two_hosts, 0) + _train_processes(two_hosts, 1)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    out = out_path.read_text(errors="replace")
    named = [line for line in out.splitlines() if "rank 1 died" in line or "process rank 1" in line]
    print(f"rank 1 killed on the remote host: mpirun ended {gone:.1f} s later with status {rc}: {named[:2]}")
    assert rc is not None and rc != 0 and gone < FAIL_BOUND_S, _tail(out, 5000)
    assert not left, f"training processes still running: {left}"
    # the job's error names the killed rank: our watchdog on rank 0, or mpirun's own report
    assert named, _tail(out, 5000)
    assert "epoch 1/30 done" not in rank_log(base, 0)  # ended at once, not after the epoch
