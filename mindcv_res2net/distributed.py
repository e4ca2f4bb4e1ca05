"""Launch detection and distributed set-up: OpenMPI (mpi4py bridge), msrun, rank table.

``init_distributed(distribute, device_target)`` is called once, early, by every entry
script. It works out how the process was launched and joins MindSpore's cluster:

* ``mpirun -n N python train.py ...`` (OpenMPI; ``OMPI_COMM_WORLD_*`` set). MindSpore cannot
  join an OpenMPI job by itself, so this module bridges it with mpi4py: the ranks agree on
  an address for MindSpore's scheduler (``127.0.0.1`` when every rank shares one host and
  network namespace, otherwise an address of rank 0's host that every rank can reach, e.g.
  with ``mpirun --hostfile``), rank 0 starts the scheduler as a child process and waits until
  that very process (not just anything on the port) listens, every rank sets the
  dynamic-cluster variables (``MS_ROLE=MS_WORKER``, ``MS_NODE_ID=<rank>``, ``MS_WORKER_NUM``,
  ``MS_SCHED_HOST``, ``MS_SCHED_PORT``, and ``MS_WORKER_IP``: its own address on the route to
  the scheduler) and calls ``mindspore.communication.init()``. MPI is used only during this
  set-up and is finalized afterwards; collectives run over MindSpore (mccl / nccl / hccl).
* ``msrun --worker_num=N --local_worker_num=N train.py ...`` (``MS_ROLE`` already set): ``init()``.
* Ascend with ``RANK_TABLE_FILE`` (+ ``RANK_ID``, ``RANK_SIZE``, ``DEVICE_ID``): HCCL ``init()``.

Failures are bounded. Cluster time-outs that MindSpore leaves long are given bounded
defaults when the user has not set them (``CLUSTER_ENV_DEFAULTS``). Under mpirun every rank
also keeps one TCP connection to rank 0 (a watchdog, with TCP keep-alive and a per-job token;
rank 0 listens only on the scheduler's candidate addresses, 127.0.0.1 for a one-host job):
when a rank dies (killed, crashed), fails with an exception, or its host becomes unreachable,
rank 0 prints ``rank N died`` / ``rank N failed`` / ``rank N is unreachable`` and every rank exits with
status 1 at once (about 1 s; about 40 s for a vanished host) instead of waiting in a
collective; mpirun itself also ends the job when a rank exits non-zero. A rank that never
reaches ``init_distributed`` makes the others exit after ``MINDCV_RES2NET_INIT_TIMEOUT``
(faulthandler's time-out dump, ending in ``_wait_for_every_rank_to_call_init_distributed``).
Under msrun, msrun stops the local workers when one fails and MindSpore's heartbeat
(``MS_NODE_TIMEOUT``) ends the rest.

The scheduler child writes its log to ``$MINDCV_RES2NET_DIST_LOG_DIR`` (default: a new
private directory, mode 0700, ``<tempdir>/mindcv_res2net_dist_XXXXXXXX``), file
``scheduler_<host>_<port>_<random>.log`` (created exclusively, mode 0600, never through a
symlink); rank 0 prints the path once. A small supervisor process sits between rank 0 and the
scheduler: if rank 0 dies the scheduler is killed at once; when rank 0 ends normally the
scheduler is given ``MINDCV_RES2NET_SCHED_GRACE`` seconds (default 60) to let the other ranks unregister.

Environment knobs (all optional): ``MINDCV_RES2NET_SCHED_HOST`` (address of rank 0's host
that every rank can reach, for multi-homed hosts), ``MINDCV_RES2NET_SCHED_PORT``,
``MINDCV_RES2NET_INIT_TIMEOUT`` (seconds for all ranks to reach ``init_distributed`` and for
the scheduler to start, default 90), ``MINDCV_RES2NET_DIST_LOG_DIR``,
``MINDCV_RES2NET_SCHED_GRACE``.

For the trainer: ``get_dist_info()``, ``is_main_process()``, ``all_reduce_sum(array)`` (exact
for counts: integer arrays and integer-valued float64 entries), ``barrier()``,
``broadcast_object(obj)`` (rank 0's JSON-able object everywhere, e.g. the resume decision),
``broadcast_parameters(net)`` (rank 0's parameters everywhere, bit for bit, any dtype) and
``parameters_divergence(net)``.
"""
import atexit
import faulthandler
import json
import os
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass

import numpy as np

from .errors import UserError

__all__ = [
    "DistInfo", "DistributedError", "LAUNCHERS", "CLUSTER_ENV_DEFAULTS",
    "detect_launcher", "parse_distribute", "resolve_device_target", "init_distributed",
    "get_dist_info", "is_main_process", "all_reduce_sum", "barrier", "broadcast_object",
    "broadcast_parameters", "parameters_divergence", "shutdown",
]

LAUNCHERS = ("none", "mpirun", "msrun", "rank_table")
WATCHDOG_EXIT_CODE = 1
_PREFIX = "[mindcv_res2net.distributed]"

# Bounded cluster time-outs, applied with os.environ.setdefault (a user's value wins).
# MindSpore's own defaults: MS_TOPO_TIMEOUT 1800 s, MS_RECEIVE_MSG_TIMEOUT 300 s,
# MS_NODE_TIMEOUT 30 s (heartbeat), HCCL_EXEC_TIMEOUT 1836 s.
CLUSTER_ENV_DEFAULTS = {
    "MS_TOPO_TIMEOUT": "90",         # all workers must register with the scheduler within this
    "MS_NODE_TIMEOUT": "45",         # heartbeat: a silent node is declared dead after this
    "MS_RECEIVE_MSG_TIMEOUT": "60",  # one cluster message round-trip
    "HCCL_CONNECT_TIMEOUT": "120",   # Ascend: link set-up between ranks
    "HCCL_EXEC_TIMEOUT": "600",      # Ascend: one collective may wait this long for a peer
}


class DistributedError(UserError):
    """Distributed set-up failed for a reason the user can act on (network, launch command)."""


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the job."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    is_distributed: bool = False
    launcher: str = "none"
    device_target: str = ""


_STATE = {"info": DistInfo(), "bridge": None, "initialized": False}


def _say(msg):
    """One line on stderr, written directly so it survives os._exit right after."""
    try:
        stamp = time.strftime("%H:%M:%S")
        os.write(2, f"{_PREFIX} {stamp} {msg}\n".encode("utf-8", "replace"))
    except OSError:
        pass


