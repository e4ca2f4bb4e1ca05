"""The scheduler supervisor (``python -m mindcv_res2net.distributed.cluster_scheduler``): its arguments,
its ``-m`` entry point, and how it ends the process it supervises. No MindSpore scheduler is
started here (a ``sleep`` stands in for it); the mpirun tests in test_distributed.py run the
real one.
"""
import os
import subprocess
import sys
import time

import pytest

from mindcv_res2net.distributed import mpi_bridge
from mindcv_res2net.distributed import cluster_scheduler as scheduler

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLUSTER_ENV = {"MS_SCHED_HOST": "127.0.0.1", "MS_SCHED_PORT": "40123", "MS_WORKER_NUM": "2"}


def test_arguments_and_their_environment_defaults():
    args = scheduler.parse_args(["--parent", "123"], environ=CLUSTER_ENV)
    assert (args.parent, args.grace) == (123, 60.0)
    args = scheduler.parse_args(["--parent", "7"], environ=dict(CLUSTER_ENV, MINDCV_RES2NET_SCHED_GRACE="5"))
    assert args.grace == 5.0
    args = scheduler.parse_args(["--parent", "7", "--grace", "0.5"],
                                environ=dict(CLUSTER_ENV, MINDCV_RES2NET_SCHED_GRACE="5"))
    assert args.grace == 0.5


@pytest.mark.parametrize("argv, environ, expected", [
    (["--parent", "7"], dict(CLUSTER_ENV, MINDCV_RES2NET_SCHED_GRACE="soon"), "MINDCV_RES2NET_SCHED_GRACE"),
    (["--parent", "7", "--grace", "-1"], CLUSTER_ENV, "seconds >= 0"),
    (["--parent", "0"], CLUSTER_ENV, "process id"),
    ([], CLUSTER_ENV, "--parent"),
    (["--parent", "7"], {"MS_SCHED_HOST": "127.0.0.1"}, "MS_SCHED_PORT, MS_WORKER_NUM unset"),
])
def test_bad_arguments_exit_2_with_a_reason(argv, environ, expected, capsys):
    with pytest.raises(SystemExit) as exc:
        scheduler.parse_args(argv, environ=environ)
    assert exc.value.code == 2
    assert expected in capsys.readouterr().err


def test_rank0_starts_this_module():
    assert mpi_bridge.SCHEDULER_MODULE == scheduler.__name__
    env = mpi_bridge._with_package_on_path({"PYTHONPATH": "/elsewhere"})  # pylint: disable=protected-access
    assert env["PYTHONPATH"].split(os.pathsep)[0] == os.path.realpath(ROOT)
    assert mpi_bridge._with_package_on_path(env) == env  # pylint: disable=protected-access


def test_help_runs_as_a_module():
    env = dict(os.environ, PYTHONPATH=ROOT, PYTHONWARNINGS="default")
    proc = subprocess.run([sys.executable, "-m", scheduler.__name__, "--help"], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "usage: python -m mindcv_res2net.distributed.cluster_scheduler" in proc.stdout and "--grace" in proc.stdout
    assert "Warning" not in proc.stderr, proc.stderr  # e.g. runpy's "found in sys.modules"


_DRIVER = ("import os, subprocess, sys\n"
           "from mindcv_res2net.distributed import cluster_scheduler as scheduler\n"
           "child = subprocess.Popen(sys.argv[2:])\n"
           "scheduler.supervise(child.pid, os.getppid(), float(sys.argv[1]))\n")


def _supervise(command, grace, stdin_data=None, close_stdin=False):
    """Run ``supervise`` over ``command`` in a child interpreter; returns (status, output, seconds)."""
    start = time.monotonic()
    proc = subprocess.Popen(  # pylint: disable=consider-using-with
        [sys.executable, "-c", _DRIVER, str(grace)] + command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
    try:
        if stdin_data:
            time.sleep(0.5)
            proc.stdin.write(stdin_data)
            proc.stdin.flush()
        if close_stdin:
            proc.stdin.close()
        proc.wait(timeout=60)  # stdin stays open otherwise: an end of file would mean "rank 0 died"
        out = proc.stdout.read().decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            pipe.close()
    return proc.returncode, out, time.monotonic() - start


def test_supervisor_ends_the_scheduler_as_rank0_ends():
    # rank 0 ends normally: the scheduler gets the grace period, then is stopped (status 0)
    rc, out, _ = _supervise(["sleep", "60"], 0.5, stdin_data=b"BYE\n")
    assert rc == 0 and "supervisor: grace period over after rank 0 ended; scheduler stopped" in out, out
    # every rank passed the end-of-run barrier: the scheduler is stopped at once (status 0)
    rc, out, secs = _supervise(["sleep", "60"], 30, stdin_data=b"END\n")
    assert rc == 0 and "supervisor: every rank finished; scheduler stopped" in out and secs < 30, out
    # rank 0 dies (its pipe closes): the scheduler is killed at once (status 1)
    rc, out, secs = _supervise(["sleep", "60"], 30, close_stdin=True)
    assert rc == 1 and "supervisor: rank 0 died (pipe closed); scheduler killed" in out and secs < 30, out
    # the scheduler ends by itself: its status is reported
    rc, out, _ = _supervise(["sh", "-c", "exit 3"], 30)
    assert rc == 1 and "supervisor: scheduler exited with 3" in out, out
