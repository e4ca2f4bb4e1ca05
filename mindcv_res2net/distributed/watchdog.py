"""The mpirun watchdog: one TCP connection from every rank to rank 0 (a star), and the ABORT protocol.

Under mpirun every rank keeps one connection to rank 0 (TCP keep-alive, a per-job token; rank
0 listens only on the scheduler's candidate addresses, 127.0.0.1 for a one-host job). When a
rank dies (killed, crashed), fails with an exception, or its host becomes unreachable, rank 0
prints ``rank N died`` / ``rank N failed`` / ``rank N is unreachable`` and every rank exits
with status 1 at once (about 1 s; about 40 s for a vanished host) instead of waiting in a
collective.

One line per message on a connection:

* rank N -> rank 0: ``HELLO <rank> <token>`` (once; ``PROBE`` on the other addresses tried),
  ``FAIL <reason>`` (an uncaught exception on rank N), ``BYE`` (normal end).
* rank 0 -> rank N: ``ABORT <failed rank or -> <what failed>`` (exit with status 1), ``BYE``.

A connection that closes without ``BYE`` means the process on the other side died.

The normal end of a run (``end_process(0)``, which every entry script reaches through
``run_main``) is a barrier: rank N says ``BYE`` and waits for rank 0's ``BYE``; rank 0 waits
for every rank's ``BYE``, answers, stops the scheduler and every rank leaves with ``os._exit``
after flushing its output. MindSpore's own clean-up at interpreter exit is skipped: in
MindSpore 2.8 it stops the CPU collective node's TCP threads racily, and a rank whose work was
complete could end with a segmentation fault (status 139) instead of 0. Under msrun (MindSpore's
own scheduler, which waits for every worker to unregister) the normal exit is kept.
"""
import logging
import os
import select
import socket
import sys
import threading
import time
import uuid

from .state import STATE, WATCHDOG_EXIT_CODE, DistributedError, say


def _send(sock, data):
    """Send ``data`` on ``sock``; a peer already gone is not an error here."""
    try:
        sock.sendall(data)
        return True
    except OSError:
        return False


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


