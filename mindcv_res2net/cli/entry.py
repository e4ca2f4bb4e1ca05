"""How every entry script runs and ends: ``run_main(main)``.

Every entry script does ``run_main(main)``. A ``UserError`` (or a missing file) prints
``error: <message>`` on stderr and exits 2 with no traceback; ``--debug`` on the command line
(or ``MINDCV_RES2NET_DEBUG=1``) re-raises so the traceback shows. A normal end goes through
``distributed.end_process``: under mpirun every rank waits for the others, then leaves.

The scripts that join a cluster (train.py, validate.py: ``run_main(main, joins_cluster=True)``)
behave as one program under ``mpirun -n N``: a mistake found before the cluster is joined (a bad
key, a missing folder) is compared across the ranks and printed once, by rank 0, and every rank
exits with status 2; MindSpore's own log lines stay off the console (``GLOG_v=3``, errors only,
unless the user set ``GLOG_v``).
"""
import os
import sys

from ..distributed.mpi_bridge import report_startup_error
from ..distributed.state import StartupRefused
from ..distributed.watchdog import end_process
from ..errors import UserError
from .options import debug_requested


def _debug_requested(argv):
    return debug_requested(argv) or os.environ.get("MINDCV_RES2NET_DEBUG", "") not in ("", "0")


def _mpirun_ranks():
    try:
        return int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1") or 1)
    except ValueError:
        return 1


def _error_text(exc, joins_cluster):
    """What this process prints for the user's mistake ``exc`` (None: nothing, another rank does)."""
    if isinstance(exc, StartupRefused):
        return exc.text
    if joins_cluster and _mpirun_ranks() > 1:
        return report_startup_error(str(exc))
    return str(exc)


def run_main(main, argv=None, *, joins_cluster=False):
    """Call ``main(argv)``; turn a user's mistake into one message on stderr and exit status 2.

    ``joins_cluster``: the script joins the job's cluster under mpirun (train.py, validate.py), so
    its ranks compare their start-up errors and print them once (see the module docstring).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if joins_cluster and _mpirun_ranks() > 1:
        os.environ.setdefault("GLOG_v", "3")  # read when MindSpore is first imported, after this
    try:
        code = main(argv)
    except UserError as exc:
        if _debug_requested(argv):
            raise
        text = _error_text(exc, joins_cluster)
        if text:
            print(f"error: {text}", file=sys.stderr)
        end_process(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    end_process(code or 0)