def _env_float(name, default):
    value = os.environ.get(name, "")
    try:
        return float(value) if value else float(default)
    except ValueError as exc:
        raise UserError(f"environment variable {name} must be a number of seconds: {value!r}. "
                        f"Unset it or give e.g. {name}={default}") from exc


# --------------------------------------------------------------------------------------------
# launch detection and argument parsing
# --------------------------------------------------------------------------------------------
def detect_launcher(environ=None):
    """Return how this process was launched: "msrun", "mpirun", "rank_table" or "none"."""
    env = os.environ if environ is None else environ
    if env.get("MS_ROLE"):
        return "msrun"
    if env.get("OMPI_COMM_WORLD_SIZE") and env.get("OMPI_COMM_WORLD_RANK") is not None:
        return "mpirun"
    if (env.get("RANK_TABLE_FILE") or env.get("MINDSPORE_HCCL_CONFIG_PATH")) and env.get("RANK_SIZE"):
        return "rank_table"
    return "none"


def _launcher_world_size(launcher, environ=None):
    env = os.environ if environ is None else environ
    key = {"mpirun": "OMPI_COMM_WORLD_SIZE", "msrun": "MS_WORKER_NUM", "rank_table": "RANK_SIZE"}.get(launcher)
    try:
        return int(env.get(key, "1")) if key else 1
    except ValueError:
        return 1


def parse_distribute(value):
    """Normalize ``--distribute``: "auto" (or None), True or False."""
    if value is None:
        return "auto"
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise UserError(f"distribute must be auto, true or false: {value!r}. "
                    "Use --distribute auto (on when launched by mpirun or msrun), true or false")


_HOW_TO_LAUNCH = ("launch one process per device, e.g. `mpirun -n N python train.py --config CFG ...` "
                  "(scripts/run_distribute_train_gpu.sh) or `msrun --worker_num=N --local_worker_num=N "
                  "train.py --config CFG ...` (scripts/run_distribute_train_ascend.sh), or pass "
                  "--distribute False to train in this single process")


def resolve_device_target(name=None):
    """"auto"/None -> "Ascend" or "GPU" when this MindSpore can use one, else "CPU".

    An explicit name is normalized ("cpu" -> "CPU", "npu" -> "Ascend"); a device this
    MindSpore installation cannot use raises ``UserError``.
    """
    text = "auto" if name is None else str(name).strip()
    lowered = text.lower()
    if lowered in ("", "auto"):
        for target in ("Ascend", "GPU"):
            if _device_supported(target):
                return target
        return "CPU"
    aliases = {"cpu": "CPU", "gpu": "GPU", "cuda": "GPU", "ascend": "Ascend", "npu": "Ascend"}
    if lowered not in aliases:
        raise UserError(f"unknown device_target: {name!r}. Use auto, CPU, GPU or Ascend")
    target = aliases[lowered]
    if target != "CPU" and not _device_supported(target):
        raise UserError(f"device_target {target} is not usable by this MindSpore installation "
                        f"(its {target} plugin did not load): {name!r}. Install the MindSpore build "
                        f"for {target}, or use --device_target CPU (or auto)")
    return target


def _device_supported(target):
    try:
        from mindspore._c_expression import MSContext  # pylint: disable=import-outside-toplevel
        return bool(MSContext.get_instance().is_pkg_support_device(target))
    except Exception:  # pylint: disable=broad-except
        return False


# --------------------------------------------------------------------------------------------
# init
# --------------------------------------------------------------------------------------------
def init_distributed(distribute="auto", device_target=None, *, log_dir=None):
    """Join the distributed job this process was launched into; return its ``DistInfo``.

    ``distribute``: "auto" (on when launched by mpirun / msrun / a rank table with more than
    one process), True (a launcher is required) or False (single process; a multi-process
    launch is refused). ``device_target``: None leaves MindSpore's device as it is; otherwise
    it is resolved with ``resolve_device_target`` and set (device id = local rank under
    mpirun / rank table). Idempotent: a second call returns the first result.
    """
    if _STATE["initialized"]:
        return _STATE["info"]
    mode = parse_distribute(distribute)
    launcher = detect_launcher()
    world = _launcher_world_size(launcher)

    if mode is True and launcher == "none":
        raise UserError("--distribute True but this process was not started by a distributed "
                        f"launcher (no OMPI_COMM_WORLD_*, MS_ROLE or RANK_TABLE_FILE): {_HOW_TO_LAUNCH}")
    if mode is False and launcher != "none" and world > 1:
        raise UserError(f"--distribute False but this process is one of {world} started by {launcher}; "
                        "each would train its own copy of the model. Start a single process "
                        "(scripts/run_standalone_train.sh) or use --distribute auto")

    target = resolve_device_target(device_target) if device_target is not None else None
    if launcher == "none" or world <= 1 and launcher != "msrun":
        if target is not None:
            _set_device(target, None)
        info = DistInfo(launcher=launcher, device_target=target or _current_device_target())
        _STATE.update(info=info, initialized=True)
        return info

    if launcher == "mpirun":
        info = _init_mpirun(target, log_dir)
    elif launcher == "msrun":
        info = _init_msrun(target)
    else:
        info = _init_rank_table(target)
    if info.is_distributed:
        _set_data_parallel(info.world_size)
    _STATE.update(info=info, initialized=True)
    return info


def get_dist_info():
    """The ``DistInfo`` of this process (single-process defaults before ``init_distributed``)."""
    return _STATE["info"]


def is_main_process():
    """True on rank 0 (and in a single-process run)."""
    return _STATE["info"].rank == 0


def _current_device_target():
    try:
        import mindspore as ms  # pylint: disable=import-outside-toplevel
        return ms.get_context("device_target")
    except Exception:  # pylint: disable=broad-except
        return "CPU"


def _set_device(target, device_id):
    import mindspore as ms  # pylint: disable=import-outside-toplevel
    if device_id is None or target == "CPU":
        ms.set_device(target)
    else:
        ms.set_device(target, int(device_id))


def _apply_env_defaults():
    for key, value in CLUSTER_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


def _set_data_parallel(world_size):
    import mindspore as ms  # pylint: disable=import-outside-toplevel
    from mindspore.context import ParallelMode  # pylint: disable=import-outside-toplevel
    ms.reset_auto_parallel_context()
    ms.set_auto_parallel_context(parallel_mode=ParallelMode.DATA_PARALLEL, gradients_mean=True,
                                 device_num=int(world_size))


