"""Exported models as callables, and the metadata that makes an exported file self-describing.

``export.py`` stores the model's description in the file it writes (ONNX: ``metadata_props``;
MINDIR: the model's ``user_info`` map, through ``mindspore.export(..., custom_func=...)``), so a
deployed file needs nothing else to be run and named:

=====================  ==========================================================================
``model_name``         the architecture (``res2net50``)
``num_classes``        classifier outputs
``preprocessing``      JSON: the config keys of the evaluation transform the model was trained with
                       (``dataset``, ``image_resize``, ``crop_pct``, ``interpolation``, ``mean``,
                       ``std``, ``in_channels``; ``data.transforms.EvalPreprocessing``): what
                       ``validate.py`` / ``predict.py`` rebuild the exact transform from
``input_size``         JSON ``[channels, height, width]`` of the exported input
``image_mode``         ``RGB`` (decode as colour) or ``L`` (decode as grey, repeated to the channels)
``resize_mode``        ``centre_crop`` (shorter side to ``floor(size / crop_pct)``, centre crop) or
                       ``square`` (resized to ``size`` x ``size``: Fashion-MNIST / MNIST)
``mean``, ``std``      JSON lists, per channel, as fractions of the pixel range (0.485 ...)
``crop_pct``           evaluation centre-crop fraction (resize to ``size / crop_pct``, then crop)
``interpolation``      resize interpolation (``bilinear`` ...)
``label_names``        JSON list: the name of each output as a training label, i.e. the class-folder
                       names training used (``label_source`` ``training``), or, for a 1000-class
                       model whose checkpoint names none, the sorted ImageNet-1k WordNet ids
                       (``label_source`` ``imagenet``)
``label_source``       ``training`` or ``imagenet`` (see ``label_names``)
``display_names``      JSON list: the names ``predict.py`` shows for the outputs
``weights``            where the weights came from (a checkpoint's file name, or the published ones)
``toolkit``, ``toolkit_version``, ``mindspore_version``: what wrote the file
``quantization``       JSON, int8 files only (``export.py --quantize int8``, ``deploy/quantize.py``): the
                       scheme (QDQ, int8 per-channel weights, uint8 activations), the calibration
                       method, folder and number of images
=====================  ==========================================================================

Files written by earlier versions of export.py hold ``class_names`` (display names) instead of the
two lists, and no ``preprocessing``: their names are read as display names only, never as labels;
their preprocessing comes from the plain fields.

Runtimes (``validate.py`` / ``predict.py`` use them through ``open_deployed``):

- ``OnnxRuntimeModel(path)``: the ONNX file in onnxruntime (CPU; threads: MindSpore's CPU threads
  unless ``num_threads`` is given).
- ``MindirModel(path)``: the MINDIR file through ``mindspore.nn.GraphCell``.

Both take float32 NCHW images and return float32 logits: ``model(images) -> logits``. A file with
a fixed batch dimension is fed in chunks of that size (the last chunk padded, the padding dropped),
so any number of images works with any file. onnxruntime and onnx are the optional extra
``pip install 'mindcv_res2net[deploy]'``; a missing one is a ``UserError`` saying so.
"""
import json
import logging
import os
import re
import shutil
import tempfile
import time

import numpy as np

from .. import __version__
from .. import atomic_io
from ..errors import UserError

__all__ = ["DeployedModel", "OnnxRuntimeModel", "MindirModel", "open_deployed", "check_deployed_path",
           "make_metadata", "encode_metadata", "decode_metadata", "require_onnxruntime", "require_onnx",
           "finish_onnx_file", "mindir_metadata_writer", "export_network", "EXPORT_SUFFIXES",
           "default_num_threads", "DEPLOY_EXTRA"]

DEPLOY_EXTRA = "pip install 'mindcv_res2net[deploy]'"
FORMATS = {"onnx": ("ONNX", "onnxruntime"), "mindir": ("MINDIR", "mindspore")}

