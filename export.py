"""Export a Res2Net model for deployment: MINDIR, ONNX or AIR (Ascend only).

The exported network is the inference-optimised one (``optimize_for_inference``: BatchNorm folded,
stage-block convolutions merged, only ONNX-exportable operators), compiled in graph mode.

    python export.py --model res2net50 --ckpt_path res2net50.ckpt --file_format MINDIR --out res2net50
    python export.py --ckpt_path ckpt/fashion_mnist/res2net50_best.ckpt --file_format ONNX   # a train.py checkpoint
    python export.py --model res2net50_v1b --pretrained --file_format ONNX --out v1b.onnx
    python export.py --model res2net50 --ckpt_path r50.ckpt --file_format ONNX --dynamic_batch false --batch_size 8
    python export.py --ckpt_path best.ckpt --file_format ONNX --quantize int8 --calib_data data/fashion_mnist

Batch dimension: ONNX files take any batch size by default (``--dynamic_batch false``: the fixed
``--batch_size``); MINDIR files have the fixed ``--batch_size`` unless ``--dynamic_batch`` is given.

Metadata: the file describes itself (``mindcv_res2net.runtimes``: model name, number of classes,
the evaluation preprocessing (the config keys, and input size, mean/std, crop_pct, interpolation),
label names, display names, toolkit version), in the ONNX file's ``metadata_props`` or the MINDIR
model's ``user_info`` map, so that ``validate.py --onnx_path`` / ``--mindir_path`` and ``predict.py
--onnx_path`` preprocess and label images as the model was trained. Preprocessing and model: each
from the first of the command line (``--image_size``, ``--crop_pct``, ``--interpolation``,
``--mean``, ``--std``, ``--in_channels``, ``--model``), the ``-c`` YAML file, the checkpoint
(train.py stores them), the model's defaults; one line says where each came from. Label names: the
class folders training used (stored in train.py's checkpoints), else the sorted ImageNet-1k WordNet
ids for 1000 classes. Display names: ``--class_names FILE``, else the checkpoint's, else ImageNet's
for 1000 classes, else ``class_<i>``. ONNX export needs the deployment extra
(``pip install 'mindcv_res2net[deploy]'``: onnx, onnxruntime).

int8 (``--quantize int8``, ONNX only; ``mindcv_res2net.quantize``): the float32 export is
quantized statically by onnxruntime's quantization tools (QDQ format, int8 per-channel weights,
uint8 activations), its activation ranges calibrated (``--calib_method``: minmax, entropy,
percentile) on ``--calib_images`` images (default 512) drawn with a fixed seed from ``--calib_data``
(a data root with ``train/``, or any folder of images), each through the model's evaluation
transform, the one the file's metadata states. The metadata also records the quantization
(``quantization``: scheme, calibration method, folder and number of images).

``--out``: the file to write; the format's suffix (.mindir / .onnx / .air) is added when missing.
The file is written under a temporary name and renamed, so a kill never leaves a partial file
under the final name. A user's mistake prints one line (``error: ...``) and exits with status 2.
"""
import argparse
import os
import shutil
import sys
import tempfile

import numpy as np

from mindcv_res2net.class_names import resolve_class_names
from mindcv_res2net.cli import run_main
from mindcv_res2net.cli.config import add_preprocessing_options, deploy_layers
from mindcv_res2net.cli.options import (BoolFlag, Parser, add_debug, add_device_target, non_negative_int,
                                        positive_int)
from mindcv_res2net.errors import UserError
from mindcv_res2net.quantize import (CALIB_METHODS, DEFAULT_CALIB_IMAGES, calibration_arrays, calibration_files,
                                     calibration_root, quantization_metadata, quantize_onnx_file)
from mindcv_res2net.runtimes import EXPORT_SUFFIXES as SUFFIXES
from mindcv_res2net.runtimes import export_network, make_metadata, require_onnx


