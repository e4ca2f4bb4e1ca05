"""Export a Res2Net model for deployment: MINDIR, ONNX or AIR (Ascend only).

The exported network is the inference-optimised one (``optimize_for_inference``: BatchNorm folded,
stage-block convolutions merged, only ONNX-exportable operators), compiled in graph mode.

    python export.py --model res2net50 --ckpt_path res2net50.ckpt --file_format MINDIR --out res2net50
    python export.py --model res2net50_v1b --pretrained --file_format ONNX --out v1b.onnx --dynamic_batch

``--out``: the file to write; the format's suffix (.mindir / .onnx / .air) is added when missing.
The file is written under a temporary name and renamed, so a kill never leaves a partial file
under the final name. A user's mistake prints one line (``error: ...``) and exits with status 2.
"""
import argparse
import os
import re
import shutil
import sys
import tempfile

from mindcv_res2net.cli import run_main
from mindcv_res2net.errors import UserError

SUFFIXES = {"MINDIR": ".mindir", "ONNX": ".onnx", "AIR": ".air"}
# mindspore.export refuses file names outside this set of characters
_SAFE_NAME = re.compile(r"^[0-9a-zA-Z@_\-.:/\\]+$")


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UserError(f"{message} (see python export.py --help)")


def _bool(value):
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "y", "on"):
        return True
    if text in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def _positive_int(value):
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value!r}")
    return number


def _non_negative_int(value):
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value!r}")
    return number


def build_parser():
    parser = _Parser(prog="export.py", description=__doc__.split("\n\n")[0],
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model name (see mindcv_res2net.list_models())")
    parser.add_argument("--ckpt_path", default=None, help="MindSpore checkpoint (ours or MindCV's) or PyTorch file")
    parser.add_argument("--pretrained", nargs="?", const=True, default=False, type=_bool,
                        help="load the published pretrained weights")
    parser.add_argument("--ema", nargs="?", const=True, default=False, type=_bool,
                        help="use the checkpoint's EMA weights")
    parser.add_argument("--num_classes", type=_non_negative_int, default=None,
                        help="classifier outputs (default: the checkpoint's, else 1000; 0: pooled features)")
    parser.add_argument("--in_channels", type=_positive_int, default=None,
                        help="input channels (default: the checkpoint's, else 3)")
    parser.add_argument("--image_size", type=_positive_int, default=None,
                        help="input height and width (default: the model's, 224; DLA: a multiple of 32)")
    parser.add_argument("--batch_size", type=_positive_int, default=1, help="batch size of the exported input")
    parser.add_argument("--file_format", type=str.upper, default="MINDIR", choices=sorted(SUFFIXES),
                        help="MINDIR, ONNX or AIR (AIR needs an Ascend device)")
    parser.add_argument("--out", default=None, help="output file (default: ./<model>.<format suffix>)")
    parser.add_argument("--dynamic_batch", nargs="?", const=True, default=False, type=_bool,
                        help="ONNX only: a variable batch dimension")
    parser.add_argument("--device_target", default="auto", choices=("auto", "CPU", "GPU", "Ascend"),
                        help="MindSpore device (auto: MindSpore's default)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


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
    target = ms.get_context("device_target")
    if file_format == "AIR" and target != "Ascend":
        raise UserError(f"AIR export needs an Ascend device, but MindSpore runs on {target}. "
                        f"Use --file_format MINDIR or ONNX (or run on Ascend with --device_target Ascend).")
    return target


def _fix_onnx_batch_dim(path, name="batch"):
    """Mark dim 0 of every ONNX output as variable (MindSpore writes the traced batch size there)."""
    try:
        import onnx
    except ImportError:
        return
    model = onnx.load(path)
    for output in model.graph.output:
        dims = output.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = name
    onnx.save(model, path)


def export_network(net, inputs, path, file_format, input_names=None, output_names=None, dynamic_batch=False):
    """Write ``net`` traced on ``inputs`` to ``path`` (suffix included) atomically."""
    import mindspore as ms

    final_dir = os.path.dirname(path)
    os.makedirs(final_dir, exist_ok=True)
    # MindSpore checks the file name against a character set: stage where that holds.
    stage_root = final_dir if _SAFE_NAME.match(final_dir + "/") else None
    staging = tempfile.mkdtemp(prefix=".export_tmp_", dir=stage_root)
    try:
        base = os.path.join(staging, "model")
        staged = base + SUFFIXES[file_format]
        if file_format == "ONNX":
            kwargs = {"input_names": list(input_names or []), "output_names": list(output_names or [])}
            if dynamic_batch:
                kwargs["dynamic_axes"] = {name: {0: "batch"} for name in kwargs["input_names"]}
            ms.onnx.export(net, *inputs, file_name=staged, **kwargs)
            if dynamic_batch:
                _fix_onnx_batch_dim(staged)
        else:
            ms.export(net, *inputs, file_name=base, file_format=file_format)
        if not os.path.isfile(staged):
            produced = sorted(os.listdir(staging))
            raise RuntimeError(f"MindSpore wrote {produced} instead of {os.path.basename(staged)}")
        if os.path.isdir(staging) and len(os.listdir(staging)) > 1:
            extra = [f for f in os.listdir(staging) if f != os.path.basename(staged)]
            raise UserError(f"the model is too large for one {file_format} file (MindSpore also wrote {extra}); "
                            f"export.py writes single-file models only")
        if stage_root is None:  # staged elsewhere: copy next to the target first, then rename
            tmp = path + ".tmp"
            shutil.copyfile(staged, tmp)
            os.replace(tmp, path)
        else:
            os.replace(staged, path)
        os.chmod(path, 0o644 & ~_umask())
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def main(argv):
    args = build_parser().parse_args(argv)
    if args.dynamic_batch and args.file_format != "ONNX":
        raise UserError("--dynamic_batch is for --file_format ONNX only")
    path = output_path(args.out, args.model, args.file_format)

    import numpy as np
    import mindspore as ms

    ms.set_context(mode=ms.GRAPH_MODE)
    if args.device_target != "auto":
        ms.set_context(device_target=args.device_target)
    _check_device(args.file_format)

    from mindcv_res2net.inference import build_inference_model, check_image_size
    from mindcv_res2net.models import create_model, is_model

    if not is_model(args.model):
        create_model(args.model)  # the factory's UserError, with suggestions
    if args.image_size is not None:
        check_image_size(args.model, args.image_size)
    if not args.ckpt_path and not args.pretrained:
        print("warning: neither --ckpt_path nor --pretrained given: exporting randomly initialised weights",
              file=sys.stderr)
    net, info = build_inference_model(args.model, ckpt_path=args.ckpt_path, pretrained=args.pretrained,
                                      num_classes=args.num_classes, in_channels=args.in_channels,
                                      use_ema=args.ema)
    cfg_size = tuple(info["default_cfg"].get("input_size", (3, 224, 224)))[-1]
    size = check_image_size(args.model, args.image_size or cfg_size)
    x = ms.Tensor(np.zeros((args.batch_size, info["in_channels"], size, size), np.float32))
    output = "logits" if info["num_classes"] > 0 else "features"
    export_network(net, (x,), path, args.file_format, input_names=["input"], output_names=[output],
                   dynamic_batch=args.dynamic_batch)
    print(f"exported {args.model} ({info['weights']}; {info['num_classes']} classes, input "
          f"{args.batch_size}x{info['in_channels']}x{size}x{size}) as {args.file_format} to {path}")
    return 0


if __name__ == "__main__":
    run_main(main)
