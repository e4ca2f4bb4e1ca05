"""Collectives for the trainer, over MindSpore's communication (mccl / nccl / hccl).

``all_reduce_sum(array)`` (exact for counts: integer arrays and integer-valued float64
entries), ``barrier()``, ``broadcast_object(obj)`` (rank 0's JSON-able object everywhere, e.g.
the resume decision), ``broadcast_parameters(net)`` (rank 0's parameters everywhere, bit for
bit, any dtype), ``all_gather_exact(array)``, ``average_batch_norm_statistics(net)`` and
``parameters_divergence(net)``.
Each is a no-op (or a copy) when the process is not part of a distributed job.
"""
import json

import numpy as np

from .state import STATE, DistributedError

_LIMB_BITS = 12  # integers travel as 12-bit limbs in float32: their sums stay exact up to 4096 ranks


def all_reduce_sum(array):
    """Element-wise sum of ``array`` over all ranks, as numpy (a copy when not distributed).

    MindSpore's CPU AllReduce only takes float32, so: integer and bool arrays, and the
    integer-valued entries of float64 arrays (counts such as correct / total), are summed
    exactly (as 12-bit limbs); other float64 entries are sent as a float32 pair (value and
    remainder), about 1e-7 relative; float32 / float16 arrays are summed in float32.
    """
    arr = np.asarray(array)
    info = STATE["info"]
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
    if "all_reduce" not in STATE:
        STATE["all_reduce"] = ops.AllReduce(ops.ReduceOp.SUM)
    flat = arr.reshape(-1) if arr.size else np.zeros(1, np.float32)
    out = STATE["all_reduce"](ms.Tensor(flat)).asnumpy()
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
    if STATE["info"].is_distributed:
        _all_reduce_f32(np.zeros(1, np.float32))


def _check_root(root):
    world = STATE["info"].world_size
    if not isinstance(root, (int, np.integer)) or not 0 <= int(root) < world:
        raise ValueError(f"root must be a rank between 0 and {world - 1}: {root!r}")
    return int(root)


def _broadcast_uint8(raw, root):
    """Rank ``root``'s bytes (a uint8 array; every rank passes one of the same size) on every rank.

    Each byte travels as a float32 value 0..255 summed with zeros from the other ranks: exact.
    """
    sent = raw.astype(np.float32) if STATE["info"].rank == root else np.zeros(raw.size, np.float32)
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
    mine = STATE["info"].rank == root
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
    info = STATE["info"]
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
    info = STATE["info"]
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
    info = STATE["info"]
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


def all_gather_exact(arr):
    """Every rank's ``arr`` stacked in rank order (shape ``(world_size, *arr.shape)``), bit for bit.

    Each rank fills its own row of a zero array and the rows are summed: ``x + 0 + ... + 0``
    returns ``x`` for every float32 value except -0.0, NaN payloads and subnormals, which
    ``_broadcast_exact`` carries separately. ``world_size`` times the data travels: meant for
    small arrays (statistics, per-rank maxima), not for whole models. Every rank passes the same
    shape and dtype; not distributed: ``arr[None]``.
    """
    arr = np.ascontiguousarray(arr)
    info = STATE["info"]
    if not info.is_distributed:
        return arr[None].copy()
    return np.stack([_broadcast_exact(arr, root) for root in range(info.world_size)])


def average_batch_norm_statistics(net):
    """Replace every rank's BatchNorm moving statistics by their mean over all ranks.

    In data-parallel training each rank's BatchNorm keeps statistics of its own shard, so the ranks
    hold slightly different models for evaluation. Averaging them at the end of every epoch (before
    validation and checkpointing) makes every rank evaluate the one model that rank 0 saves: the
    distributed validation figures then equal validate.py on that checkpoint. Training itself uses
    batch statistics and is unaffected. The mean is computed in float64 from every rank's exact
    values and rounded once, the same on every rank: statistics that agree on every rank stay bit
    for bit what they were (a float32 sum divided by the rank count would round them from 3 ranks
    on). No-op when not distributed.
    """
    info = STATE["info"]
    if not info.is_distributed:
        return 0
    import mindspore as ms  # pylint: disable=import-outside-toplevel
    from mindspore import ops  # pylint: disable=import-outside-toplevel
    stats = [p for p in net.get_parameters() if p.name.endswith(("moving_mean", "moving_variance"))]
    if not stats:
        return 0
    values = [p.asnumpy().astype(np.float32).reshape(-1) for p in stats]
    mean = all_gather_exact(np.concatenate(values)).astype(np.float64).mean(axis=0)
    offset = 0
    for param, value in zip(stats, values):
        chunk = mean[offset:offset + value.size].reshape(param.shape).astype(ms.dtype_to_nptype(param.dtype))
        offset += value.size
        ops.assign(param, ms.Tensor(chunk))  # not set_data: a compiled graph keeps using the old storage
    return len(stats)


def parameters_divergence(net):
    """Largest |value - rank 0's value| of any parameter on any rank (0.0 means identical).

    Rank 0's parameters reach every rank bit for bit (``_broadcast_exact``); each rank measures its
    own largest difference in float64, and the ranks' figures are combined with a maximum. A
    NaN on one rank and not on rank 0 counts as an infinite difference.
    """
    info = STATE["info"]
    if not info.is_distributed:
        return 0.0
    values = [p.asnumpy().astype(np.float32).reshape(-1) for p in net.get_parameters()]
    if not values:
        return 0.0
    flat = np.concatenate(values)
    reference = _broadcast_exact(flat, 0)
    with np.errstate(invalid="ignore"):
        diff = np.abs(flat.astype(np.float64) - reference.astype(np.float64))
    same_nan = np.isnan(flat) & np.isnan(reference)
    diff = np.where(same_nan, 0.0, np.where(np.isnan(diff), np.inf, diff))
    local = np.array([float(diff.max()) if diff.size else 0.0], np.float64)
    return float(all_gather_exact(local.astype(np.float32)).max())
