"""idx files (MNIST format) and the MNIST-family class names; no MindSpore import."""
import gzip

import numpy as np

from ...errors import UserError

FASHION_MNIST_CLASSES = ["0_tshirt_top", "1_trouser", "2_pullover", "3_dress", "4_coat",
                         "5_sandal", "6_shirt", "7_sneaker", "8_bag", "9_ankle_boot"]
MNIST_CLASSES = ["0_zero", "1_one", "2_two", "3_three", "4_four", "5_five", "6_six", "7_seven",
                 "8_eight", "9_nine"]


def read_idx(path):
    """numpy array from an idx file (``.gz`` or raw); UserError naming the file if corrupt."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise UserError(f"cannot read idx file {path}: {exc}. Re-download it (python -m "
                        f"mindcv_res2net.data.prepare)") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise UserError(f"not an unsigned-byte idx file: {path}. Re-download it")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise UserError(f"truncated idx file: {path}. Re-download it")
    shape = tuple(int.from_bytes(data[4 + 4 * k:8 + 4 * k], "big") for k in range(ndim))
    expected = 4 + 4 * ndim + int(np.prod(shape, dtype=np.int64))
    if len(data) != expected:
        raise UserError(f"idx file {path} has {len(data)} bytes, its header says {expected}. "
                        f"Re-download it")
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)
