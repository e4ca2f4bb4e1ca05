"""Launch detection and distributed set-up: OpenMPI (mpi4py bridge), msrun, rank table.

``init_distributed(distribute, device_target)`` is called once, early, by every entry script.
It works out how the process was launched (``mpirun``, ``msrun``, an Ascend rank table, or
nothing) and joins MindSpore's cluster. Failures are bounded: cluster time-outs get bounded
defaults (``CLUSTER_ENV_DEFAULTS``), and under mpirun a watchdog ends every rank within about
a second when one dies or fails (about 40 s for a vanished host).

Modules (dependencies point down the list; nothing here imports MindSpore at module level):

* ``launch``: ``detect_launcher``, ``parse_distribute``, ``init_distributed``, ``get_dist_info``,
  ``is_main_process``; the msrun and rank-table paths.
* ``mpi_bridge``: the mpirun -> MindSpore bridge (mpi4py), which starts MindSpore's scheduler.
* ``cluster_scheduler``: the scheduler's supervisor, run by rank 0 as
  ``python -m mindcv_res2net.distributed.cluster_scheduler --parent PID``.
* ``process_setup``: ``setup_runtime`` (device, execution mode, ranks, seeds) for train.py and validate.py.
* ``watchdog``: the TCP star around rank 0 and the ABORT protocol; ``end_process`` (the
  end-of-run barrier under mpirun), ``shutdown``.
* ``collectives``: ``all_reduce_sum``, ``all_gather_exact``, ``barrier``, ``broadcast_object``,
  ``broadcast_parameters``, ``average_batch_norm_statistics``, ``parameters_divergence``.
* ``device``: ``resolve_device_target`` and MindSpore's device / parallel-mode / ``init`` calls.
* ``state``: ``DistInfo``, ``DistributedError``, ``CLUSTER_ENV_DEFAULTS`` and the shared ``STATE``.

Environment knobs (all optional): ``MINDCV_RES2NET_SCHED_HOST`` (address of rank 0's host
that every rank can reach, for multi-homed hosts), ``MINDCV_RES2NET_SCHED_PORT``,
``MINDCV_RES2NET_INIT_TIMEOUT`` (seconds for all ranks to reach ``init_distributed`` and for
the scheduler to start, default 90), ``MINDCV_RES2NET_DIST_LOG_DIR`` (where the scheduler
writes its log), ``MINDCV_RES2NET_SCHED_GRACE`` (seconds the scheduler may run on after rank 0
ended normally, default 60).
"""
from ..lazy_exports import lazy_exports

_EXPORTS = {
    **dict.fromkeys(("all_gather_exact", "all_reduce_sum", "average_batch_norm_statistics", "barrier",
                     "broadcast_object", "broadcast_parameters", "parameters_divergence"), "collectives"),
    "resolve_device_target": "device",
    **dict.fromkeys(("LAUNCHERS", "detect_launcher", "get_dist_info", "init_distributed", "is_main_process",
                     "parse_distribute"), "launch"),
    **dict.fromkeys(("CLUSTER_ENV_DEFAULTS", "WATCHDOG_EXIT_CODE", "DistInfo", "DistributedError"), "state"),
    **dict.fromkeys(("end_process", "shutdown"), "watchdog"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