def build_parser():
    parser = Parser(prog="export.py", description=__doc__.split("\n\n")[0],
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model name (see mindcv_res2net.list_models()); default: the "
                                                       "one the checkpoint names (train.py's do)")
    parser.add_argument("--ckpt_path", default=None, help="MindSpore checkpoint (ours or MindCV's) or PyTorch file")
    parser.add_argument("--pretrained", action=BoolFlag, help="load the published pretrained weights")
    parser.add_argument("--ema", action=BoolFlag, help="use the checkpoint's EMA weights")
    parser.add_argument("--num_classes", type=non_negative_int, default=None,
                        help="classifier outputs (default: the checkpoint's, else 1000; 0: pooled features)")
    parser.add_argument("--in_channels", type=positive_int, default=None,
                        help="input channels (default: the checkpoint's, else 3)")
    parser.add_argument("--image_size", type=positive_int, default=None,
                        help="input height and width (default: the checkpoint's, else the model's, 224; DLA: a "
                             "multiple of 32)")
    add_preprocessing_options(parser)
    parser.add_argument("--batch_size", type=positive_int, default=1, help="batch size of the exported input")
    parser.add_argument("--file_format", type=str.upper, default="MINDIR", choices=sorted(SUFFIXES),
                        help="MINDIR, ONNX or AIR (AIR needs an Ascend device)")
    parser.add_argument("--out", default=None, help="output file (default: ./<model>.<format suffix>)")
    parser.add_argument("--dynamic_batch", action=BoolFlag, default=None,
                        help="a variable batch dimension (default: true for ONNX, false for MINDIR; not AIR)")
    parser.add_argument("--class_names", default=None,
                        help="text file with one class name per line, stored in the file's metadata "
                             "(default: the checkpoint's, else ImageNet's for 1000 classes)")
    add_quantize_options(parser)
    add_device_target(parser)
    add_debug(parser)
    return parser


def add_quantize_options(parser):
    group = parser.add_argument_group("int8 quantization (ONNX)")
    group.add_argument("--quantize", type=str.lower, default=None, choices=["int8"],
                       help="int8: static int8 quantization of the ONNX file (QDQ, per-channel weights)")
    group.add_argument("--calib_data", default=None, metavar="DIR",
                       help="calibration images: a data root with train/, or any folder of images")
    group.add_argument("--calib_images", type=positive_int, default=None,
                       help=f"calibration images drawn from --calib_data (default {DEFAULT_CALIB_IMAGES})")
    group.add_argument("--calib_method", type=str.lower, default=None, choices=sorted(CALIB_METHODS),
                       help="how activation ranges are calibrated (default minmax)")


def output_path(out, model, file_format):
    """The final file name: ``out`` with the format's suffix added when missing."""
    suffix = SUFFIXES[file_format]
    path = out or model
    if path.endswith(("/", os.sep)) or os.path.isdir(path):
        raise UserError(f"--out must be a file name, got the directory {path!r}: e.g. --out {os.path.join(path, model)}")
    if not path.lower().endswith(suffix):
        path += suffix
    return os.path.abspath(path)


def _check_device(file_format):
    import mindspore as ms
    target = ms.get_current_device().device_target
    if file_format == "AIR" and target != "Ascend":
        raise UserError(f"AIR export needs an Ascend device, but MindSpore runs on {target}. "
                        f"Use --file_format MINDIR or ONNX (or run on Ascend with --device_target Ascend).")
    return target


def parse_args(argv):
    """The options, checked before MindSpore loads."""
    args = build_parser().parse_args(argv)
    args.layers = deploy_layers(args)
    args.given_model = next((keys["model"] for _, keys in args.layers if keys.get("model")), None)
    if not args.given_model and not args.ckpt_path:
        raise UserError("no model: pass --model NAME, or --ckpt_path FILE of a checkpoint that names its model "
                        "(train.py's do)")
    if args.class_names and not os.path.isfile(args.class_names):
        raise UserError(f"class-names file not found: {args.class_names}. Pass a text file with one class "
                        f"name per line.")
    _check_quantize_options(args)
    return args


