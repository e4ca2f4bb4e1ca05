"""The mpirun -> MindSpore cluster bridge (mpi4py), used by ``init_distributed`` under OpenMPI.

MindSpore cannot join an OpenMPI job by itself (``mpirun -n N python train.py ...``;
``OMPI_COMM_WORLD_*`` set), so ``init_mpirun`` bridges it with mpi4py: the ranks agree on an
address for MindSpore's scheduler (``127.0.0.1`` when every rank shares one host and network
namespace, otherwise an address of rank 0's host that every rank can reach, e.g. with
``mpirun --hostfile``), rank 0 starts the scheduler as a child process and waits until that
very process (not just anything on the port) listens, every rank sets the dynamic-cluster
variables (``MS_ROLE=MS_WORKER``, ``MS_NODE_ID=<rank>``, ``MS_WORKER_NUM``, ``MS_SCHED_HOST``,
``MS_SCHED_PORT``, and ``MS_WORKER_IP``: its own address on the route to the scheduler) and
calls ``mindspore.communication.init()``. MPI is used only during this set-up and is finalized
afterwards; collectives run over MindSpore (mccl / nccl / hccl). Every rank also joins the
watchdog (``watchdog.py``).

A rank that never reaches ``init_distributed`` makes the others exit after
``MINDCV_RES2NET_INIT_TIMEOUT`` (faulthandler's time-out dump, ending in
``_wait_for_every_rank_to_call_init_distributed``).

The scheduler child is ``python -m mindcv_res2net.distributed.cluster_scheduler`` (a supervisor, see
``scheduler.py``). It writes its log to ``$MINDCV_RES2NET_DIST_LOG_DIR`` (default: a new private
directory, mode 0700, ``<tempdir>/mindcv_res2net_dist_XXXXXXXX``), file
``scheduler_<host>_<port>_<random>.log`` (created exclusively, mode 0600, never through a
symlink); rank 0 prints the path once.
"""
import atexit
import faulthandler
import importlib
import os
import site
import socket
import subprocess
import sys
import tempfile
import time

from ..errors import UserError
from .device import current_device_target, ms_init, set_device
from .state import STATE, DistInfo, DistributedError, StartupRefused, apply_env_defaults, env_float, say
from .watchdog import Watchdog, shutdown

# run with -m, not imported here: importing it before runpy runs it would make Python warn
SCHEDULER_MODULE = f"{__package__}.cluster_scheduler"


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


# -- start-up errors: every rank's message, compared before the cluster is joined ------------------

def _gather_startup_errors(comm, message, timeout):
    """Every rank's start-up error message (None where a rank had none), in rank order.

    A rank that refused its configuration and a rank about to join the cluster meet here, so a
    mistake that every rank makes is reported once, by rank 0, before any rank waits for the
    cluster. Bounded: a rank that never comes is reported instead of waited for.
    """
    _sleepy_barrier(comm, timeout, "the start-up check")
    messages = comm.allgather(message)
    STATE["startup_agreed"] = True
    return messages


def format_startup_errors(messages):
    """One message for every rank's start-up errors: the message itself when every rank gave the
    same one; otherwise one line per distinct message, naming its ranks."""
    groups = {}
    for rank, message in enumerate(messages):
        if message is not None:
            groups.setdefault(message, []).append(rank)
    if len(groups) == 1 and len(next(iter(groups.values()))) == len(messages):
        return next(iter(groups))
    lines = []
    for message, ranks in groups.items():
        label = "rank" if len(ranks) == 1 else "ranks"
        lines.append(f"{label} {', '.join(map(str, ranks))} of {len(messages)}: {message}")
    return "\n".join(lines)


def report_startup_error(message):
    """Called by a rank of an mpirun job that refused its start-up before joining the cluster:
    meet the other ranks (which are joining, or refusing too) and return what this rank prints,
    every rank's messages on rank 0 and None on the others. Outside mpirun, or once the ranks have
    met, the message itself."""
    size = int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1") or 1)
    if size <= 1 or STATE["startup_agreed"] or STATE["initialized"]:
        return message
    timeout = env_float("MINDCV_RES2NET_INIT_TIMEOUT", 90)
    try:
        MPI = _import_mpi(timeout)
        comm = MPI.COMM_WORLD
        messages = _gather_startup_errors(comm, message, timeout)
        rank = comm.Get_rank()
        if not MPI.Is_finalized():
            MPI.Finalize()
    except (UserError, ImportError):
        return message
    return format_startup_errors(messages) if rank == 0 else None


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


def init_mpirun(target, log_dir):
    """Join the OpenMPI job this process belongs to as a MindSpore worker; return its ``DistInfo``."""
    # Import MindSpore before registering our atexit hook: atexit runs last-in first-out, so our
    # shutdown (BYE to the peers and the scheduler) then runs before MindSpore's own finalization.
    importlib.import_module("mindspore")
    timeout = env_float("MINDCV_RES2NET_INIT_TIMEOUT", 90)
    t_start = time.monotonic()
    MPI = _import_mpi(timeout)
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    local_rank = int(os.environ.get("OMPI_COMM_WORLD_LOCAL_RANK", "0"))
    messages = _gather_startup_errors(comm, None, timeout)
    if any(m is not None for m in messages):  # another rank refused its start-up: end quietly
        MPI.Finalize()
        raise StartupRefused(format_startup_errors(messages) if rank == 0 else None)

    bridge, sched_host = _agree_on_scheduler_host(comm, rank, size, timeout)
    port = _start_cluster_scheduler(comm, bridge, rank, size, sched_host, log_dir, timeout)
    _hand_over_to_mindspore(MPI, comm, bridge, rank, size, sched_host, port, timeout)
    _join_mindspore_cluster(bridge, target, local_rank, rank, size)
    if rank == 0:
        watchdog = ", ".join(f"{addr}:{wport}" for addr, wport in bridge.bound)
        say(f"rank 0: {size} ranks joined in {time.monotonic() - t_start:.1f} s "
            f"(scheduler {sched_host}:{port}, watchdog {watchdog}, log {bridge.sched_log})")
    return DistInfo(rank=rank, world_size=size, local_rank=local_rank, is_distributed=True,
                    launcher="mpirun", device_target=target or current_device_target())


