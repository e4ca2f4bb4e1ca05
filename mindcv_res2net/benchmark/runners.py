"""The implementations benchmark.py measures, each behind one ``Runner`` interface.

``ours`` (mindcv_res2net, trained with ``TrainStep``), ``ours_optimized`` (inference only:
``optimize_for_inference``), ``mindcv`` (MindCV's own Res2Net, same TrainStep / AMP wrapper),
``torch`` (the torch.nn reference, ``torch_models``), ``timm`` (timm's model), ``onnxruntime``
(inference only: our model exported to ONNX as ``export.py`` writes it, run by onnxruntime) and
``onnxruntime_int8`` (the same file quantized as ``export.py --quantize int8`` does it). A
reference that is not installed or lacks the model raises ``Unavailable`` and is reported as not
available.
"""
import contextlib
import difflib
import os
import shutil
import tempfile
import time

import mindspore as ms
import numpy as np

from ..training.train_step import TrainStep, apply_amp
from ..loss.losses import create_loss
from ..optim.optim_factory import create_optimizer
from ..errors import UserError
from ..models.inference import optimize_for_inference
from ..models.factory import create_model
from ..models.registry import get_model_cfg, is_model, list_models, resolve_name
from ..training.frozen_stages import freeze_stages
from ..deploy.quantize import quantize_onnx_file
from ..deploy.runtimes import (OnnxRuntimeModel, default_num_threads, export_network, make_metadata, require_onnx,
                        require_onnxruntime)
from .common import version
from .settings import OPTIMIZER_SETTINGS

# our model run by another runtime: its ratios are taken to the references and to ``ours*``
DEPLOYED = ("onnxruntime", "onnxruntime_int8")
# images the int8 row is calibrated on (random weights and images: the row measures speed only)
BENCH_CALIB_IMAGES = 16


class Unavailable(Exception):
    """This implementation cannot be measured here (not installed, no such model ...)."""


