"""``python -m mindcv_res2net.convert SRC --out DST.ckpt``: PyTorch Res2Net weights to a MindSpore checkpoint.

The command line is :mod:`mindcv_res2net.cli.convert_args`; the conversion is
:mod:`mindcv_res2net.weights.torch_conversion`.
"""
from mindcv_res2net.cli import run_main
from mindcv_res2net.cli.convert_args import main

if __name__ == "__main__":
    run_main(main)
