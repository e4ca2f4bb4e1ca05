"""``python -m mindcv_res2net.data.prepare``: write Fashion-MNIST / MNIST as PNG class folders, or
MindRecord copies of an ImageFolder tree (``prepare mindrecord``). ``--help`` lists the options.

The command line is :mod:`mindcv_res2net.cli.prepare_args`; the work is
:mod:`mindcv_res2net.data.preparation` and :mod:`mindcv_res2net.data.readers.mindrecord_writer`.
"""
from mindcv_res2net.cli import run_main
from mindcv_res2net.cli.prepare_args import main

if __name__ == "__main__":
    run_main(main)