def _check_quantize_options(args):
    """The --quantize options, and the calibration folder (its image files, in their seeded order,
    in ``args.calib_files``), before any model work."""
    args.calib_files = None
    if not args.quantize:
        given = [f"--{k}" for k in ("calib_data", "calib_images", "calib_method") if getattr(args, k) is not None]
        if given:
            raise UserError(f"{', '.join(given)} only apply to --quantize int8: add --quantize int8 (ONNX), or "
                            f"leave them out")
        return
    if args.file_format != "ONNX":
        raise UserError(f"--quantize int8 writes ONNX files only, not {args.file_format}: add --file_format ONNX")
    if not args.calib_data:
        raise UserError("--quantize int8 needs calibration images: pass --calib_data DIR (the training data root, "
                        "or a folder of training images)")
    args.calib_images = args.calib_images or DEFAULT_CALIB_IMAGES
    args.calib_method = args.calib_method or "minmax"
    args.calib_files = calibration_files(args.calib_data, args.calib_images)


def _build(args):
    """``(network, info, preprocessing, its sources)``; the model from --model / -c, else the checkpoint."""
    from mindcv_res2net.deploy import (build_inference_model, check_image_size, checkpoint_metadata,
                                       model_from_checkpoint, model_preprocessing)

    meta = checkpoint_metadata(args.ckpt_path) if args.ckpt_path else {}
    given_by = next((source for source, keys in args.layers if keys.get("model")), "--model")
    model = model_from_checkpoint(args.given_model, args.ckpt_path, meta, given_by)
    if args.image_size is not None:
        check_image_size(model, args.image_size)
    if not args.ckpt_path and not args.pretrained:
        print("warning: neither --ckpt_path nor --pretrained given: exporting randomly initialised weights",
              file=sys.stderr)
    value = {key: next((keys[key] for _, keys in args.layers if keys.get(key) is not None), None)
             for key in ("num_classes", "in_channels")}
    net, info = build_inference_model(model, ckpt_path=args.ckpt_path, pretrained=args.pretrained,
                                      num_classes=value["num_classes"], in_channels=value["in_channels"],
                                      use_ema=args.ema, meta=meta)
    prep, sources = model_preprocessing(args.layers, info, args.ckpt_path)
    return net, info, prep, sources


def _metadata(args, info, prep):
    import mindspore as ms
    from mindcv_res2net.deploy import export_labels

    labels, label_source, display = None, None, None
    if info["num_classes"] > 0:
        stored = info["meta"].get("class_names")
        labels, label_source = export_labels(info["num_classes"], stored)
        display = resolve_class_names(info["num_classes"], class_names_file=args.class_names, saved_names=stored,
                                      source=f"checkpoint {args.ckpt_path}")
    return make_metadata(info["model"], info["num_classes"], prep.input_size, preprocessing=prep,
                         label_names=labels, label_source=label_source, display_names=display,
                         weights=info["weights"], mindspore_version=ms.__version__)


def main(argv):
    args = parse_args(argv)
    dynamic = args.file_format == "ONNX" if args.dynamic_batch is None else args.dynamic_batch
    if dynamic and args.file_format == "AIR":
        raise UserError("--dynamic_batch is for --file_format ONNX or MINDIR only")
    if args.given_model:
        output_path(args.out, args.given_model, args.file_format)  # a bad --out, before any work
    if args.file_format == "ONNX":
        require_onnx("export.py --file_format ONNX (the file's metadata and variable batch)")

    import mindspore as ms

    ms.set_context(mode=ms.GRAPH_MODE)
    if args.device_target != "auto":
        ms.set_device(args.device_target)
    _check_device(args.file_format)

    from mindcv_res2net.data.transforms import describe_preprocessing

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
    return 0


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


if __name__ == "__main__":
    run_main(main)
