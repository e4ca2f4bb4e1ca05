"""How this process was launched, and joining that job: ``init_distributed``.

``init_distributed(distribute, device_target)`` is called once, early, by every entry script.
It works out how the process was launched and joins MindSpore's cluster:

* ``mpirun -n N python train.py ...`` (OpenMPI; ``OMPI_COMM_WORLD_*`` set): through the mpi4py
  bridge and its watchdog (``mpi_bridge.py``, ``watchdog.py``).
* ``msrun --worker_num=N --local_worker_num=N train.py ...`` (``MS_ROLE`` already set): ``init()``.
  msrun stops the local workers when one fails and MindSpore's heartbeat (``MS_NODE_TIMEOUT``)
  ends the rest.
* Ascend with ``RANK_TABLE_FILE`` (+ ``RANK_ID``, ``RANK_SIZE``, ``DEVICE_ID``): HCCL ``init()``.

Cluster time-outs that MindSpore leaves long get bounded defaults when the user has not set
them (``CLUSTER_ENV_DEFAULTS``).
"""
import os

import numpy as np

from ..errors import UserError
from .device import current_device_target, ms_init, resolve_device_target, set_data_parallel, set_device
from .mpi_bridge import init_mpirun
from .state import STATE, DistInfo, apply_env_defaults

LAUNCHERS = ("none", "mpirun", "msrun", "rank_table")


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


def init_distributed(distribute="auto", device_target=None, *, log_dir=None):
    """Join the distributed job this process was launched into; return its ``DistInfo``.

    ``distribute``: "auto" (on when launched by mpirun / msrun / a rank table with more than
    one process), True (a launcher is required) or False (single process; a multi-process
    launch is refused). ``device_target``: None leaves MindSpore's device as it is; otherwise
    it is resolved with ``resolve_device_target`` and set (device id = local rank under
    mpirun / rank table). Idempotent: a second call returns the first result.
    """
    if STATE["initialized"]:
        return STATE["info"]
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
            set_device(target, None)
        info = DistInfo(launcher=launcher, device_target=target or current_device_target())
        STATE.update(info=info, initialized=True)
        return info

    if launcher == "mpirun":
        info = init_mpirun(target, log_dir)
    elif launcher == "msrun":
        info = _init_msrun(target)
    else:
        info = _init_rank_table(target)
    if info.is_distributed:
        set_data_parallel(info.world_size)
    STATE.update(info=info, initialized=True)
    return info


def get_dist_info():
    """The ``DistInfo`` of this process (single-process defaults before ``init_distributed``)."""
    return STATE["info"]


def is_main_process():
    """True on rank 0 (and in a single-process run)."""
    return STATE["info"].rank == 0


def _init_msrun(target):
    apply_env_defaults()
    if target is not None:
        set_device(target, None)
    ms_init()
    from mindspore.communication import get_rank, get_group_size, get_local_rank  # pylint: disable=import-outside-toplevel
    rank, world = get_rank(), get_group_size()
    try:
        local = get_local_rank()
    except Exception:  # pylint: disable=broad-except
        local = rank
    return DistInfo(rank=rank, world_size=world, local_rank=local, is_distributed=world > 1,
                    launcher="msrun", device_target=target or current_device_target())


def _init_rank_table(target):
    apply_env_defaults()
    target = target or current_device_target()
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
    set_device(target, local)
    ms_init("hccl")
    return DistInfo(rank=rank, world_size=world, local_rank=local, is_distributed=world > 1,
                    launcher="rank_table", device_target=target)