class Watchdog:
    """The star of watchdog connections around rank 0, seen from one rank.

    Rank 0 may supervise a child process (MindSpore's scheduler): a subclass overrides
    ``_scheduler_failure``, ``_kill_scheduler`` and ``_release_scheduler``; here there is none.
    """

    def __init__(self, rank, size):
        self.rank, self.size = rank, size
        self.token = uuid.uuid4().hex if rank == 0 else None
        self.ports = []          # rank 0: watchdog port for each candidate address
        self.listeners = []      # rank 0: the listening sockets (closed once every peer is in)
        self.bound = []          # rank 0: (address, port) each listener is bound to
        self.peers = {}          # rank 0: peer rank -> socket
        self.peer_bye = set()    # rank 0: ranks that ended normally
        self.upstream = None     # rank > 0: socket to rank 0
        self.closing = False
        self.self_failed = False
        self.released = threading.Event()  # rank > 0: rank 0 said BYE
        self.lock = threading.Lock()
        self.thread = None

    # ---- rank 0's child process: none here ----
    def _scheduler_failure(self):
        """Why rank 0's child process ended, or None while it runs (or when there is none)."""
        return None

    def _kill_scheduler(self):
        """Stop rank 0's child process at once (the job is aborted)."""

    def _release_scheduler(self):
        """Tell rank 0's child process that rank 0 ended normally."""

    def _stop_scheduler(self):
        """Tell rank 0's child process that every rank ended normally: stop now."""

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
                say(f"rank 0: {host} ({bind}) is not an address of this host ({exc.strerror}); "
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
        """Rank 0: take every other rank's HELLO (with this job's token) within ``timeout`` s."""
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

    # ---- watching ----
    def start_watchdog(self):
        target = self._watch_peers if self.rank == 0 else self._watch_rank0
        self.thread = threading.Thread(target=target, name="mindcv-dist-watchdog", daemon=True)
        self.thread.start()

    def _broadcast_abort(self, failed, what):
        """Rank 0: send ``ABORT <failed> <what>`` to every other rank and stop the scheduler child."""
        message = f"ABORT {failed} {what}\n".encode(errors="replace")
        for sock in self.peers.values():
            _send(sock, message)
        self._kill_scheduler()

    def _abort(self, failed, what):
        """Rank 0: tell every other rank, then exit at once. ``what`` names the failed party."""
        with self.lock:
            if self.closing:
                return
            self.closing = True
        say(f"rank 0: {what}; aborting all {self.size} ranks")
        self._broadcast_abort(failed, what)
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
            failure = self._scheduler_failure()
            if failure is not None and not self.closing:
                self._abort("-", failure)
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
                    say(f"rank {self.rank}: lost the connection to rank 0: rank 0 {_lost_reason(error)}; "
                        "aborting")
                    os._exit(WATCHDOG_EXIT_CODE)
                return
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                text = line.decode(errors="replace")
                if text.startswith("BYE"):
                    self.released.set()
                    return
                if text.startswith("ABORT"):
                    parts = text.split(" ", 2)
                    failed = parts[1] if len(parts) > 1 else "-"
                    what = parts[2] if len(parts) > 2 else "a rank failed"
                    if self.self_failed and failed == str(self.rank):
                        return
                    say(f"rank {self.rank}: {what}; aborting (reported by rank 0)")
                    os._exit(WATCHDOG_EXIT_CODE)

    # ---- this rank's own end ----
    def install_excepthook(self):
        """An uncaught exception on this rank is reported to rank 0 (which aborts the job)."""
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
            self._broadcast_abort(0, f"rank 0 failed: {reason}")
        elif self.upstream is not None:
            _send(self.upstream, f"FAIL {reason}\n".encode(errors="replace"))

    def close(self):
        """Normal end: say BYE to the other side(s) and let the scheduler wind down."""
        with self.lock:
            if self.closing:
                return
            self.closing = True
        if self.rank == 0:
            self._bye_to_peers()
            self._release_scheduler()
        elif self.upstream is not None:
            if _send(self.upstream, b"BYE\n"):
                self.upstream.close()

    def _bye_to_peers(self):
        """Rank 0: BYE on every peer connection, then close them and the listeners."""
        for sock in self.peers.values():
            if _send(sock, b"BYE\n"):
                sock.close()
        self._close_listeners()

    def finish(self):
        """Normal end of this rank, once its work is complete: return when every rank has ended
        normally (a rank that dies or fails meanwhile aborts the job as before)."""
        if self.rank == 0:
            self._wait_for_peers()
            with self.lock:
                if self.closing:
                    return
                self.closing = True
            self._bye_to_peers()
            self._stop_scheduler()
        elif self.upstream is not None:
            _send(self.upstream, b"BYE\n")
            while not self.released.wait(1.0):
                if self.thread is None or not self.thread.is_alive():
                    break
            with self.lock:
                self.closing = True
            self.upstream.close()

    def _wait_for_peers(self):
        """Rank 0: until every other rank has said BYE (the watchdog thread collects them)."""
        start, told = time.monotonic(), False
        while not set(range(1, self.size)) <= self.peer_bye:
            if self.thread is None or not self.thread.is_alive():
                return
            if not told and time.monotonic() - start > 60:
                missing = sorted(set(range(1, self.size)) - self.peer_bye)
                say(f"rank 0: finished; waiting for rank(s) {', '.join(map(str, missing))} to finish")
                told = True
            time.sleep(0.05)


def end_process(code=0):
    """End this process with exit status ``code``; never returns.

    Under mpirun, a normal end (``code`` 0) waits for every rank to end (``Watchdog.finish``),
    flushes the logs and output, and leaves with ``os._exit(0)`` (see the module docstring for
    why); a failed rank (any other status) says BYE, flushes and leaves with ``os._exit(code)``,
    without MindSpore's teardown and its log lines. Any other launcher: ``sys.exit(code)``.
    """
    bridge = STATE.get("bridge")
    if bridge is None:
        sys.exit(code)
    if code:  # a failed rank: mpirun ends the job; MindSpore's teardown would only add its log lines
        shutdown()
    else:
        bridge.finish()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def shutdown():
    """Normal end of a distributed run (also registered with atexit): stop the watchdog."""
    bridge = STATE.get("bridge")
    if bridge is not None:
        bridge.close()