def check_model(name, image_size=None):
    """``UserError`` (with the closest names) unless ``name`` is a registered model or alias; and
    unless ``image_size`` (None: not checked) is a multiple of the model's ``input_multiple``."""
    if not is_model(name):
        close = difflib.get_close_matches(name, list_models(), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UserError(f"unknown model {name!r}.{hint} See mindcv_res2net.list_models() for all names")
    multiple = get_model_cfg(name).input_multiple
    if image_size is not None and image_size % multiple:
        raise UserError(f"{name}: image_size must be a multiple of {multiple} (the DLA tree max-pools), "
                        f"got {image_size}")


class Runner:
    """One implementation: ``setup()`` builds it, ``step()`` runs one synchronous step."""

    name = "?"
    implementation = "?"

    def __init__(self, args):
        self.args = args
        self.notes = []
        self.precision = "fp32" if args.amp_level == "O0" else f"MindSpore AMP {args.amp_level}"

    def setup(self):
        raise NotImplementedError

    def step(self):
        raise NotImplementedError

    def device_memory(self):
        return None


def random_batch(args):
    """(images NCHW float32, labels int32) drawn from ``args.seed``: the same for every runner."""
    rng = np.random.default_rng(args.seed)
    images = rng.standard_normal((args.batch_size, 3, args.image_size, args.image_size)).astype(np.float32)
    labels = rng.integers(0, args.num_classes, args.batch_size).astype(np.int32)
    return images, labels


class MindSporeRunner(Runner):
    """ours / ours_optimized / mindcv: the network built by ``build()``, trained with TrainStep
    (``--opt``: by default SGD momentum 0.9, lr 0.01, weight decay 1e-4; our ``create_optimizer``
    for every MindSpore model; CE with label smoothing 0.1; fixed loss scale
    1024 when amp_level != O0, as in MindCV's recipes) or run in eval mode."""

    def __init__(self, args, name, implementation, build, optimize=False):
        super().__init__(args)
        self.name, self.implementation = name, implementation
        self._build, self.optimize = build, optimize
        self._call = None

    def setup(self):
        args = self.args
        net = self._build()
        images, labels = random_batch(args)
        self.images = ms.Tensor(images)
        if args.task == "train":
            self.labels = ms.Tensor(labels)
            loss = create_loss("CE", label_smoothing=0.1)
            lr, wd = OPTIMIZER_SETTINGS[args.opt]
            opt = create_optimizer(net, opt=args.opt, lr=lr, weight_decay=wd, momentum=0.9)
            fixed_scale = 1.0 if args.amp_level == "O0" else 1024.0
            self.cell = TrainStep(net, loss, opt, amp_level=args.amp_level, loss_scale_type="fixed",
                                  loss_scale=fixed_scale)
            self.cell.set_train(True)
        else:
            net.set_train(False)
            if self.optimize:
                net = optimize_for_inference(net)
            self.cell = apply_amp(net, args.amp_level)
            self.cell.set_train(False)
        self.net = net

    def step(self):
        if self.args.task == "train":
            loss, _overflow, _scale = self.cell(self.images, self.labels)
            loss.asnumpy()
        else:
            out = self.cell(self.images)
            (out[0] if isinstance(out, (tuple, list)) else out).asnumpy()


def _ours_builder(args):
    return lambda: create_model(args.model, num_classes=args.num_classes)


def _frozen_builder(args, frozen_stages):
    """Our model with the stem and stages 1..``frozen_stages`` frozen, as train.py freezes them."""
    def build():
        net = create_model(args.model, num_classes=args.num_classes)
        freeze_stages(net, frozen_stages, norm_eval=True)
        return net
    return build


def _mindcv_builder(args):
    try:
        from mindcv.models import create_model as mindcv_create_model
        from mindcv.models import list_models as mindcv_list_models
    except Exception as exc:  # noqa: BLE001 -- ImportError or a broken installation
        raise Unavailable(f"MindCV is not installed or does not import ({type(exc).__name__}: {exc})") from None
    name = resolve_name(args.model)
    if name not in mindcv_list_models():
        raise Unavailable(f"MindCV has no {name} (its Res2Nets: "
                          f"{', '.join(m for m in mindcv_list_models() if 'res2' in m)})")

    def build():
        return mindcv_create_model(name, num_classes=args.num_classes, pretrained=False)
    return build


class TorchRunner(Runner):
    """torch / timm: a PyTorch model; train = ``--opt`` (SGD momentum 0.9, lr 0.01, wd 1e-4 by
    default; torch.optim.Adam / AdamW) + CE (label smoothing 0.1); infer = eval + inference_mode.
    fp32 on CPU; on CUDA, amp_level != O0 runs under fp16 autocast (with a GradScaler for training)."""

    def __init__(self, args, name, implementation, build):
        super().__init__(args)
        self.name, self.implementation, self._build = name, implementation, build

    def setup(self):
        import torch
        args = self.args
        self.torch = torch
        cuda = args.device_target == "GPU" and torch.cuda.is_available()
        self.device = torch.device("cuda" if cuda else "cpu")
        if args.device_target != "CPU" and not cuda:
            self.notes.append(f"PyTorch runs on CPU (no CUDA device for device_target {args.device_target})")
        self.autocast = cuda and args.amp_level != "O0"
        self.precision = "fp16 autocast" if self.autocast else "fp32"
        if args.amp_level != "O0" and not self.autocast:
            self.notes.append(f"amp_level {args.amp_level} not applied to PyTorch on CPU: it runs fp32")
        torch.manual_seed(args.seed)
        model = self._build().to(self.device)
        images, labels = random_batch(args)
        self.images = torch.from_numpy(images).to(self.device)
        self.labels = torch.from_numpy(labels).long().to(self.device)
        if args.task == "train":
            model.train()
            lr, wd = OPTIMIZER_SETTINGS[args.opt]
            if args.opt == "momentum":
                self.opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=wd)
            else:
                make = torch.optim.AdamW if args.opt == "adamw" else torch.optim.Adam
                self.opt = make(model.parameters(), lr=lr, weight_decay=wd)
            self.loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
            self.scaler = torch.amp.GradScaler("cuda", init_scale=1024.0) if self.autocast else None
        else:
            model.eval()
        self.model = model
        if cuda:
            torch.cuda.reset_peak_memory_stats()

    def _sync(self, tensor):
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()
        else:
            tensor.detach().reshape(-1)[0].item()

    def step(self):
        torch = self.torch
        ctx = torch.autocast("cuda", dtype=torch.float16) if self.autocast else contextlib.nullcontext()
        if self.args.task == "train":
            self.opt.zero_grad(set_to_none=True)
            with ctx:
                loss = self.loss_fn(self.model(self.images), self.labels)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.step(self.opt)
                self.scaler.update()
            else:
                loss.backward()
                self.opt.step()
            self._sync(loss)
        else:
            with torch.inference_mode(), ctx:
                out = self.model(self.images)
            self._sync(out)

    def device_memory(self):
        if self.device.type == "cuda":
            return self.torch.cuda.max_memory_allocated() / 2 ** 20
        return None


