"""predict.py's command line: the parser and the checks made before MindSpore loads."""
import argparse

from ..deploy.runtimes import check_deployed_path
from ..errors import UserError
from .config import add_preprocessing_options, deploy_layers
from .options import Parser, add_debug, add_device_target, add_weights_options, positive_int

DESCRIPTION = "Classify images with a Res2Net model: top-k classes and probabilities per image."


def build_parser():
    parser = Parser(prog="predict.py", description=DESCRIPTION,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="*", metavar="IMAGE_OR_FOLDER", help="image files and/or folders")
    parser.add_argument("--model", default=None,
                        help="model name (see mindcv_res2net.list_models()); default: the one the checkpoint "
                             "names (train.py's do); not needed with --onnx_path")
    parser.add_argument("--onnx_path", default=None, help="an ONNX file written by export.py, run by onnxruntime")
    parser.add_argument("--mindir_path", default=None, help="a MINDIR file written by export.py, run by MindSpore")
    add_weights_options(parser, "use")
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
    """predict.py: parse, then predict (``deploy.prediction``)."""
    args = parse_args(argv)
    from ..deploy.prediction import predict  # imports MindSpore

    predict(args)
    return 0
