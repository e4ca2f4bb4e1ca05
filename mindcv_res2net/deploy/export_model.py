"""export.py's work: build the model from its weights, write it as MINDIR / ONNX / AIR (or int8
ONNX) with its metadata, under a temporary name renamed into place."""
import os
import shutil
import sys
import tempfile

import mindspore as ms
import numpy as np

from ..data.transforms import describe_preprocessing
from ..errors import UserError
from ..weights.checkpoint_file import open_checkpoint
from .class_names import resolve_class_names
from .inference_model import (build_inference_model, check_image_size, checkpoint_metadata, export_labels,
                              model_from_checkpoint, model_preprocessing)
from .quantize import calibration_arrays, calibration_root, quantization_metadata, quantize_onnx_file
from .runtimes import export_network, make_metadata, output_path


def _check_device(file_format):
    target = ms.get_current_device().device_target
    if file_format == "AIR" and target != "Ascend":
        raise UserError(f"AIR export needs an Ascend device, but MindSpore runs on {target}. "
                        f"Use --file_format MINDIR or ONNX (or run on Ascend with --device_target Ascend).")
    return target


def _build(args):
    """``(network, info, preprocessing, its sources)``; the model from --model / -c, else the checkpoint."""
    ckpt = open_checkpoint(args.ckpt_path) if args.ckpt_path else None  # read once, passed down
    meta = checkpoint_metadata(ckpt) if ckpt else {}
    given_by = next((source for source, keys in args.layers if keys.get("model")), "--model")
    model = model_from_checkpoint(args.given_model, ckpt, meta, given_by)
    if args.image_size is not None:
        check_image_size(model, args.image_size)
    if not args.ckpt_path and not args.pretrained:
        print("warning: neither --ckpt_path nor --pretrained given: exporting randomly initialised weights",
              file=sys.stderr)
    value = {key: next((keys[key] for _, keys in args.layers if keys.get(key) is not None), None)
             for key in ("num_classes", "in_channels")}
    net, info = build_inference_model(model, ckpt_path=ckpt, pretrained=args.pretrained,
                                      num_classes=value["num_classes"], in_channels=value["in_channels"],
                                      use_ema=args.ema, meta=meta)
    prep, sources = model_preprocessing(args.layers, info, ckpt)
    return net, info, prep, sources


def _metadata(args, info, prep):
    labels, label_source, display = None, None, None
    if info["num_classes"] > 0:
        stored = info["meta"].get("class_names")
        labels, label_source = export_labels(info["num_classes"], stored)
        display = resolve_class_names(info["num_classes"], class_names_file=args.class_names, saved_names=stored,
                                      source=f"checkpoint {args.ckpt_path}")
    return make_metadata(info["model"], info["num_classes"], prep.input_size, preprocessing=prep,
                         label_names=labels, label_source=label_source, display_names=display,
                         weights=info["weights"], mindspore_version=ms.__version__)


def export_model(args):
    """Build the model ``args`` describe (``cli.export_args.parse_args``), write it as
    ``args.file_format`` (int8 with ``args.quantize``) and print what was written."""
    dynamic = args.dynamic_batch
    ms.set_context(mode=ms.GRAPH_MODE)
    if args.device_target != "auto":
        ms.set_device(args.device_target)
    _check_device(args.file_format)

    net, info, prep, sources = _build(args)
    path = output_path(args.out, info["model"], args.file_format)
    shape = (args.batch_size, *prep.input_size)
    if dynamic and args.file_format == "MINDIR":
        x = ms.Tensor(shape=[None, *shape[1:]], dtype=ms.float32)
    else:
        x = ms.Tensor(np.zeros(shape, np.float32))
    output = "logits" if info["num_classes"] > 0 else "features"
    print(describe_preprocessing(prep, sources))
    metadata = _metadata(args, info, prep)
    if args.quantize:
        _export_int8(args, net, x, path, output, dynamic, metadata, prep)
    else:
        export_network(net, (x,), path, args.file_format, input_names=["input"], output_names=[output],
                       dynamic_batch=dynamic, metadata=metadata)
    batch = "N" if dynamic else str(args.batch_size)
    size = prep.image_resize
    kind = f"int8 ({args.calib_method} calibration on {args.calib_images} images) " if args.quantize else ""
    print(f"exported {info['model']} ({info['weights']}; {info['num_classes']} classes, input "
          f"{batch}x{info['in_channels']}x{size}x{size}) as {kind}{args.file_format} to {path}")
    return path


def _export_int8(args, net, x, path, output, dynamic, metadata, prep):
    """The float32 ONNX file in a temporary folder beside ``path``, quantized into ``path``."""
    import onnxruntime

    arrays = calibration_arrays(args.calib_files, prep, args.calib_images, folder=calibration_root(args.calib_data))
    staging = tempfile.mkdtemp(prefix=".export_fp32_", dir=os.path.dirname(path))
    try:
        fp32 = export_network(net, (x,), os.path.join(staging, "model.onnx"), "ONNX", input_names=["input"],
                              output_names=[output], dynamic_batch=dynamic, metadata=metadata)
        info = quantization_metadata(args.calib_method, args.calib_data, args.calib_images, onnxruntime.__version__)
        quantize_onnx_file(fp32, path, arrays, method=args.calib_method, metadata={"quantization": info})
    finally:
        shutil.rmtree(staging, ignore_errors=True)
