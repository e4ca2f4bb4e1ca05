"""export.py's command line: the parser and the checks made before MindSpore loads."""
import argparse
import os

from ..deploy.quantize import CALIB_METHODS, DEFAULT_CALIB_IMAGES, calibration_files
from ..deploy.runtimes import EXPORT_SUFFIXES, output_path, require_onnx
from ..errors import UserError
from .config import add_preprocessing_options, deploy_layers
from .options import (BoolFlag, Parser, add_debug, add_device_target, add_weights_options, non_negative_int,
                      positive_int)

DESCRIPTION = "Export a Res2Net model for deployment: MINDIR, ONNX or AIR (Ascend only)."


def build_parser():
    parser = Parser(prog="export.py", description=DESCRIPTION,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model name (see mindcv_res2net.list_models()); default: the "
                                                       "one the checkpoint names (train.py's do)")
    add_weights_options(parser, "load")
    parser.add_argument("--num_classes", type=non_negative_int, default=None,
                        help="classifier outputs (default: the checkpoint's, else 1000; 0: pooled features)")
    parser.add_argument("--in_channels", type=positive_int, default=None,
                        help="input channels (default: the checkpoint's, else 3)")
    parser.add_argument("--image_size", type=positive_int, default=None,
                        help="input height and width (default: the checkpoint's, else the model's, 224; DLA: a "
                             "multiple of 32)")
    add_preprocessing_options(parser)
    parser.add_argument("--batch_size", type=positive_int, default=1, help="batch size of the exported input")
    parser.add_argument("--file_format", type=str.upper, default="MINDIR", choices=sorted(EXPORT_SUFFIXES),
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
    args.dynamic_batch = args.file_format == "ONNX" if args.dynamic_batch is None else args.dynamic_batch
    if args.dynamic_batch and args.file_format == "AIR":
        raise UserError("--dynamic_batch is for --file_format ONNX or MINDIR only")
    if args.given_model:
        output_path(args.out, args.given_model, args.file_format)  # a bad --out, before any work
    if args.file_format == "ONNX":
        require_onnx("export.py --file_format ONNX (the file's metadata and variable batch)")
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


def main(argv):
    """export.py: parse, then export (``deploy.export_model``)."""
    args = parse_args(argv)
    from ..deploy.export_model import export_model  # imports MindSpore

    export_model(args)
    return 0