# metadata field -> kind; every value is stored as a string (lists as JSON)
_FIELDS = {
    "model_name": "str", "num_classes": "int", "preprocessing": "dict", "input_size": "ints",
    "image_mode": "str", "resize_mode": "str", "mean": "floats", "std": "floats", "crop_pct": "float",
    "interpolation": "str", "label_names": "names", "label_source": "str", "display_names": "names",
    "class_names": "names", "weights": "str", "toolkit": "str", "toolkit_version": "str",
    "mindspore_version": "str", "quantization": "dict",
}
LABEL_SOURCES = ("training", "imagenet")
_LOG = logging.getLogger("mindcv_res2net")


# ------------------------------------------------------------------------------------------------
# metadata
# ------------------------------------------------------------------------------------------------

def make_metadata(model_name, num_classes, input_size, default_cfg=None, display_names=None, weights=None,
                  mindspore_version=None, preprocessing=None, label_names=None, label_source=None):
    """The metadata of an exported model as ``{field: value}`` (see the module docstring).

    ``input_size``: ``(channels, height, width)`` of the exported input. ``preprocessing``: the
    ``data.transforms.EvalPreprocessing`` the model was trained with (stored whole, and as the plain
    fields); without it, ``default_cfg`` (the model's ``crop_pct``, ``interpolation``, ``mean``,
    ``std``) gives the plain fields. ``label_names`` / ``label_source``: the training labels (see
    the module docstring); ``display_names``: the names predict.py shows. ``weights``: a description
    of the weights (a path is reduced to its file name: the file may be shipped anywhere).
    """
    meta = {"model_name": str(model_name), "num_classes": int(num_classes),
            "input_size": [int(v) for v in input_size]}
    if preprocessing is not None:
        if tuple(preprocessing.input_size) != tuple(meta["input_size"]):
            raise ValueError(f"input size {meta['input_size']} is not the preprocessing's {preprocessing.input_size}")
        meta.update(_preprocessing_fields(preprocessing))
    else:
        meta.update(_cfg_fields(default_cfg, meta["input_size"][0]))
    if label_names is not None:
        if label_source not in LABEL_SOURCES:
            raise ValueError(f"label_source must be one of {LABEL_SOURCES}, got {label_source!r}")
        meta["label_names"], meta["label_source"] = [str(n) for n in label_names], label_source
    if display_names is not None:
        meta["display_names"] = [str(n) for n in display_names]
    if weights:
        meta["weights"] = os.path.basename(str(weights)) if os.sep in str(weights) else str(weights)
    meta.update({"toolkit": "mindcv_res2net", "toolkit_version": __version__})
    if mindspore_version:
        meta["mindspore_version"] = str(mindspore_version)
    return meta


def _preprocessing_fields(prep):
    mean, std = prep.normalisation_fractions()
    return {"preprocessing": prep.keys(), "image_mode": "L" if prep.grey else "RGB",
            "resize_mode": "square" if prep.grey else "centre_crop", "mean": mean, "std": std,
            "crop_pct": prep.crop_pct, "interpolation": prep.interpolation}


def _cfg_fields(default_cfg, channels):
    """The plain fields from a model's ``default_cfg``; a grey model keeps its data set's
    normalisation (3-channel mean/std are not stored)."""
    cfg = dict(default_cfg or {})
    fields = {"crop_pct": float(cfg.get("crop_pct", 0.875)), "interpolation": str(cfg.get("interpolation", "bilinear"))}
    for name in ("mean", "std"):
        if cfg.get(name) is not None and len(cfg[name]) == channels:
            fields[name] = [float(v) for v in cfg[name]]
    return fields


def encode_metadata(meta):
    """``{field: value}`` -> ``{field: str}`` (lists as JSON): what ONNX and MINDIR files hold."""
    out = {}
    for key, value in meta.items():
        as_json = isinstance(value, (list, tuple, dict))
        out[str(key)] = json.dumps(value, ensure_ascii=False) if as_json else str(value)
    return out


def _decode_value(kind, text):
    if kind == "str":
        return text
    if kind == "int":
        return int(text)
    if kind == "float":
        return float(text)
    value = json.loads(text)
    if kind == "dict":
        if not isinstance(value, dict):
            raise ValueError("not a mapping")
        return value
    if not isinstance(value, list):
        raise ValueError("not a list")
    if kind == "names":
        if not all(isinstance(v, str) for v in value):
            raise ValueError("not a list of strings")
        return value
    convert = int if kind == "ints" else float
    return [convert(v) for v in value]