def _ms_init(backend=None):
    from mindspore.communication import init  # pylint: disable=import-outside-toplevel
    try:
        if backend:
            init(backend)
        else:
            init()
    except RuntimeError as exc:
        raise DistributedError(f"MindSpore distributed init failed: {exc}. Check that every rank "
                               "can reach the scheduler address and that all ranks were started") from exc


def _init_msrun(target):
    _apply_env_defaults()
    if target is not None:
        _set_device(target, None)
    _ms_init()
    from mindspore.communication import get_rank, get_group_size, get_local_rank  # pylint: disable=import-outside-toplevel
    rank, world = get_rank(), get_group_size()
    try:
        local = get_local_rank()
    except Exception:  # pylint: disable=broad-except
        local = rank
    return DistInfo(rank=rank, world_size=world, local_rank=local, is_distributed=world > 1,
                    launcher="msrun", device_target=target or _current_device_target())


def _init_rank_table(target):
    _apply_env_defaults()
    target = target or _current_device_target()
    if target != "Ascend":
        raise UserError(f"RANK_TABLE_FILE is set but device_target is {target}: a rank table "
                        "launch is for Ascend (HCCL). Use --device_target Ascend, or launch with "
                        "mpirun / msrun for CPU and GPU")
    for key in ("RANK_ID", "RANK_SIZE"):
        if not os.environ.get(key):
            raise UserError(f"rank table launch needs environment variable {key}: unset. "
                            "Use scripts/run_distribute_train_ascend_rank_table.sh")
    rank, world = int(os.environ["RANK_ID"]), int(os.environ["RANK_SIZE"])
    local = int(os.environ.get("DEVICE_ID", rank % 8))
    _set_device(target, local)
    _ms_init("hccl")
    return DistInfo(rank=rank, world_size=world, local_rank=local, is_distributed=world > 1,
                    launcher="rank_table", device_target=target)


# --------------------------------------------------------------------------------------------
# the OpenMPI bridge
# --------------------------------------------------------------------------------------------
def _import_mpi(timeout):
    """Import mpi4py and initialize MPI, giving up (exit 1) if not every rank starts in time.

    MPI_Init blocks until every rank of the job has called it, and holds the GIL while it
    waits, so the bound is enforced by faulthandler's C watchdog thread: on time-out it prints
    the stack (ending in ``_wait_for_every_rank_to_call_init_distributed``) and exits with 1,
    and mpirun then ends the other ranks.
    """
    try:
        import mpi4py  # pylint: disable=import-outside-toplevel
    except ImportError as exc:
        raise UserError("launched by mpirun but mpi4py is not installed: install it "
                        "(`pip install mpi4py`, built against the same OpenMPI as mpirun) or launch "
                        "with msrun (scripts/run_distribute_train_ascend.sh)") from exc
    if "mpi4py.MPI" not in sys.modules:
        mpi4py.rc.initialize = False
    from mpi4py import MPI  # pylint: disable=import-outside-toplevel
    if not MPI.Is_initialized():
        faulthandler.dump_traceback_later(timeout, exit=True)
        try:
            _wait_for_every_rank_to_call_init_distributed(MPI)
        finally:
            faulthandler.cancel_dump_traceback_later()
    return MPI


def _wait_for_every_rank_to_call_init_distributed(MPI):  # pylint: disable=invalid-name
    MPI.Init_thread(MPI.THREAD_MULTIPLE)


