"""MindSpore's side of the set-up: which device to use, setting it, data-parallel mode, ``init()``.

MindSpore is imported inside these functions only, so that importing the package (config
parsing, ``--help``) does not load it.
"""
from ..errors import UserError
from .state import DistributedError


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


def current_device_target():
    """The device MindSpore runs on: the one given to ``mindspore.set_device``, else its default."""
    try:
        import mindspore as ms  # pylint: disable=import-outside-toplevel
        return ms.get_current_device().device_target
    except Exception:  # pylint: disable=broad-except
        return "CPU"


def set_device(target, device_id):
    """``mindspore.set_device(target[, device_id])``; CPU or no id: the device id is MindSpore's."""
    import mindspore as ms  # pylint: disable=import-outside-toplevel
    if device_id is None or target == "CPU":
        ms.set_device(target)
    else:
        ms.set_device(target, int(device_id))


def set_data_parallel(world_size):
    """Data-parallel mode over ``world_size`` ranks, gradients averaged."""
    import mindspore as ms  # pylint: disable=import-outside-toplevel
    from mindspore.context import ParallelMode  # pylint: disable=import-outside-toplevel
    ms.reset_auto_parallel_context()
    ms.set_auto_parallel_context(parallel_mode=ParallelMode.DATA_PARALLEL, gradients_mean=True,
                                 device_num=int(world_size))


def ms_init(backend=None):
    """``mindspore.communication.init``; a failure becomes a ``DistributedError`` that says what to check."""
    from mindspore.communication import init  # pylint: disable=import-outside-toplevel
    try:
        if backend:
            init(backend)
        else:
            init()
    except RuntimeError as exc:
        raise DistributedError(f"MindSpore distributed init failed: {exc}. Check that every rank "
                               "can reach the scheduler address and that all ranks were started") from exc