def decode_metadata(raw, source=""):
    """``{field: str}`` read from a file -> typed values. Fields of other tools are left out; a
    malformed value of ours is left out with a warning naming ``source``."""
    meta = {}
    for key, kind in _FIELDS.items():
        if key not in raw:
            continue
        try:
            meta[key] = _decode_value(kind, raw[key])
        except (ValueError, TypeError) as exc:
            _LOG.warning("%s: ignoring its metadata field %r (%s): %r", source, key, exc, raw[key][:80])
    return meta


# ------------------------------------------------------------------------------------------------
# optional packages
# ------------------------------------------------------------------------------------------------

def require_onnxruntime(what="running an ONNX file"):
    """The ``onnxruntime`` module, or ``UserError`` with the install command."""
    try:
        import onnxruntime
    except ImportError:
        raise UserError(f"onnxruntime is not installed; it is needed for {what}. Install the deployment "
                        f"extra: {DEPLOY_EXTRA}") from None
    return onnxruntime


def require_onnx(what="writing ONNX metadata"):
    """The ``onnx`` module, or ``UserError`` with the install command.

    MindSpore is imported first: it selects protobuf's implementation for its own generated
    modules, which fail to load when onnx has loaded protobuf before."""
    import mindspore  # noqa: F401  (before onnx, see above)

    try:
        import onnx
    except ImportError:
        raise UserError(f"the onnx package is not installed; it is needed for {what}. Install the deployment "
                        f"extra: {DEPLOY_EXTRA}") from None
    return onnx


def default_num_threads():
    """MindSpore's CPU thread count (``runtime_num_threads``), so that onnxruntime runs on as many
    threads as the MindSpore model beside it; None when MindSpore does not say."""
    try:
        import mindspore as ms
        threads = int(ms.get_context("runtime_num_threads") or 0)
    except (ImportError, ValueError, TypeError, RuntimeError):
        return None
    return threads if threads > 0 else None


# ------------------------------------------------------------------------------------------------
# writing (export.py)
# ------------------------------------------------------------------------------------------------

def finish_onnx_file(path, metadata=None, dynamic_batch=False, batch_name="batch"):
    """Rewrite the ONNX file MindSpore wrote: store ``metadata`` in ``metadata_props`` and, with
    ``dynamic_batch``, mark dim 0 of every output as variable (MindSpore writes the traced batch
    size there even when the input's is variable)."""
    onnx = require_onnx()
    model = onnx.load(path)
    if dynamic_batch:
        for output in model.graph.output:
            dims = output.type.tensor_type.shape.dim
            if dims:
                dims[0].ClearField("dim_value")
                dims[0].dim_param = batch_name
    if metadata:
        encoded = encode_metadata(metadata)
        kept = [p for p in model.metadata_props if p.key not in encoded]
        del model.metadata_props[:]
        for prop in kept:
            model.metadata_props.add(key=prop.key, value=prop.value)
        for key, value in encoded.items():
            model.metadata_props.add(key=key, value=value)
    onnx.save(model, path)
    return path


def mindir_metadata_writer(metadata):
    """A ``custom_func`` for ``mindspore.export(..., file_format="MINDIR")`` that stores
    ``metadata`` in the MINDIR model's ``user_info`` map."""
    encoded = encode_metadata(metadata or {})

    def write(model_proto):
        for key, value in encoded.items():
            entry = model_proto.user_info.add()  # a map stored as repeated key/value entries
            entry.key, entry.value = key, value
    return write


EXPORT_SUFFIXES = {"MINDIR": ".mindir", "ONNX": ".onnx", "AIR": ".air"}
# mindspore.export refuses file names outside this set of characters
_SAFE_NAME = re.compile(r"^[0-9a-zA-Z@_\-.:/\\]+$")