def _sleepy_wait(request, timeout):
    """Wait for an MPI request without OpenMPI's busy polling; False on time-out."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while not request.Test():
        if time.monotonic() > deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    return True


def _sleepy_barrier(comm, timeout, what):
    if not _sleepy_wait(comm.Ibarrier(), timeout):
        raise DistributedError(f"not every rank reached {what} within {timeout:.0f} s; a rank is "
                               "stuck or died (see the other ranks' output). Raise "
                               "MINDCV_RES2NET_INIT_TIMEOUT if start-up is just slow")


def _net_identity():
    """(hostname, network namespace) — ranks sharing it can talk over 127.0.0.1."""
    try:
        netns = os.readlink("/proc/self/ns/net")
    except OSError:
        netns = ""
    boot = ""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            boot = fh.read().strip()
    except OSError:
        pass
    return f"{socket.gethostname()}|{boot}|{netns}"


def _local_ipv4_addresses():
    """Non-loopback IPv4 addresses of this host, most useful first."""
    addrs = []
    try:
        out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True,
                             text=True, timeout=5, check=False).stdout
        for line in out.splitlines():
            parts = line.split()
            if "inet" in parts:
                addrs.append(parts[parts.index("inet") + 1].split("/")[0])
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            addrs.append(info[4][0])
    except OSError:
        pass
    seen, result = set(), []
    for addr in addrs:
        if addr not in seen and not addr.startswith("127."):
            seen.add(addr)
            result.append(addr)
    return result


def _route_source_ip(dest_host):
    """The local address the kernel would use to reach dest_host (no packet is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((dest_host, 9))
            return probe.getsockname()[0]
    except OSError:
        return None


def _listening_inodes(port):
    """Socket inodes of the local listeners on TCP ``port`` (this network namespace), read from
    /proc/net/tcp without connecting (a probe connection would leave a warning in the
    scheduler's log); None where /proc/net/tcp does not exist."""
    inodes, known = set(), False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as fh:
                known = True
                next(fh, None)
                for line in fh:
                    fields = line.split()
                    if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(fields[9])
        except OSError:
            continue
    return inodes if known else None


def _process_tree(pid):
    """``pid`` and all its descendants (from /proc/<pid>/stat)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = set(), [pid]
    while todo:
        current = todo.pop()
        if current not in tree:
            tree.add(current)
            todo.extend(children.get(current, ()))
    return tree


def _socket_inodes(pids):
    """Socket inodes held open by the processes ``pids``, as {inode: pid}."""
    held = {}
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                held.setdefault(link[8:-1], pid)
    return held


def _scheduler_listening(port, scheduler_pid):
    """Whether the scheduler process tree rooted at ``scheduler_pid`` listens on ``port``.

    Returns (state, others): state "ours" when a listener on the port belongs to that tree,
    "none" when nothing listens, "foreign" when only other processes do (then ``others`` holds
    their socket inodes), None when /proc/net/tcp is not available. Anything merely listening
    on the port (another program, a stale scheduler) is never taken for ours.
    """
    inodes = _listening_inodes(port)
    if inodes is None:
        return None, set()
    if not inodes:
        return "none", set()
    ours = set(_socket_inodes(_process_tree(scheduler_pid)))
    if inodes & ours:
        return "ours", set()
    return "foreign", inodes


def _foreign_note(port, inodes):
    """", port P is held by another program (pid N: cmdline)" for an error message, or ""."""
    if not inodes:
        return ""
    who = ""
    try:
        pids = [int(e) for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        pids = []
    owners = {inode: pid for inode, pid in _socket_inodes(pids).items() if inode in inodes}
    for pid in sorted(set(owners.values()))[:1]:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace").strip()[:120]
        except OSError:
            cmd = "?"
        who = f" (pid {pid}: {cmd})"
    return (f"; port {port} is held by another program{who}, not by the scheduler rank 0 started: "
            "leave MINDCV_RES2NET_SCHED_PORT / MS_SCHED_PORT unset (a free port is chosen) or give a free one")


def _open_scheduler_log(log_dir, port):
    """Create the scheduler's log file; returns (open file, path).

    The directory is ``log_dir``, else $MINDCV_RES2NET_DIST_LOG_DIR, else a new private
    directory (mode 0700) made by tempfile.mkdtemp. The file gets a unique name,
    ``scheduler_<host>_<port>_<random>.log``, created with O_EXCL | O_NOFOLLOW and mode 0600
    (tempfile.mkstemp), so a file or symlink planted under a predictable name is never opened.
    """
    log_dir = log_dir or os.environ.get("MINDCV_RES2NET_DIST_LOG_DIR")
    host = "".join(c if c.isalnum() or c in "-." else "_" for c in socket.gethostname()) or "host"
    try:
        if log_dir:
            os.makedirs(log_dir, mode=0o700, exist_ok=True)
        else:
            log_dir = tempfile.mkdtemp(prefix="mindcv_res2net_dist_")
        fd, path = tempfile.mkstemp(prefix=f"scheduler_{host}_{port}_", suffix=".log", dir=log_dir)
    except OSError as exc:
        raise DistributedError(f"cannot create the scheduler log in {log_dir or tempfile.gettempdir()}: "
                               f"{exc.strerror or exc}. Set MINDCV_RES2NET_DIST_LOG_DIR to a writable "
                               "directory") from exc
    return os.fdopen(fd, "w", encoding="utf-8"), path


def _free_port(host):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _init_mpirun(target, log_dir):
    # Import MindSpore before registering our atexit hook: atexit runs last-in first-out, so our
    # shutdown (BYE to the peers and the scheduler) then runs before MindSpore's own finalization.
    import mindspore  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    timeout = _env_float("MINDCV_RES2NET_INIT_TIMEOUT", 90)
    t_start = time.monotonic()
    MPI = _import_mpi(timeout)
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    local_rank = int(os.environ.get("OMPI_COMM_WORLD_LOCAL_RANK", "0"))

    # 1. where can every rank reach rank 0?
    idents = comm.allgather(_net_identity())
    user_host = os.environ.get("MINDCV_RES2NET_SCHED_HOST") or os.environ.get("MS_SCHED_HOST")
    bridge = _MpiBridge(rank, size)
    if rank == 0:
        if user_host:
            candidates = [user_host]
        elif len(set(idents)) == 1:
            candidates = ["127.0.0.1"]
        else:
            candidates = _local_ipv4_addresses() or [socket.gethostname()]
        bridge.listen(candidates)  # on these addresses only: loopback when every rank is local
        offer = (candidates, bridge.ports, bridge.token)
    else:
        offer = None
    candidates, wports, token = comm.bcast(offer, root=0)
    reachable = bridge.connect_to_rank0(candidates, wports, token) if rank else list(range(len(candidates)))
    all_reachable = comm.allgather(reachable)
    common = [i for i in range(len(candidates)) if all(i in r for r in all_reachable)]
    if not common:
        bad = [r for r, ok in enumerate(all_reachable) if not ok]
        bridge.close()
        raise DistributedError(
            f"rank(s) {', '.join(map(str, bad)) or '?'} cannot reach rank 0 over TCP at any of "
            f"{candidates} (ports {wports}). Set MINDCV_RES2NET_SCHED_HOST to an address of rank 0's "
            "host that every host can reach, and check firewalls")
    sched_host = candidates[common[0]]
    if rank == 0:
        bridge.accept_peers(timeout=min(timeout, 30.0))
    missing = comm.allgather(bridge.missing_peers() if rank == 0 else None)[0]
    if missing:
        bridge.close()
        raise DistributedError(f"rank(s) {', '.join(map(str, missing))} connected to rank 0 but did not "
                               "complete the hand-shake; check for a proxy or firewall between hosts")

    # 2. rank 0 starts MindSpore's scheduler; everybody learns its port
    _apply_env_defaults()
    if rank == 0:
        try:
            port = int(os.environ.get("MINDCV_RES2NET_SCHED_PORT") or os.environ.get("MS_SCHED_PORT") or 0)
            port = port or _free_port(sched_host)
            bridge.start_scheduler(sched_host, port, size, log_dir, timeout)
            status = ("ok", port, bridge.sched_log)
        except DistributedError as exc:
            status = ("error", str(exc), None)
    else:
        status = None
    _sleepy_barrier(comm, timeout, "the scheduler start")
    status = comm.bcast(status, root=0)
    if status[0] != "ok":
        bridge.close()
        raise DistributedError(status[1])
    port = status[1]

    # 3. dynamic-cluster variables, then MindSpore's init; MPI's job is done
    os.environ.update(MS_ROLE="MS_WORKER", MS_NODE_ID=str(rank), MS_WORKER_NUM=str(size),
                      MS_SCHED_HOST=sched_host, MS_SCHED_PORT=str(port))
    if not sched_host.startswith("127.") and sched_host != "localhost" and not os.environ.get("MS_WORKER_IP"):
        source = _route_source_ip(sched_host)
        if source:
            os.environ["MS_WORKER_IP"] = source
    _sleepy_barrier(comm, timeout, "MindSpore init")
    if not MPI.Is_finalized():
        MPI.Finalize()
    bridge.start_watchdog()
    _STATE["bridge"] = bridge
    atexit.register(shutdown)

    if target is not None:
        _set_device(target, local_rank if target != "CPU" else None)
    _ms_init()
    bridge.install_excepthook()
    from mindspore.communication import get_rank, get_group_size  # pylint: disable=import-outside-toplevel
    ms_rank, ms_world = get_rank(), get_group_size()
    if ms_rank != rank or ms_world != size:
        raise DistributedError(f"MindSpore assigned rank {ms_rank}/{ms_world} to MPI rank {rank}/{size}; "
                               "a stale MS_* variable in the environment may be the cause (unset "
                               "MS_NODE_ID / MS_WORKER_NUM)")
    if rank == 0:
        watchdog = ", ".join(f"{addr}:{wport}" for addr, wport in bridge.bound)
        _say(f"rank 0: {size} ranks joined in {time.monotonic() - t_start:.1f} s "
             f"(scheduler {sched_host}:{port}, watchdog {watchdog}, log {bridge.sched_log})")
    return DistInfo(rank=rank, world_size=size, local_rank=local_rank, is_distributed=True,
                    launcher="mpirun", device_target=target or _current_device_target())


# The scheduler child: a supervisor (stdin = pipe from rank 0) that forks the real scheduler.
# Rank 0 dies -> pipe EOF / re-parenting -> scheduler killed at once. Rank 0 ends normally ->
# it writes BYE -> the scheduler gets a grace period for the other ranks to unregister.
_SCHEDULER_CODE = r'''
import os, select, signal, sys, time
parent = int(os.environ["MINDCV_RES2NET_SCHED_PARENT"])
grace = float(os.environ.get("MINDCV_RES2NET_SCHED_GRACE") or 60)
pid = os.fork()
if pid == 0:
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass
    if os.getppid() == 1:
        os._exit(1)
    os.environ["MS_ROLE"] = "MS_SCHED"
    os.environ.pop("MS_NODE_ID", None)
    import mindspore as ms
    ms.set_device("CPU")
    from mindspore.communication import init
    init()
    os._exit(0)
bye, deadline = False, None
def _stop(code, why):
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        os.waitpid(pid, 0)
    except OSError:
        pass
    sys.stdout.write("supervisor: %s\n" % why)
    sys.stdout.flush()
    os._exit(code)
signal.signal(signal.SIGTERM, lambda *a: _stop(143, "SIGTERM"))
while True:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        code = os.waitstatus_to_exitcode(status)
        sys.stdout.write("supervisor: scheduler exited with %d\n" % code)
        sys.stdout.flush()
        os._exit(0 if code == 0 else 1)
    if bye:
        if time.monotonic() > deadline:
            _stop(0, "grace period over after rank 0 ended; scheduler stopped")
        time.sleep(0.2)
        continue
    ready = select.select([0], [], [], 0.5)[0]
    if ready:
        data = os.read(0, 64)
        if b"BYE" in data:
            bye, deadline = True, time.monotonic() + grace
        elif not data:
            _stop(1, "rank 0 died (pipe closed); scheduler killed")
    if os.getppid() != parent:
        _stop(1, "rank 0 died (re-parented); scheduler killed")
'''


class _MpiBridge:
    """Rank 0's scheduler child and the all-ranks TCP watchdog (a star around rank 0)."""

    def __init__(self, rank, size):
        self.rank, self.size = rank, size
        self.token = uuid.uuid4().hex if rank == 0 else None
        self.ports = []          # rank 0: watchdog port for each candidate address
        self.listeners = []      # rank 0: the listening sockets (closed once every peer is in)
        self.bound = []          # rank 0: (address, port) each listener is bound to
        self.peers = {}          # rank 0: peer rank -> socket
        self.peer_bye = set()    # rank 0: ranks that ended normally
        self.upstream = None     # rank > 0: socket to rank 0
        self.sched_proc = None
        self.sched_log = None
        self.closing = False
        self.self_failed = False
        self.lock = threading.Lock()
        self.thread = None

    # ---- set-up (called while MPI is still up) ----
    def listen(self, addresses):
        """Rank 0: one watchdog listener per address the other ranks may use to reach it, bound
        to that address alone (127.0.0.1 when every rank runs on this host), never to every
        interface unless an address given in MINDCV_RES2NET_SCHED_HOST is not one of this host's
        (rank 0 behind NAT)."""
        for host in addresses:
            sock = self._listener_for(host)
            self.listeners.append(sock)
            self.bound.append(sock.getsockname()[:2])
            self.ports.append(sock.getsockname()[1])

    def _listener_for(self, host):
        try:
            addr = socket.gethostbyname(host)
        except OSError:
            addr = None
        for bind in ([addr] if addr else []) + ["0.0.0.0"]:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((bind, 0))
            except OSError as exc:
                sock.close()
                if bind == "0.0.0.0":
                    raise DistributedError(f"rank 0 cannot open its watchdog port: {exc}") from exc
                _say(f"rank 0: {host} ({bind}) is not an address of this host ({exc.strerror}); "
                     "the watchdog listens on every interface for it")
                continue
            sock.listen(max(128, self.size))
            return sock
        raise DistributedError(f"rank 0 cannot open a watchdog port for {host}")  # not reached

    def connect_to_rank0(self, candidates, ports, token):
        """Try each candidate address; keep the first working connection as the watchdog link."""
        reachable = []
        for index, (host, port) in enumerate(zip(candidates, ports)):
            try:
                sock = socket.create_connection((host, port), timeout=5)
            except OSError:
                continue
            reachable.append(index)
            if self.upstream is None:
                sock.settimeout(None)
                _keepalive(sock)
                sock.sendall(f"HELLO {self.rank} {token}\n".encode())
                self.upstream = sock
            else:
                sock.sendall(b"PROBE\n")
                sock.close()
        return reachable

    def accept_peers(self, timeout):
        deadline = time.monotonic() + timeout
        pending = {}
        while len(self.peers) < self.size - 1 and time.monotonic() < deadline:
            socks = self.listeners + list(pending)
            ready = select.select(socks, [], [], 0.2)[0]
            for sock in ready:
                if sock in self.listeners:
                    conn, _ = sock.accept()
                    pending[conn] = b""
                    continue
                try:
                    data = sock.recv(256)
                except OSError:
                    data = b""
                if not data:
                    pending.pop(sock, None)
                    sock.close()
                    continue
                pending[sock] += data
                if b"\n" in pending[sock]:
                    line = pending.pop(sock).split(b"\n", 1)[0].decode(errors="replace").split()
                    if len(line) == 3 and line[0] == "HELLO" and line[2] == self.token:
                        sock.settimeout(None)
                        _keepalive(sock)
                        self.peers[int(line[1])] = sock
                    else:
                        sock.close()
        for sock in pending:
            sock.close()
        self._close_listeners()

    def _close_listeners(self):
        for sock in self.listeners:
            sock.close()
        self.listeners = []

    def missing_peers(self):
        return [r for r in range(1, self.size) if r not in self.peers]

    def start_scheduler(self, host, port, size, log_dir, timeout):
        log, self.sched_log = _open_scheduler_log(log_dir, port)
        # the scheduler is not an MPI process: without OpenMPI's variables MindSpore does not
        # mix its dynamic cluster with OpenMPI settings
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("OMPI_", "PMIX_", "OPAL_", "ORTE_")) and k not in ("MS_NODE_ID", "MS_WORKER_IP")}
        env.update(MS_ROLE="MS_SCHED", MS_WORKER_NUM=str(size), MS_SCHED_HOST=host, MS_SCHED_PORT=str(port),
                   MINDCV_RES2NET_SCHED_PARENT=str(os.getpid()))
        env.setdefault("GLOG_v", "2")
        with log:
            self.sched_proc = subprocess.Popen(  # pylint: disable=consider-using-with
                [sys.executable, "-c", _SCHEDULER_CODE], stdin=subprocess.PIPE, stdout=log,
                stderr=subprocess.STDOUT, env=env, close_fds=True)
        deadline = time.monotonic() + timeout
        foreign = set()
        while True:
            if self.sched_proc.poll() is not None:
                raise DistributedError(f"MindSpore scheduler exited with {self.sched_proc.returncode} before "
                                       f"listening on {host}:{port}{_foreign_note(port, foreign)}; "
                                       f"see {self.sched_log}")
            state, others = _scheduler_listening(port, self.sched_proc.pid)
            if state is None:  # no /proc/net/tcp: ask the port itself (cannot tell whose it is)
                try:
                    socket.create_connection((host, port), timeout=1).close()
                    state = "ours"
                except OSError:
                    state = "none"
            if state == "ours":
                return
            foreign |= others
            if time.monotonic() > deadline:
                self._kill_scheduler()
                raise DistributedError(f"MindSpore scheduler did not listen on {host}:{port} within "
                                       f"{timeout:.0f} s{_foreign_note(port, foreign)}; see {self.sched_log}")
            time.sleep(0.2)

    def _kill_scheduler(self):
        proc = self.sched_proc
        if proc is not None and proc.poll() is None:
            try:
                proc.kill()
            except OSError:
                pass

    # ---- watchdog ----
    def start_watchdog(self):
        target = self._watch_peers if self.rank == 0 else self._watch_rank0
        self.thread = threading.Thread(target=target, name="mindcv-dist-watchdog", daemon=True)
        self.thread.start()

    def _abort(self, failed, what):
        """Rank 0: tell every other rank, then exit at once. ``what`` names the failed party."""
        with self.lock:
            if self.closing:
                return
            self.closing = True
        _say(f"rank 0: {what}; aborting all {self.size} ranks")
        message = f"ABORT {failed} {what}\n".encode(errors="replace")
        for sock in self.peers.values():
            try:
                sock.sendall(message)
            except OSError:
                pass
        self._kill_scheduler()
        os._exit(WATCHDOG_EXIT_CODE)

    def _watch_peers(self):
        buffers = {sock: b"" for sock in self.peers.values()}
        owner = {sock: r for r, sock in self.peers.items()}
        while True:
            if self.closing:
                return
            live = [s for s in buffers if owner[s] not in self.peer_bye]
            try:
                ready = select.select(live, [], [], 1.0)[0] if live else (time.sleep(1.0) or [])
            except (OSError, ValueError):
                return
            if self.sched_proc is not None and self.sched_proc.poll() is not None and not self.closing:
                self._abort("-", f"the MindSpore scheduler (child of rank 0) exited with "
                            f"{self.sched_proc.returncode} (log {self.sched_log})")
            for sock in ready:
                peer = owner[sock]
                error = None
                try:
                    data = sock.recv(4096)
                except OSError as exc:
                    data, error = b"", exc
                if not data:
                    if peer not in self.peer_bye:
                        self._abort(peer, f"rank {peer} {_lost_reason(error)}")
                    continue
                buffers[sock] += data
                while b"\n" in buffers[sock]:
                    line, buffers[sock] = buffers[sock].split(b"\n", 1)
                    text = line.decode(errors="replace")
                    if text.startswith("BYE"):
                        self.peer_bye.add(peer)
                    elif text.startswith("FAIL"):
                        self._abort(peer, f"rank {peer} failed: {text[5:]}")

    def _watch_rank0(self):
        buf = b""
        while True:
            error = None
            try:
                data = self.upstream.recv(4096)
            except OSError as exc:
                data, error = b"", exc
            if not data:
                if not self.closing and not self.self_failed:
                    _say(f"rank {self.rank}: lost the connection to rank 0: rank 0 {_lost_reason(error)}; "
                         "aborting")
                    os._exit(WATCHDOG_EXIT_CODE)
                return
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                text = line.decode(errors="replace")
                if text.startswith("BYE"):
                    return
                if text.startswith("ABORT"):
                    parts = text.split(" ", 2)
                    failed = parts[1] if len(parts) > 1 else "-"
                    what = parts[2] if len(parts) > 2 else "a rank failed"
                    if self.self_failed and failed == str(self.rank):
                        return
                    _say(f"rank {self.rank}: {what}; aborting (reported by rank 0)")
                    os._exit(WATCHDOG_EXIT_CODE)

    def install_excepthook(self):
        previous = sys.excepthook

        def hook(exc_type, exc, tb):
            self.report_failure(f"{exc_type.__name__}: {exc}")
            previous(exc_type, exc, tb)
        sys.excepthook = hook

    def report_failure(self, reason):
        reason = " ".join(str(reason).split())[:300]
        with self.lock:
            if self.closing:
                return
            self.self_failed = True
            if self.rank == 0:
                self.closing = True
        if self.rank == 0:
            message = f"ABORT 0 rank 0 failed: {reason}\n".encode(errors="replace")
            for sock in self.peers.values():
                try:
                    sock.sendall(message)
                except OSError:
                    pass
            self._kill_scheduler()
        elif self.upstream is not None:
            try:
                self.upstream.sendall(f"FAIL {reason}\n".encode(errors="replace"))
            except OSError:
                pass

    def close(self):
        """Normal end: say BYE to the other side(s) and let the scheduler wind down."""
        with self.lock:
            if self.closing:
                return
            self.closing = True
        if self.rank == 0:
            for sock in self.peers.values():
                try:
                    sock.sendall(b"BYE\n")
                    sock.close()
                except OSError:
                    pass
            self._close_listeners()
            proc = self.sched_proc
            if proc is not None and proc.stdin is not None:
                try:
                    proc.stdin.write(b"BYE\n")
                    proc.stdin.flush()
                    proc.stdin.close()
                except OSError:
                    pass
        elif self.upstream is not None:
            try:
                self.upstream.sendall(b"BYE\n")
                self.upstream.close()
            except OSError:
                pass


