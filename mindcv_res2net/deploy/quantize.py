"""int8 static quantization of an exported ONNX model: ``export.py --file_format ONNX --quantize int8``.

The float32 ONNX file ``export.py`` writes (the inference-optimised network: BatchNorm already
folded into the convolutions) is quantized by onnxruntime's quantization tools
(``onnxruntime.quantization.quantize_static``):

- QDQ format (QuantizeLinear / DequantizeLinear pairs around each quantized operator, which
  onnxruntime's CPU provider fuses into integer kernels);
- weights int8, one scale per output channel; activations uint8, one scale per tensor;
- activation ranges calibrated on ``N`` images (``--calib_images``, default 512) drawn with a fixed
  seed from a folder of training images (``--calib_data``: a data root with ``train/``, or any
  folder of images), each passed through the model's evaluation transform
  (``prediction.Preprocessor``, the transform ``validate.py`` and ``predict.py`` use), so the
  calibration sees what the deployed model will see;
- calibration method: MinMax (default), Entropy or Percentile (``--calib_method``).

The written file keeps the float32 file's metadata (``runtimes``) and adds ``quantization``: a JSON
mapping with the scheme, the calibration method, the calibration folder and the number of images,
so that ``validate.py`` reports it as a quantized copy of its checkpoint.
"""
import os
import shutil
import sys
import tempfile

import numpy as np

from .. import atomic_io
from ..errors import UserError
from .runtimes import finish_onnx_file, require_onnx

__all__ = ["CALIB_METHODS", "DEFAULT_CALIB_IMAGES", "calibration_root", "calibration_files", "calibration_arrays",
           "quantize_onnx_file", "quantization_metadata"]

# --calib_method -> onnxruntime.quantization.CalibrationMethod member
CALIB_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
DEFAULT_CALIB_IMAGES = 512
CALIB_SEED = 0
CALIB_BATCH = 16
QDQ_OPSET = 13


def calibration_root(folder, option="--calib_data"):
    """The folder calibration images are drawn from: ``folder/train`` when there is one (a data root
    as train.py reads it), else ``folder`` itself. ``UserError`` when ``folder`` is not a folder."""
    folder = os.fspath(folder)
    if not os.path.exists(folder):
        raise UserError(f"{option}: calibration folder not found: {folder}. Pass a folder of training images "
                        f"(a data root with train/<class>/ folders, or any folder of images)")
    if not os.path.isdir(folder):
        raise UserError(f"{option} must be a folder of training images, got the file {folder}")
    train = os.path.join(folder, "train")
    return train if os.path.isdir(train) else folder


def calibration_files(folder, count, seed=CALIB_SEED, option="--calib_data"):
    """Every image file under the calibration root of ``folder``, in a seeded random order
    (the first ``count`` are the calibration set when all are readable). ``UserError`` when there
    are fewer than ``count``."""
    from .prediction import _walk_images

    root = calibration_root(folder, option)
    files = _walk_images(root)
    if len(files) < count:
        found = f"only {len(files)} image files" if files else "no image files"
        fix = f"pass --calib_images {len(files)} or " if files else ""
        raise UserError(f"{option}: {root} holds {found}, but calibration needs {count} (--calib_images): {fix}"
                        f"a folder with more training images")
    order = np.random.default_rng(seed).permutation(len(files))
    return [files[i] for i in order]


def calibration_arrays(files, preprocessing, count, option="--calib_data", folder=""):
    """``(count, C, H, W)`` float32: the first ``count`` readable files of ``files`` through the
    evaluation transform of ``preprocessing`` (an ``EvalPreprocessing``). Unreadable files are
    skipped with a warning; ``UserError`` when fewer than ``count`` are readable."""
    from .prediction import Preprocessor

    preprocess = Preprocessor(preprocessing)
    arrays, skipped = [], []
    for path in files:
        if len(arrays) == count:
            break
        array, reason = preprocess(path)
        if array is None:
            skipped.append(f"{path} ({reason})")
            continue
        arrays.append(array)
    if skipped:
        print(f"warning: {len(skipped)} unreadable calibration image(s) skipped, e.g. {skipped[0]}", file=sys.stderr)
    if len(arrays) < count:
        raise UserError(f"{option}: {folder or 'the calibration folder'} holds only {len(arrays)} readable images "
                        f"({len(skipped)} unreadable), but calibration needs {count} (--calib_images): pass "
                        f"--calib_images {len(arrays)} or a folder with more readable training images")
    return np.stack(arrays).astype(np.float32)