def _torch_builder(args):
    try:
        import torch  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        raise Unavailable(f"PyTorch is not installed or does not import ({type(exc).__name__}: {exc})") from None
    from mindcv_res2net.benchmark.torch_models import TORCH_ARCHS, create_torch_model
    name = resolve_name(args.model)
    if name not in TORCH_ARCHS:
        raise Unavailable(f"no torch reference for {name}")
    return lambda: create_torch_model(name, num_classes=args.num_classes)


def _timm_importable():
    try:
        import timm  # noqa: F401
        return True
    except Exception:  # noqa: BLE001 -- timm needs torchvision; any failure = not importable
        return False


def _timm_builder(args):
    import timm
    from mindcv_res2net.benchmark.torch_models import TIMM_NAMES
    timm_name = TIMM_NAMES.get(resolve_name(args.model))
    if timm_name is None:
        raise Unavailable(f"timm has no {resolve_name(args.model)}")
    return lambda: timm.create_model(timm_name, pretrained=False, num_classes=args.num_classes)


class OnnxRuntimeRunner(Runner):
    """onnxruntime: our inference-optimised model written as ``export.py`` writes it (ONNX, variable
    batch, traced at batch 1, with the file's metadata) into a temporary folder, loaded by
    ``runtimes.OnnxRuntimeModel`` (CPU) with as many intra-op threads as MindSpore's CPU runtime
    (``runtime_num_threads``), and fed the same batch as the other implementations."""

    name = "onnxruntime"

    def __init__(self, args, build, ort_version):
        super().__init__(args)
        self._build = build
        self.threads = default_num_threads()
        self.implementation = (f"mindcv_res2net ONNX export in onnxruntime {ort_version} "
                               f"({self.threads or 'default'} intra-op threads)")
        self.precision = "fp32"
        if args.amp_level != "O0":
            self.notes.append(f"amp_level {args.amp_level} not applied: the exported ONNX model is fp32")
        if args.device_target != "CPU":
            self.notes.append("onnxruntime runs on the CPU (CPUExecutionProvider)")

    def _write(self, net, path, meta):
        """The file this row runs (the float32 export); ``(path, what the note says)``."""
        shape = (1, 3, self.args.image_size, self.args.image_size)
        export_network(optimize_for_inference(net), (ms.Tensor(np.zeros(shape, np.float32)),), path, "ONNX",
                       input_names=["input"], output_names=["logits"], dynamic_batch=True, metadata=meta)
        return path, "variable batch, traced at batch 1"

    def setup(self):
        args = self.args
        net = self._build()
        net.set_train(False)
        shape = (3, args.image_size, args.image_size)
        meta = make_metadata(args.model, args.num_classes, shape, default_cfg=getattr(net, "default_cfg", None),
                             weights="random initialisation", mindspore_version=ms.__version__)
        folder = tempfile.mkdtemp(prefix="r2bench_onnx_")
        try:
            start = time.perf_counter()
            path, how = self._write(net, os.path.join(folder, "model.onnx"), meta)
            export_s, size_mb = time.perf_counter() - start, os.path.getsize(path) / 2 ** 20
            self.model = OnnxRuntimeModel(path, num_threads=self.threads)  # reads the file: it can go
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        if self.model.batch is not None:
            raise Unavailable(f"the exported ONNX file has a fixed batch of {self.model.batch}, not a variable one")
        self.images, _ = random_batch(args)
        self.notes.append(f"exported in {export_s:.1f} s ({size_mb:.0f} MB, {how}); "
                          f"onnxruntime intra-op threads: {self.model.num_threads or 'its default'} "
                          f"(MindSpore's runtime_num_threads: {self.threads})")

    def step(self):
        self.model(self.images)