def _lost_reason(error):
    if error is None or isinstance(error, ConnectionResetError):
        return "died (its watchdog connection closed without a normal shutdown)"
    return (f"is unreachable ({error.strerror or error}: host down or network cut; "
            "TCP keep-alive gave up)")


def _keepalive(sock):
    """Kernel-level liveness for a peer host that vanishes without closing the connection (~40 s)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 6)):
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def shutdown():
    """Normal end of a distributed run (also registered with atexit): stop the watchdog."""
    bridge = _STATE.get("bridge")
    if bridge is not None:
        bridge.close()


# --------------------------------------------------------------------------------------------
# collectives for the trainer
# --------------------------------------------------------------------------------------------
_LIMB_BITS = 12  # integers travel as 12-bit limbs in float32: their sums stay exact up to 4096 ranks


def all_reduce_sum(array):
    """Element-wise sum of ``array`` over all ranks, as numpy (a copy when not distributed).

    MindSpore's CPU AllReduce only takes float32, so: integer and bool arrays, and the
    integer-valued entries of float64 arrays (counts such as correct / total), are summed
    exactly (as 12-bit limbs); other float64 entries are sent as a float32 pair (value and
    remainder), about 1e-7 relative; float32 / float16 arrays are summed in float32.
    """
    arr = np.asarray(array)
    info = _STATE["info"]
    if not info.is_distributed:
        return arr.copy()
    if arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.integer):
        limbs = 6 if arr.dtype.itemsize >= 8 else 3  # depends on the dtype only: same on every rank
        total = _from_limbs(_all_reduce_f32(_to_limbs(arr.astype(np.int64), limbs)))
        return total if arr.dtype == np.bool_ else total.astype(arr.dtype)
    if arr.dtype == np.float64:
        return _all_reduce_f64(arr)
    out = _all_reduce_f32(arr.astype(np.float32))
    return out.astype(arr.dtype if arr.dtype != np.float16 else np.float32)


def _all_reduce_f32(arr):
    import mindspore as ms  # pylint: disable=import-outside-toplevel
    from mindspore import ops  # pylint: disable=import-outside-toplevel
    if "all_reduce" not in _STATE:
        _STATE["all_reduce"] = ops.AllReduce(ops.ReduceOp.SUM)
    flat = arr.reshape(-1) if arr.size else np.zeros(1, np.float32)
    out = _STATE["all_reduce"](ms.Tensor(flat)).asnumpy()
    return out[:arr.size].reshape(arr.shape)


def _to_limbs(values, n_limbs):
    """int64 array -> float32 array of shape (n_limbs, *shape); each limb carries the value's sign."""
    sign = np.where(values < 0, -1, 1).astype(np.int64)
    magnitude = np.abs(values)
    mask = (1 << _LIMB_BITS) - 1
    return np.stack([sign * ((magnitude >> (_LIMB_BITS * k)) & mask) for k in range(n_limbs)]).astype(np.float32)


