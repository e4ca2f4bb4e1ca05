"""Evaluate a checkpoint, or the file it was exported to: top-1, top-5 and loss over every
validation image.

    python validate.py -c configs/res2net/res2net_50_gpu.yaml --data_dir /path/to/imagenet --ckpt_path res2net50.ckpt
    python validate.py --model res2net50 --dataset fashion_mnist --data_dir data/fashion_mnist \
        --num_classes 10 --ckpt_path ckpt/fashion_mnist/res2net50_best.ckpt --json result.json
    python validate.py --data_dir /path/to/imagenet --onnx_path res2net50.onnx            # onnxruntime
    python validate.py --data_dir /path/to/imagenet --mindir_path res2net50.mindir        # MindSpore GraphCell
    python validate.py --data_dir /path/to/imagenet --onnx_path res2net50.onnx --ckpt_path res2net50.ckpt

A checkpoint written by train.py brings its model name and the preprocessing it was evaluated with
(dataset, image size, crop_pct, interpolation, mean, std, channels), and so does an exported file
in its metadata: a key set on the command line or in the YAML file wins, then the checkpoint's,
then the file's, then the defaults. One log line says where each came from. A MindCV checkpoint
stores none: nothing changes for it. With
``--ckpt_path`` as well, both are evaluated on the same batches and reported; a file that gives an
image another top-1 class than the checkpoint (beyond ties) ends the run with an error.

    python validate.py --data_dir /path/to/imagenet --ckpt_path res2net50.ckpt --per_class --json out/result.json

``--per_class`` adds a per-class report of each evaluated model: support, recall (the class's
top-1), precision and F1 per class and their macro averages, and the confusion matrix, in the JSON
(``per_class``) and on the console (every class up to 20, else the 10 with the lowest recall); and
files in ``--per_class_dir`` (default: the folder of ``--json``, else ./per_class):
per_class.csv, confusion_matrix.csv, confusion_matrix.png (with matplotlib) and misclassified.csv
(path, true_class, predicted_class, confidence). With an exported file and a checkpoint, each
model's files carry its file name (confusion_matrix_res2net50.onnx.csv). The same under mpirun.
"""
import config
from mindcv_res2net.cli import run_main
from mindcv_res2net.cli.options import given_keys


def main(argv):
    args = config.parse_args(argv, script="validate")
    if args.dry_run:
        print(config.dump_config(args), end="")
        return 0
    from mindcv_res2net.evaluation.validation import validate

    validate(args, given_keys=given_keys(argv, args.config), cli_keys=given_keys(argv))
    return 0


if __name__ == "__main__":
    run_main(main, joins_cluster=True)