def output_path(out, model, file_format):
    """The final file name: ``out`` with the format's suffix added when missing."""
    suffix = EXPORT_SUFFIXES[file_format]
    path = out or model
    if path.endswith(("/", os.sep)) or os.path.isdir(path):
        raise UserError(f"--out must be a file name, got the directory {path!r}: e.g. --out {os.path.join(path, model)}")
    if not path.lower().endswith(suffix):
        path += suffix
    return os.path.abspath(path)


def export_network(net, inputs, path, file_format, input_names=None, output_names=None, dynamic_batch=False,
                   metadata=None):
    """Write ``net`` traced on ``inputs`` to ``path`` (suffix included) atomically: what
    ``export.py`` writes (and ``benchmark.py --compare onnxruntime`` runs).

    ``dynamic_batch``: ONNX: dim 0 of the named inputs and of every output is variable; MINDIR:
    give inputs whose batch dimension is None (``mindspore.Tensor(shape=[None, ...])``).
    ``metadata``: ``{field: value}`` (``make_metadata``) stored in the file (ONNX and MINDIR;
    ignored for AIR).
    """
    import mindspore as ms

    final_dir = os.path.dirname(path)
    os.makedirs(final_dir, exist_ok=True)
    # MindSpore checks the file name against a character set: stage where that holds.
    stage_root = final_dir if _SAFE_NAME.match(final_dir + "/") else None
    staging = tempfile.mkdtemp(prefix=".export_tmp_", dir=stage_root)
    try:
        base = os.path.join(staging, "model")
        staged = base + EXPORT_SUFFIXES[file_format]
        if file_format == "ONNX":
            kwargs = {"input_names": list(input_names or []), "output_names": list(output_names or [])}
            if dynamic_batch:
                kwargs["dynamic_axes"] = {name: {0: "batch"} for name in kwargs["input_names"]}
            ms.onnx.export(net, *inputs, file_name=staged, **kwargs)
            if dynamic_batch or metadata:
                finish_onnx_file(staged, metadata, dynamic_batch=dynamic_batch)
        elif file_format == "MINDIR" and metadata:
            ms.export(net, *inputs, file_name=base, file_format=file_format,
                      custom_func=mindir_metadata_writer(metadata))
        else:
            ms.export(net, *inputs, file_name=base, file_format=file_format)
        if not os.path.isfile(staged):
            produced = sorted(os.listdir(staging))
            raise RuntimeError(f"MindSpore wrote {produced} instead of {os.path.basename(staged)}")
        if os.path.isdir(staging) and len(os.listdir(staging)) > 1:
            extra = [f for f in os.listdir(staging) if f != os.path.basename(staged)]
            raise UserError(f"the model is too large for one {file_format} file (MindSpore also wrote {extra}); "
                            f"export.py writes single-file models only")
        if stage_root is None:  # staged elsewhere: copy next to the target first
            fd, beside = atomic_io.create_staging(path)
            os.close(fd)
            try:
                shutil.copyfile(staged, beside)
            except BaseException:
                atomic_io.remove_quietly(beside)
                raise
            staged = beside
        atomic_io.commit_staged(staged, path, "exported model")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


# ------------------------------------------------------------------------------------------------
# running (validate.py, predict.py)
# ------------------------------------------------------------------------------------------------

def check_deployed_path(path, option):
    """``UserError`` unless ``path`` is an existing file (``option`` names the flag)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise UserError(f"{option}: file not found: {path}")
    if os.path.isdir(path):
        raise UserError(f"{option} is a directory, not a file: {path}. Pass the exported model file itself")
    return path


def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _onnxruntime_reason(exc):
    """onnxruntime's complaint without its source location: ``INVALID_PROTOBUF: Protobuf parsing failed.``"""
    text = _first_line(exc)
    found = re.match(r"\[ONNXRuntimeError\] : \d+ : (\w+) : (.*)", text)
    if not found:
        return text[:300]
    code, rest = found.groups()
    rest = rest.split(" failed:", 1)[-1]
    if rest.startswith("/"):  # "path.cc:245 onnxruntime::Model::Model(...) message"
        rest = rest.rsplit(") ", 1)[-1]
    return f"{code}: {rest}"[:300]