def _from_limbs(limb_sums):
    sums = np.rint(limb_sums).astype(np.int64)
    total = np.zeros(sums.shape[1:], np.int64)
    for k in range(sums.shape[0] - 1, -1, -1):
        total = (total << _LIMB_BITS) + sums[k]
    return total


def _all_reduce_f64(arr):
    with np.errstate(invalid="ignore"):
        is_int = np.isfinite(arr) & (np.floor(arr) == arr) & (np.abs(arr) < 2.0 ** 62)
    ints = np.where(is_int, arr, 0.0).astype(np.int64)
    frac = np.where(is_int, 0.0, arr)
    hi = frac.astype(np.float32)
    lo = (frac - hi.astype(np.float64)).astype(np.float32)
    limbs = _to_limbs(ints, 6)
    n = arr.size
    summed = _all_reduce_f32(np.concatenate([limbs.reshape(-1), hi.reshape(-1), lo.reshape(-1)]))
    int_total = _from_limbs(summed[:6 * n].reshape((6,) + arr.shape))
    hi_total = summed[6 * n:7 * n].reshape(arr.shape).astype(np.float64)
    lo_total = summed[7 * n:].reshape(arr.shape).astype(np.float64)
    return int_total.astype(np.float64) + hi_total + lo_total


def barrier():
    """Wait until every rank gets here (no-op when not distributed)."""
    if _STATE["info"].is_distributed:
        _all_reduce_f32(np.zeros(1, np.float32))


