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
from mindcv_res2net.cli import run_main
from mindcv_res2net.cli.predict_args import main

if __name__ == "__main__":
    run_main(main)