class DeployedModel:
    """An exported model: ``model(images)`` maps float32 NCHW images to float32 logits.

    Attributes: ``path``, ``format`` (``ONNX`` / ``MINDIR``), ``backend``, ``metadata`` (decoded,
    possibly empty), ``input_shape`` (``(C, H, W)``), ``batch`` (the fixed batch size, or None when
    the file takes any batch), ``num_classes`` (outputs per image), ``seconds`` (time spent running).
    """

    format = backend = option = None

    def __init__(self, path):
        self.path = os.fspath(path)
        self.metadata = {}
        self.input_shape = None
        self.batch = None
        self.num_classes = None
        self.seconds = 0.0

    @property
    def label(self):
        """How reports name it: ``model.onnx (onnxruntime)``, ``model_int8.onnx (onnxruntime, int8)``."""
        kind = ", int8" if self.quantization else ""
        return f"{os.path.basename(self.path)} ({self.backend}{kind})"

    @property
    def quantization(self):
        """The file's ``quantization`` metadata (an int8 file written by ``export.py --quantize``), or None."""
        return self.metadata.get("quantization")

    def _run(self, batch):
        raise NotImplementedError

    def __call__(self, images):
        images = np.ascontiguousarray(images, dtype=np.float32)
        if images.ndim != 4 or tuple(images.shape[1:]) != tuple(self.input_shape):
            c, h, w = self.input_shape
            got = "x".join(str(d) for d in images.shape[1:]) if images.ndim == 4 else str(images.shape)
            raise UserError(f"{self.path} takes {c}x{h}x{w} images but was given {got}: use image size {h} "
                            f"(or export the model again at the size you need)")
        if not len(images):
            return np.zeros((0, self.num_classes or 0), np.float32)
        start = time.perf_counter()
        try:
            if self.batch is None:
                return np.asarray(self._run(images), np.float32)
            outputs = []
            for first in range(0, len(images), self.batch):
                chunk = images[first:first + self.batch]
                if len(chunk) < self.batch:
                    pad = np.zeros((self.batch - len(chunk),) + chunk.shape[1:], np.float32)
                    chunk = np.concatenate([chunk, pad])
                outputs.append(np.asarray(self._run(chunk), np.float32)[:min(self.batch, len(images) - first)])
            return np.concatenate(outputs)
        finally:
            self.seconds += time.perf_counter() - start

    def preprocessing_keys(self):
        """The evaluation preprocessing the file states, as config keys (``EVAL_KEYS``): its
        ``preprocessing`` field, checked against its input shape; for files of earlier export.py
        versions, what the plain fields and the input shape give (grey input: Fashion-MNIST's
        reading)."""
        from ..data.transforms import EvalPreprocessing

        channels, height, width = self.input_shape
        stored = self.metadata.get("preprocessing")
        if stored is not None:
            prep = EvalPreprocessing.from_keys(stored, source=f"the metadata of {self.path}")
            if prep.input_size != (channels, height, width):
                raise UserError(f"{self.path}: its metadata's preprocessing ({prep.in_channels} channels, image_resize "
                                f"{prep.image_resize}) does not fit its input {channels}x{height}x{width}: export it "
                                f"again")
            return prep.keys()
        keys = {"dataset": "fashion_mnist" if channels == 1 else "imagenet", "image_resize": height,
                "in_channels": channels}
        keys.update({k: self.metadata[k] for k in ("crop_pct", "interpolation", "mean", "std") if k in self.metadata})
        return keys

    @property
    def training_labels(self):
        """The training label names the file states (``label_names`` from training folders), or None:
        a file without them (or with the implied ImageNet WordNet ids) is labelled as its
        checkpoint is, by the sorted val folders."""
        names = self.metadata.get("label_names")
        return names if names and self.metadata.get("label_source") == "training" else None

    @property
    def display_names(self):
        """The names predict.py shows (``display_names``; ``class_names`` in earlier files), or None."""
        return self.metadata.get("display_names") or self.metadata.get("class_names")

    def _set_shapes(self, input_dims, output_dims):
        """Input ``(batch, C, H, W)`` and output ``(batch, classes)`` dims as the file states them
        (a variable dimension as None or a negative number)."""
        def fixed(d):
            return int(d) if isinstance(d, (int, np.integer)) and d > 0 else None

        dims = [fixed(d) for d in input_dims]
        if len(dims) != 4 or None in dims[1:]:
            raise UserError(f"{self.path}: expected one image input of shape (batch, channels, height, width) "
                            f"with a fixed image size, found {list(input_dims)}")
        self.batch, self.input_shape = dims[0], tuple(dims[1:])
        out = [fixed(d) for d in output_dims]
        self.num_classes = out[1] if len(out) == 2 else None
        listed = self.metadata.get("num_classes")
        if self.num_classes is None and isinstance(listed, int):
            self.num_classes = listed