def _check_root(root):
    world = _STATE["info"].world_size
    if not isinstance(root, (int, np.integer)) or not 0 <= int(root) < world:
        raise ValueError(f"root must be a rank between 0 and {world - 1}: {root!r}")
    return int(root)


def _broadcast_uint8(raw, root):
    """Rank ``root``'s bytes (a uint8 array; every rank passes one of the same size) on every rank.

    Each byte travels as a float32 value 0..255 summed with zeros from the other ranks: exact.
    """
    sent = raw.astype(np.float32) if _STATE["info"].rank == root else np.zeros(raw.size, np.float32)
    return np.rint(_all_reduce_f32(sent)).astype(np.uint8)


# float32 values that "x + 0 + ... + 0" may not give back bit for bit: -0.0 (becomes +0.0), NaN
# (payload) and subnormals (flushed to zero by kernels that run with FTZ/DAZ)
def _float32_specials(flat):
    tiny = np.finfo(np.float32).tiny
    with np.errstate(invalid="ignore"):
        return np.flatnonzero(np.isnan(flat) | ((np.abs(flat) < tiny) & (np.signbit(flat) | (flat != 0))))


def _broadcast_exact(arr, root):
    """Rank ``root``'s ``arr`` on every rank, bit for bit (every rank passes the same shape and dtype).

    float32 travels as values (one float32 each) with the few values a sum could alter (-0.0,
    NaN, subnormals) sent again as raw bits; any other dtype travels as its raw bytes.
    """
    arr = np.ascontiguousarray(arr)
    flat = arr.reshape(-1)
    mine = _STATE["info"].rank == root
    if arr.dtype != np.float32:
        raw = flat.view(np.uint8) if flat.size else np.zeros(0, np.uint8)
        return _broadcast_uint8(raw, root).view(arr.dtype).reshape(arr.shape)
    out = np.array(_all_reduce_f32(flat if mine else np.zeros_like(flat)), np.float32, copy=True).reshape(-1)
    special = _float32_specials(flat) if mine else np.zeros(0, np.int64)
    count = int(all_reduce_sum(np.array([special.size if mine else 0], np.int64))[0])
    if count:
        index = all_reduce_sum(special.astype(np.int64) if mine else np.zeros(count, np.int64))
        raw = flat[special].view(np.uint8) if mine else np.zeros(4 * count, np.uint8)
        out[index] = _broadcast_uint8(raw, root).view(np.float32)
    return out.reshape(arr.shape)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def broadcast_object(obj, root=0):
    """Rank ``root``'s ``obj`` on every rank (returns it; no-op returning ``obj`` when not distributed).

    ``obj`` is JSON data: dict / list / str / int / float / bool / None (numpy scalars and arrays
    become numbers and lists; tuples become lists, dict keys strings), on every rank alike.
    Travels as its length, then its UTF-8 bytes, through the exact all-reduce (zeros on the
    other ranks); no pickle. Every rank must call it; what the other ranks pass is ignored.
    """
    info = _STATE["info"]
    if not info.is_distributed:
        return obj
    root = _check_root(root)
    payload, error = b"", None
    if info.rank == root:
        try:
            payload = json.dumps(obj, default=_json_default, allow_nan=True, separators=(",", ":")).encode("utf-8")
        except (TypeError, ValueError) as exc:
            error = exc
    length = (len(payload) if error is None else -1) if info.rank == root else 0
    length = int(all_reduce_sum(np.array([length], np.int64))[0])
    if length < 0:  # every rank raises: none is left waiting in a collective
        raise TypeError(f"broadcast_object: rank {root} cannot send its object as JSON"
                        + (f": {error}" if error is not None else ""))
    raw = np.frombuffer(payload, np.uint8) if info.rank == root else np.zeros(length, np.uint8)
    return json.loads(_broadcast_uint8(raw, root).tobytes().decode("utf-8"))