def quantization_metadata(method, calib_data, count, ort_version, seed=CALIB_SEED):
    """The ``quantization`` metadata field of an int8 file (a JSON mapping in the file)."""
    return {"type": "int8 static", "format": "QDQ", "weights": "int8, per output channel",
            "activations": "uint8, per tensor", "calibration_method": CALIB_METHODS[method],
            "calibration_data": os.fspath(calib_data), "calibration_images": int(count), "calibration_seed": int(seed),
            "onnxruntime_version": str(ort_version)}


def _reader(input_name, arrays, batch, fixed=False):
    from onnxruntime.quantization import CalibrationDataReader

    class ArrayReader(CalibrationDataReader):
        """The calibration images in batches of ``batch``, as onnxruntime's calibrator asks for them
        (``fixed``: a file with a fixed batch size; the last batch is filled up with the first images)."""

        def __init__(self):
            self.start = 0

        def get_next(self):
            if self.start >= len(arrays):
                return None
            chunk = arrays[self.start:self.start + batch]
            if fixed and len(chunk) < batch:
                chunk = np.concatenate([chunk, np.resize(arrays, (batch - len(chunk),) + arrays.shape[1:])])
            self.start += batch
            return {input_name: chunk}

        def rewind(self):
            self.start = 0

    return ArrayReader()


def _opset(model):
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _check_folded(model, path):
    """The float32 graph ``export.py`` writes has its BatchNorms folded into the convolutions."""
    left = [n.name or n.op_type for n in model.graph.node if n.op_type == "BatchNormalization"]
    if left:
        raise RuntimeError(f"{path}: {len(left)} BatchNormalization node(s) left before quantization ({left[:3]})")


def quantize_onnx_file(fp32_path, out_path, arrays, method="minmax", metadata=None, op_types=None):
    """Write the int8 QDQ model of ``fp32_path`` to ``out_path`` (atomically), its activations
    calibrated on ``arrays`` (NCHW float32) with ``method`` (a key of ``CALIB_METHODS``); the file
    keeps ``fp32_path``'s metadata and adds ``metadata`` (``{field: value}``, e.g. ``quantization``).
    ``op_types``: the operator types to quantize (default: all onnxruntime can)."""
    onnx = require_onnx("export.py --quantize int8")  # MindSpore before onnx: see require_onnx
    import onnx.version_converter
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = onnx.load(fp32_path)
    _check_folded(model, fp32_path)
    kept = {p.key: p.value for p in model.metadata_props}
    graph_input = model.graph.input[0]
    first_dim = graph_input.type.tensor_type.shape.dim[0]
    fixed = first_dim.HasField("dim_value") and first_dim.dim_value > 0
    batch = first_dim.dim_value if fixed else CALIB_BATCH
    folder = os.path.dirname(os.path.abspath(out_path))
    staging = tempfile.mkdtemp(prefix=".quantize_tmp_", dir=folder)
    try:
        staged, prepared = os.path.join(staging, "model.onnx"), os.path.join(staging, "prepared.onnx")
        # per-channel QuantizeLinear / DequantizeLinear (their ``axis``) need opset 13; MindSpore writes 11
        source = fp32_path
        if _opset(model) < QDQ_OPSET:
            source = os.path.join(staging, "opset13.onnx")
            onnx.save(onnx.version_converter.convert_version(model, QDQ_OPSET), source)
        # onnxruntime's recommended preparation: shape inference and graph optimisation (constant
        # folding, fusions), so that every tensor the calibrator sees has a known shape
        quant_pre_process(source, prepared)
        quantize_static(prepared, staged, _reader(graph_input.name, arrays, batch, fixed), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=getattr(CalibrationMethod, CALIB_METHODS[method]),
                        op_types_to_quantize=op_types, extra_options={"CalibTensorRangeSymmetric": False})
        quantized = onnx.load(staged)
        present = {p.key for p in quantized.metadata_props}
        for key, value in kept.items():
            if key not in present:
                quantized.metadata_props.add(key=key, value=value)
        onnx.save(quantized, staged)
        finish_onnx_file(staged, metadata)
        atomic_io.commit_staged(staged, out_path, "int8 model")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_path
