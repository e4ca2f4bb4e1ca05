"""The supervisor of MindSpore's scheduler, started by rank 0 under mpirun.

    python -m mindcv_res2net.distributed.cluster_scheduler --parent PID [--grace SECONDS]

Rank 0 starts it with its stdin a pipe from rank 0, its output going to the scheduler log, and
the dynamic-cluster variables set (``MS_SCHED_HOST``, ``MS_SCHED_PORT``, ``MS_WORKER_NUM``).
It forks the real scheduler (``MS_ROLE=MS_SCHED``, ``mindspore.communication.init()``) and
watches both sides:

* rank 0 dies (the pipe reaches end of file, or this process is re-parented away from
  ``--parent``): the scheduler is killed at once, exit status 1;
* every rank ended normally (rank 0 writes ``END`` after the end-of-run barrier, see
  ``watchdog.end_process``): the scheduler is stopped at once, exit status 0;
* rank 0 ends normally without that barrier (it writes ``BYE``): the scheduler gets ``--grace``
  seconds (default ``$MINDCV_RES2NET_SCHED_GRACE``, else 60) to let the other ranks unregister,
  then is stopped (exit status 0);
* the scheduler exits by itself: exit status 0 when it ended with 0, else 1.

The scheduler child also asks the kernel to kill it if the supervisor dies (PR_SET_PDEATHSIG).
Each event is one ``supervisor: ...`` line on stdout (the scheduler log).
"""
import argparse
import ctypes
import os
import select
import signal
import sys
import time

GRACE_ENV = "MINDCV_RES2NET_SCHED_GRACE"
DEFAULT_GRACE_S = 60.0
REQUIRED_ENV = ("MS_SCHED_HOST", "MS_SCHED_PORT", "MS_WORKER_NUM")
_PR_SET_PDEATHSIG = 1


def _seconds(text):
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also NaN
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0 (--grace or {GRACE_ENV}): {text!r}")
    return value


def _pid(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a process id (a positive integer): {text!r}")
    return value


def build_parser(environ=None):
    env = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        prog="python -m mindcv_res2net.distributed.cluster_scheduler",
        description="Run MindSpore's scheduler for an mpirun job and stop it when rank 0 ends: at once "
                    "if rank 0 dies (stdin closed), after a grace period if rank 0 writes BYE on stdin. "
                    f"Needs {', '.join(REQUIRED_ENV)} in the environment.")
    parser.add_argument("--parent", type=_pid, required=True, metavar="PID",
                        help="process id of rank 0: when this process is re-parented away from it, "
                             "rank 0 is gone")
    parser.add_argument("--grace", type=_seconds, default=env.get(GRACE_ENV) or str(DEFAULT_GRACE_S),
                        metavar="SECONDS",
                        help="seconds the scheduler may run on after rank 0 ended normally, for the other "
                             f"ranks to unregister (default: ${GRACE_ENV}, else {DEFAULT_GRACE_S:g})")
    return parser


def parse_args(argv=None, environ=None):
    """The supervisor's arguments; exits with status 2 (argparse) on a bad one or a missing variable."""
    env = os.environ if environ is None else environ
    parser = build_parser(env)
    args = parser.parse_args(argv)
    missing = [key for key in REQUIRED_ENV if not env.get(key)]
    if missing:
        parser.error(f"environment variable(s) {', '.join(missing)} unset: rank 0 sets them when it "
                     "starts the scheduler under mpirun")
    return args


def run_scheduler():
    """In the forked child: become MindSpore's scheduler and serve until the cluster ends."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except Exception:  # pylint: disable=broad-except
        pass
    if os.getppid() == 1:  # the supervisor died before prctl took effect
        os._exit(1)
    os.environ["MS_ROLE"] = "MS_SCHED"
    os.environ.pop("MS_NODE_ID", None)
    import mindspore as ms  # pylint: disable=import-outside-toplevel
    ms.set_device("CPU")
    from mindspore.communication import init  # pylint: disable=import-outside-toplevel
    init()
    os._exit(0)


def _stop(pid, code, why):
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        os.waitpid(pid, 0)
    except OSError:
        pass
    sys.stdout.write(f"supervisor: {why}\n")
    sys.stdout.flush()
    os._exit(code)


def supervise(pid, parent, grace, stdin_fd=0):
    """Watch the scheduler ``pid`` and rank 0 (process ``parent``, pipe ``stdin_fd``); never returns."""
    bye, deadline = False, None
    signal.signal(signal.SIGTERM, lambda *_: _stop(pid, 143, "SIGTERM"))
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            sys.stdout.write(f"supervisor: scheduler exited with {code}\n")
            sys.stdout.flush()
            os._exit(0 if code == 0 else 1)
        if bye:
            if time.monotonic() > deadline:
                _stop(pid, 0, "grace period over after rank 0 ended; scheduler stopped")
            time.sleep(0.2)
            continue
        ready = select.select([stdin_fd], [], [], 0.5)[0]
        if ready:
            data = os.read(stdin_fd, 64)
            if b"END" in data:
                _stop(pid, 0, "every rank finished; scheduler stopped")
            if b"BYE" in data:
                bye, deadline = True, time.monotonic() + grace
            elif not data:
                _stop(pid, 1, "rank 0 died (pipe closed); scheduler killed")
        if os.getppid() != parent:
            _stop(pid, 1, "rank 0 died (re-parented); scheduler killed")


def main(argv=None):
    args = parse_args(argv)
    pid = os.fork()
    if pid == 0:
        run_scheduler()
    supervise(pid, args.parent, args.grace)


if __name__ == "__main__":
    main()
