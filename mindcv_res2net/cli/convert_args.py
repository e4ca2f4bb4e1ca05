"""The command line of ``python -m mindcv_res2net.convert``: official Res2Net / timm PyTorch weights
(.pth/.pt/.bin/.safetensors) into a MindSpore checkpoint (:mod:`mindcv_res2net.weights.torch_conversion`)."""
import logging

import numpy as np

from ..errors import UserError
from ..weights.torch_conversion import convert_file, guess_model_name, read_state_dict_file
from .options import BoolFlag, Parser, add_debug


def _build_parser():
    p = Parser(
        prog="python -m mindcv_res2net.convert",
        description="Convert official Res2Net / timm PyTorch weights (.pth/.pt/.bin/.safetensors) into a "
                    "MindSpore checkpoint for mindcv_res2net.")
    p.add_argument("src", help="PyTorch state dict (.pth/.pt/.bin) or .safetensors file")
    p.add_argument("--model", "-m", default=None,
                   help="architecture, e.g. res2net50, res2net50_v1b (= timm res2net50d), res2net_dla60; "
                        "default: guessed from the weights")
    p.add_argument("--out", "-o", required=True, help="output MindSpore checkpoint (.ckpt)")
    p.add_argument("--num-classes", "--num_classes", type=int, default=None,
                   help="classes of the target model (default: the checkpoint's; another number drops the "
                        "classifier)")
    p.add_argument("--ema", action=BoolFlag, help="convert timm's EMA weights (state_dict_ema)")
    add_debug(p)
    return p


def main(argv=None):
    args = _build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    model = args.model
    if model is None:
        state = read_state_dict_file(args.src, use_ema=args.ema)
        model = guess_model_name({k: np.shape(v) for k, v in state.items()})
        if model is None:
            raise UserError(f"could not tell the architecture of {args.src}: pass --model NAME")
        print(f"guessed architecture: {model}")
    dst, notes = convert_file(args.src, model, args.out, num_classes=args.num_classes, use_ema=args.ema)
    for note in notes:
        print(f"note: {note}")
    print(f"wrote {dst} ({model})")
    return 0
