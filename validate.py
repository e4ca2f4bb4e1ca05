"""Evaluate a checkpoint: top-1, top-5 and loss over every validation image.

    python validate.py -c configs/res2net/res2net_50_gpu.yaml --data_dir /path/to/imagenet --ckpt_path res2net50.ckpt
    python validate.py --model res2net50 --dataset fashion_mnist --data_dir data/fashion_mnist \
        --num_classes 10 --ckpt_path ckpt/fashion_mnist/res2net50_best.ckpt --json result.json
"""
from mindcv_res2net.cli import run_main


def main(argv):
    import config

    args = config.parse_args(argv, script="validate")
    if args.dry_run:
        print(config.dump_config(args), end="")
        return 0
    from mindcv_res2net.engine.validation import validate

    validate(args)
    return 0


if __name__ == "__main__":
    run_main(main)