class OnnxRuntimeModel(DeployedModel):
    """An ONNX file run by onnxruntime on the CPU."""

    format, backend, option = "ONNX", "onnxruntime", "--onnx_path"

    def __init__(self, path, num_threads=None):
        super().__init__(check_deployed_path(path, self.option))
        ort = require_onnxruntime(f"{self.option} (running the ONNX file)")
        options = ort.SessionOptions()
        threads = num_threads if num_threads is not None else default_num_threads()
        if threads:
            options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: no shape-inference chatter on stderr
        try:
            self.session = ort.InferenceSession(self.path, sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's own exception types: InvalidProtobuf, Fail, ...
            raise UserError(f"{self.option}: {self.path} is not an ONNX model onnxruntime can load "
                            f"({_onnxruntime_reason(exc)})") from None
        self.num_threads = threads
        raw = dict(self.session.get_modelmeta().custom_metadata_map or {})
        self.metadata = decode_metadata(raw, self.path)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or not outputs:
            raise UserError(f"{self.path}: expected a model with one image input, found {len(inputs)} inputs")
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        self._set_shapes(inputs[0].shape, outputs[0].shape)

    def _run(self, batch):
        return self.session.run([self.output_name], {self.input_name: batch})[0]


class MindirModel(DeployedModel):
    """A MINDIR file run by MindSpore (``mindspore.load`` + ``nn.GraphCell``, built on first use so
    that opening the file does no MindSpore work before the runtime is set up)."""

    format, backend, option = "MINDIR", "mindspore", "--mindir_path"

    def __init__(self, path):
        super().__init__(check_deployed_path(path, self.option))
        from mindspore.train.mind_ir_pb2 import ModelProto  # MindSpore before protobuf (see require_onnx)
        from google.protobuf.message import DecodeError

        proto = ModelProto()
        try:
            with open(self.path, "rb") as fh:
                proto.ParseFromString(fh.read())
        except (DecodeError, ValueError, RuntimeError) as exc:
            raise UserError(f"{self.option}: {self.path} is not a MINDIR model ({_first_line(exc)})") from None
        except OSError as exc:
            raise UserError(f"{self.option}: cannot read {self.path}: {exc.strerror or exc}") from None
        graph_inputs = [t for value in proto.graph.input for t in value.tensor]
        graph_outputs = [t for value in proto.graph.output for t in value.tensor]
        if len(graph_inputs) != 1 or not graph_outputs:
            raise UserError(f"{self.option}: {self.path} is not a MINDIR model with one image input (found "
                            f"{len(graph_inputs)} inputs)")
        self.metadata = decode_metadata({e.key: e.value for e in proto.user_info}, self.path)
        self._set_shapes(list(graph_inputs[0].dims), list(graph_outputs[0].dims))
        self._cell = None

    def _run(self, batch):
        import mindspore as ms

        if self._cell is None:
            try:
                self._cell = ms.nn.GraphCell(ms.load(self.path))
            except (RuntimeError, ValueError) as exc:
                raise UserError(f"{self.option}: MindSpore cannot load {self.path} ({_first_line(exc)})") from None
        return self._cell(ms.Tensor(batch)).asnumpy()


def open_deployed(onnx_path=None, mindir_path=None, num_threads=None):
    """The deployed models named (ONNX first), as ``DeployedModel`` objects; ``UserError`` for a
    missing file, a file of another kind or a missing runtime."""
    models = []
    if onnx_path:
        models.append(OnnxRuntimeModel(onnx_path, num_threads=num_threads))
    if mindir_path:
        models.append(MindirModel(mindir_path))
    return models
