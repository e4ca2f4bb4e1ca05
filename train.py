"""Train a Res2Net model.

    python train.py -c configs/res2net/res2net_fashion_mnist_cpu.yaml
    mpirun -n 8 python train.py -c configs/res2net/res2net_50_gpu.yaml --data_dir /path/to/imagenet
    python train.py -c CONFIG --resume auto        # continue an interrupted run
    python train.py -c CONFIG --dry_run            # print the resolved configuration
"""
import config
from mindcv_res2net.cli import run_main


def main(argv):
    args = config.parse_args(argv, script="train")
    if args.dry_run:
        print(config.dump_config(args), end="")
        return 0
    from mindcv_res2net.training.trainer import train

    train(args, config_yaml=config.dump_config(args))
    return 0


if __name__ == "__main__":
    run_main(main, joins_cluster=True)