class OnnxRuntimeInt8Runner(OnnxRuntimeRunner):
    """onnxruntime_int8: the ``onnxruntime`` row's file quantized as ``export.py --quantize int8``
    quantizes it (``quantize.quantize_onnx_file``: QDQ, int8 per-channel weights, uint8
    activations, MinMax calibration), calibrated on ``BENCH_CALIB_IMAGES`` random images: the
    weights are random too, so the row measures speed only (accuracy: ``validate.py``)."""

    name = "onnxruntime_int8"

    def __init__(self, args, build, ort_version):
        super().__init__(args, build, ort_version)
        self.implementation = self.implementation.replace("ONNX export", "ONNX export, int8 QDQ,")
        self.precision = "int8 (QDQ; uint8 activations)"
        self.notes = [n.replace("fp32", "int8") for n in self.notes]

    def _write(self, net, path, meta):
        fp32, how = super()._write(net, path[:-len(".onnx")] + "_fp32.onnx", meta)
        rng = np.random.default_rng(self.args.seed + 1)
        shape = (BENCH_CALIB_IMAGES, 3, self.args.image_size, self.args.image_size)
        quantize_onnx_file(fp32, path, rng.standard_normal(shape).astype(np.float32))
        return path, f"{how}; int8 QDQ, MinMax calibration on {BENCH_CALIB_IMAGES} random images"


def _onnxruntime_version(name="onnxruntime"):
    """onnxruntime's version; ``Unavailable`` (with the install command) without onnxruntime or onnx."""
    try:
        ort = require_onnxruntime(f"--compare {name}")
        require_onnx(f"--compare {name} (exporting the model to ONNX)")
        if name == "onnxruntime_int8":
            import onnxruntime.quantization  # noqa: F401
    except UserError as exc:
        raise Unavailable(str(exc)) from None
    except ImportError as exc:
        raise Unavailable(f"onnxruntime.quantization does not import ({exc})") from None
    return getattr(ort, "__version__", "installed")


def make_runners(args, notes):
    """The implementations to measure (``ours`` first) and the unavailable ones {name: reason}."""
    runners, unavailable = [], {}
    runners.append(MindSporeRunner(args, "ours", "mindcv_res2net", _ours_builder(args)))
    if args.task == "infer":
        runners.append(MindSporeRunner(args, "ours_optimized", "mindcv_res2net + optimize_for_inference",
                                       _ours_builder(args), optimize=True))
    if args.task == "train" and getattr(args, "frozen_stages", -1) >= 0:
        k = args.frozen_stages
        runners.append(MindSporeRunner(args, f"ours_frozen{k}", f"mindcv_res2net, frozen_stages {k} + norm_eval",
                                       _frozen_builder(args, k)))
    refs = list(args.references)
    if "timm" in refs and not _timm_importable():
        notes.append("timm is not importable here (it needs torchvision, which is absent): the torch.nn "
                     "reference (mindcv_res2net/benchmark/torch_models.py, reported as 'torch') is measured in its place")
        refs = [("torch" if r == "timm" else r) for r in refs]
        refs = [r for i, r in enumerate(refs) if r not in refs[:i]]
    for ref in refs:
        try:
            if ref == "mindcv":
                runners.append(MindSporeRunner(args, "mindcv", "MindCV " + str(version("mindcv")),
                                               _mindcv_builder(args)))
            elif ref == "torch":
                runners.append(TorchRunner(args, "torch", "PyTorch torch.nn reference (torch_models)",
                                           _torch_builder(args)))
            elif ref == "onnxruntime":
                runners.append(OnnxRuntimeRunner(args, _ours_builder(args), _onnxruntime_version()))
            elif ref == "onnxruntime_int8":
                runners.append(OnnxRuntimeInt8Runner(args, _ours_builder(args), _onnxruntime_version(ref)))
            else:
                runners.append(TorchRunner(args, "timm", "timm " + str(version("timm")), _timm_builder(args)))
        except Unavailable as exc:
            unavailable[ref] = str(exc)
    return runners, unavailable