def _agree_on_scheduler_host(comm, rank, size, timeout):
    """Phase 1: find an address of rank 0 that every rank reaches; returns (bridge, that address)."""
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
    return bridge, sched_host


def _start_cluster_scheduler(comm, bridge, rank, size, sched_host, log_dir, timeout):
    """Phase 2: rank 0 starts MindSpore's scheduler; returns its port, which every rank learns."""
    apply_env_defaults()
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
    return status[1]


def _hand_over_to_mindspore(mpi, comm, bridge, rank, size, sched_host, port, timeout):
    """Phase 3: set the dynamic-cluster variables, finalize MPI and start the watchdog."""
    os.environ.update(MS_ROLE="MS_WORKER", MS_NODE_ID=str(rank), MS_WORKER_NUM=str(size),
                      MS_SCHED_HOST=sched_host, MS_SCHED_PORT=str(port))
    if not sched_host.startswith("127.") and sched_host != "localhost" and not os.environ.get("MS_WORKER_IP"):
        source = _route_source_ip(sched_host)
        if source:
            os.environ["MS_WORKER_IP"] = source
    _sleepy_barrier(comm, timeout, "MindSpore init")
    if not mpi.Is_finalized():
        mpi.Finalize()
    bridge.start_watchdog()
    STATE["bridge"] = bridge
    atexit.register(shutdown)


def _join_mindspore_cluster(bridge, target, local_rank, rank, size):
    """Phase 4: MindSpore's own init, checked to give every rank the rank MPI gave it."""
    if target is not None:
        set_device(target, local_rank if target != "CPU" else None)
    ms_init()
    bridge.install_excepthook()
    from mindspore.communication import get_rank, get_group_size  # pylint: disable=import-outside-toplevel
    ms_rank, ms_world = get_rank(), get_group_size()
    if ms_rank != rank or ms_world != size:
        raise DistributedError(f"MindSpore assigned rank {ms_rank}/{ms_world} to MPI rank {rank}/{size}; "
                               "a stale MS_* variable in the environment may be the cause (unset "
                               "MS_NODE_ID / MS_WORKER_NUM)")


def _package_root():
    """The directory that holds the ``mindcv_res2net`` package."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _with_package_on_path(env):
    """``env`` with the directory holding this package first on PYTHONPATH, so that ``python -m``
    finds the same package as rank 0 from any working directory; unchanged when the package is
    installed in site-packages (or already on PYTHONPATH)."""
    root = os.path.realpath(_package_root())
    site_dirs = list(getattr(site, "getsitepackages", list)()) + [site.getusersitepackages()]
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if any(os.path.realpath(p) == root for p in paths + site_dirs):
        return env
    return dict(env, PYTHONPATH=os.pathsep.join([root] + paths))


class _MpiBridge(Watchdog):
    """The watchdog, plus rank 0's scheduler child (the supervisor of MindSpore's scheduler)."""

    def __init__(self, rank, size):
        super().__init__(rank, size)
        self.sched_proc = None
        self.sched_log = None

    def start_scheduler(self, host, port, size, log_dir, timeout):
        """Rank 0: start the scheduler child on ``host:port`` for ``size`` workers and wait until
        it listens there (``DistributedError`` if it exits or does not listen within ``timeout`` s)."""
        log, self.sched_log = _open_scheduler_log(log_dir, port)
        # the scheduler is not an MPI process: without OpenMPI's variables MindSpore does not
        # mix its dynamic cluster with OpenMPI settings
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("OMPI_", "PMIX_", "OPAL_", "ORTE_")) and k not in ("MS_NODE_ID", "MS_WORKER_IP")}
        env.update(MS_ROLE="MS_SCHED", MS_WORKER_NUM=str(size), MS_SCHED_HOST=host, MS_SCHED_PORT=str(port))
        env.setdefault("GLOG_v", "2")
        with log:
            self.sched_proc = subprocess.Popen(  # pylint: disable=consider-using-with
                [sys.executable, "-m", SCHEDULER_MODULE, "--parent", str(os.getpid())], stdin=subprocess.PIPE,
                stdout=log, stderr=subprocess.STDOUT, env=_with_package_on_path(env), close_fds=True)
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

    def _tell_scheduler(self, word):
        """Write ``word`` to the supervisor's stdin, then close it (rank 0's last word to it)."""
        proc = self.sched_proc
        if proc is not None and proc.stdin is not None:
            try:
                proc.stdin.write(word + b"\n")
                proc.stdin.flush()
                proc.stdin.close()
            except OSError:
                pass

    def _release_scheduler(self):
        self._tell_scheduler(b"BYE")

    def _stop_scheduler(self):
        self._tell_scheduler(b"END")

    def _scheduler_failure(self):
        proc = self.sched_proc
        if proc is None or proc.poll() is None:
            return None
        return f"the MindSpore scheduler (child of rank 0) exited with {proc.returncode} (log {self.sched_log})"
