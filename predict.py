"""Classify images with a Res2Net model: top-k classes and probabilities per image.

    python predict.py --model res2net50 --pretrained photos/ cat.jpg --topk 5
    python predict.py --ckpt_path ckpt/fashion_mnist/res2net50_best.ckpt shirt.png    # a train.py checkpoint
    python predict.py --model res2net50_v1b --ckpt_path finetuned.ckpt images/ --json preds.json
    python predict.py --model res2net50 --ckpt_path r50.ckpt img.png --json -     # JSON on stdout
    python predict.py --onnx_path res2net50.onnx photos/          # the exported file, in onnxruntime

Inputs: image files and folders (searched recursively for image files, following symbolic
links; each real folder is walked once, so link cycles end, and each file is listed once).
Every image is decoded whatever its mode (RGB, grey, palette, alpha, CMYK, 16-bit,
EXIF-rotated; images other than JPEG above 40 MP are refused, see the data package's
``decode.MAX_NON_JPEG_PIXELS``) and preprocessed exactly as validate.py does, by the same
evaluation transform (``data.transforms.EvalPreprocessing``). An unreadable file is named in a
warning on stderr and skipped. The network runs inference-optimised (``optimize_for_inference``).

Preprocessing (dataset, image size, crop_pct, interpolation, mean, std, channels) and the model:
each from the first of the command line (``--image_size``, ``--crop_pct``, ``--interpolation``,
``--mean``, ``--std``, ``--in_channels``, ``--model``), the ``-c`` YAML file (train.py's or
validate.py's), the checkpoint (train.py stores how its model was evaluated, and its name) or the
exported file's metadata, the model's defaults (MindCV checkpoints store none: 224 px, crop 0.875,
ImageNet mean/std). One line on stderr says where each came from.

Class names: ``--class_names FILE`` (one per line), else the names saved with a fine-tuned
checkpoint (its class-folder names) or the exported file's display names, else the ImageNet-1k
names for 1000-class models, else ``class_<i>``.

Exported files: ``--onnx_path FILE`` (onnxruntime, ``pip install 'mindcv_res2net[deploy]'``) or
``--mindir_path FILE`` (MindSpore) instead of ``--model`` and weights. The file's metadata (written
by export.py) gives the model name, class names and preprocessing; the output is the same.
A user's mistake prints one line (``error: ...``) and exits with status 2.
"""
import argparse

from mindcv_res2net.cli import run_main
from mindcv_res2net.cli.config import add_preprocessing_options, deploy_layers
from mindcv_res2net.cli.options import BoolFlag, Parser, add_debug, add_device_target, positive_int
from mindcv_res2net.errors import UserError
from mindcv_res2net.runtimes import check_deployed_path


def build_parser():
    parser = Parser(prog="predict.py", description=__doc__.split("\n\n")[0],
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="*", metavar="IMAGE_OR_FOLDER", help="image files and/or folders")
    parser.add_argument("--model", default=None,
                        help="model name (see mindcv_res2net.list_models()); default: the one the checkpoint "
                             "names (train.py's do); not needed with --onnx_path")
    parser.add_argument("--onnx_path", default=None, help="an ONNX file written by export.py, run by onnxruntime")
    parser.add_argument("--mindir_path", default=None, help="a MINDIR file written by export.py, run by MindSpore")
    parser.add_argument("--ckpt_path", default=None, help="MindSpore checkpoint (ours or MindCV's) or PyTorch file")
    parser.add_argument("--pretrained", action=BoolFlag, help="use the published pretrained weights")
    parser.add_argument("--ema", action=BoolFlag, help="use the checkpoint's EMA weights")
    parser.add_argument("--num_classes", type=positive_int, default=None,
                        help="classifier outputs (default: the checkpoint's, else 1000)")
    parser.add_argument("--in_channels", type=positive_int, default=None,
                        help="input channels, 3 (RGB) or 1 (grey) (default: the checkpoint's, else 3)")
    parser.add_argument("--image_size", type=positive_int, default=None,
                        help="crop size (default: the checkpoint's, else the model's, 224; DLA: a multiple of 32)")
    add_preprocessing_options(parser)
    parser.add_argument("--topk", type=positive_int, default=5, help="classes shown per image")
    parser.add_argument("--batch_size", type=positive_int, default=8, help="images per forward pass")
    parser.add_argument("--class_names", default=None, help="text file with one class name per line")
    parser.add_argument("--json", default=None, help="also write the predictions as JSON to this file ('-': stdout)")
    parser.add_argument("--mode", type=int, choices=(0, 1), default=0, help="0: GRAPH_MODE, 1: PYNATIVE_MODE")
    add_device_target(parser)
    add_debug(parser)
    return parser


def parse_args(argv):
    """The options, checked before MindSpore loads: images given, and exactly one source of the
    model (--model with weights, or one exported file)."""
    args = build_parser().parse_args(argv)
    if not args.inputs:
        raise UserError("no images given: pass image files and/or folders, e.g. python predict.py --model "
                        "res2net50 --pretrained photo.jpg")
    files = [opt for opt, path in (("--onnx_path", args.onnx_path), ("--mindir_path", args.mindir_path)) if path]
    if len(files) > 1:
        raise UserError("pass one exported file: --onnx_path or --mindir_path, not both")
    if files:
        weights = [opt for opt, on in (("--ckpt_path", args.ckpt_path), ("--pretrained", args.pretrained),
                                       ("--ema", args.ema)) if on]
        if weights:
            raise UserError(f"{files[0]} runs the exported file with the weights it holds: leave out {weights[0]}")
        check_deployed_path(args.onnx_path or args.mindir_path, files[0])
    args.layers = deploy_layers(args)
    if files:
        return args
    if not args.ckpt_path and not args.pretrained:
        raise UserError("no weights: pass --ckpt_path FILE (a MindSpore checkpoint, ours or MindCV's) or "
                        "--pretrained")
    if not args.ckpt_path and not any(keys.get("model") for _, keys in args.layers):
        raise UserError("no model: pass --model NAME with --pretrained, --ckpt_path FILE (train.py's "
                        "checkpoints name their model), or an exported file with --onnx_path FILE")
    return args


def main(argv):
    args = parse_args(argv)
    from mindcv_res2net.prediction import predict  # imports MindSpore

    predict(args)
    return 0


if __name__ == "__main__":
    run_main(main)