def _check_same_parameters(params, values, root):
    """Every rank must hold the same parameter names, shapes and dtypes as ``root``; otherwise
    every rank raises (naming the ranks that differ) instead of mixing unrelated tensors."""
    info = _STATE["info"]
    mine = [[p.name, list(v.shape), v.dtype.str] for p, v in zip(params, values)]
    theirs = broadcast_object(mine, root)
    problem = None
    if len(theirs) != len(mine):
        problem = f"{len(mine)} parameters here, {len(theirs)} on rank {root}"
    else:
        for a, b in zip(mine, theirs):
            if a != b:
                problem = (f"parameter {a[0]} {tuple(a[1])} {np.dtype(a[2]).name} here, "
                           f"{b[0]} {tuple(b[1])} {np.dtype(b[2]).name} on rank {root}")
                break
    flags = np.zeros(info.world_size, np.int32)
    flags[info.rank] = problem is not None
    flags = all_reduce_sum(flags)
    if flags.any():
        ranks = ", ".join(str(r) for r in np.flatnonzero(flags))
        raise DistributedError(f"the model differs between ranks: rank(s) {ranks} hold other parameters than "
                               f"rank {root}" + (f" ({problem})" if problem else "") + ". Start every rank "
                               "with the same --model, config and command-line options")


def broadcast_parameters(net, root=0):
    """Copy rank ``root``'s parameter values into every rank's ``net``, bit for bit, whatever the
    dtype (float32 weights and moments, int32 step counters, float16, float64, bool ...).

    Every rank must pass a cell with the same parameters (names, shapes, dtypes); a rank whose
    cell differs makes every rank raise ``DistributedError``. No-op when not distributed.
    """
    info = _STATE["info"]
    if not info.is_distributed:
        return
    import mindspore as ms  # pylint: disable=import-outside-toplevel
    root = _check_root(root)
    params = list(net.get_parameters())
    values = [p.asnumpy() for p in params]
    _check_same_parameters(params, values, root)
    groups = {}
    for param, value in zip(params, values):
        groups.setdefault(value.dtype.str, []).append((param, value))
    for key in sorted(groups):  # the same order on every rank
        items = groups[key]
        flat = np.concatenate([v.reshape(-1) for _, v in items])
        received = _broadcast_exact(flat, root)
        offset = 0
        for param, value in items:
            chunk = received[offset:offset + value.size].reshape(value.shape)
            offset += value.size
            param.set_data(ms.Tensor(chunk))


def average_batch_norm_statistics(net):
    """Replace every rank's BatchNorm moving statistics by their mean over all ranks.

    In data-parallel training each rank's BatchNorm keeps statistics of its own shard, so the ranks
    hold slightly different models for evaluation. Averaging them at the end of every epoch (before
    validation and checkpointing) makes every rank evaluate the one model that rank 0 saves: the
    distributed validation figures then equal validate.py on that checkpoint. Training itself uses
    batch statistics and is unaffected. No-op when not distributed.
    """
    info = _STATE["info"]
    if not info.is_distributed:
        return 0
    import mindspore as ms  # pylint: disable=import-outside-toplevel
    from mindspore import ops  # pylint: disable=import-outside-toplevel
    stats = [p for p in net.get_parameters() if p.name.endswith(("moving_mean", "moving_variance"))]
    if not stats:
        return 0
    values = [p.asnumpy().astype(np.float32).reshape(-1) for p in stats]
    mean = all_reduce_sum(np.concatenate(values)) / np.float32(info.world_size)
    offset = 0
    for param, value in zip(stats, values):
        chunk = mean[offset:offset + value.size].reshape(param.shape).astype(ms.dtype_to_nptype(param.dtype))
        offset += value.size
        ops.assign(param, ms.Tensor(chunk))  # not set_data: a compiled graph keeps using the old storage
    return len(stats)


def parameters_divergence(net):
    """Largest |value - mean over ranks| of any parameter on any rank (0.0 means identical)."""
    info = _STATE["info"]
    if not info.is_distributed:
        return 0.0
    values = [p.asnumpy().astype(np.float32).reshape(-1) for p in net.get_parameters()]
    if not values:
        return 0.0
    flat = np.concatenate(values)
    mean = all_reduce_sum(flat) / info.world_size
    local = np.array([float(np.max(np.abs(flat - mean)))], np.float32)
    return float(all_reduce_sum(local)[0])
