"""What the distributed modules share: this process's ``DistInfo``, the error type, the bounded
cluster time-outs and the one-line stderr reporter.

``STATE`` is the one mutable record of the package (tests patch its items):
``info`` (this process's ``DistInfo``), ``initialized``, ``bridge`` (the mpirun watchdog, or
None), ``startup_agreed`` (the mpirun ranks have compared their start-up errors) and, once used, ``all_reduce`` (the cached MindSpore AllReduce operator).
"""
import os
import time
from dataclasses import dataclass

from ..errors import UserError

PREFIX = "[mindcv_res2net.distributed]"
WATCHDOG_EXIT_CODE = 1

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


class StartupRefused(UserError):
    """Another rank of an mpirun job refused its start-up (a user's mistake found before the cluster
    was joined). ``text`` is what this rank prints: every rank's message, grouped, on rank 0; None
    (a quiet exit with the same status) on the others."""

    def __init__(self, text):
        super().__init__(text or "another rank refused its start-up")
        self.text = text


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the job."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    is_distributed: bool = False
    launcher: str = "none"
    device_target: str = ""


STATE = {"info": DistInfo(), "bridge": None, "initialized": False, "startup_agreed": False}


def say(msg):
    """One line on stderr, written directly so it survives os._exit right after."""
    try:
        stamp = time.strftime("%H:%M:%S")
        os.write(2, f"{PREFIX} {stamp} {msg}\n".encode("utf-8", "replace"))
    except OSError:
        pass


def env_float(name, default):
    """The number of seconds in environment variable ``name`` (``default`` when unset or empty)."""
    value = os.environ.get(name, "")
    try:
        return float(value) if value else float(default)
    except ValueError as exc:
        raise UserError(f"environment variable {name} must be a number of seconds: {value!r}. "
                        f"Unset it or give e.g. {name}={default}") from exc


def apply_env_defaults():
    """Give the cluster time-outs the user has not set their bounded defaults."""
    for key, value in CLUSTER_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
