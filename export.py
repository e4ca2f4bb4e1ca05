"""Export a Res2Net model for deployment: MINDIR, ONNX or AIR (Ascend only).

The exported network is the inference-optimised one (``optimize_for_inference``: BatchNorm folded,
stage-block convolutions merged, only ONNX-exportable operators), compiled in graph mode.

    python export.py --model res2net50 --ckpt_path res2net50.ckpt --file_format MINDIR --out res2net50
    python export.py --ckpt_path ckpt/fashion_mnist/res2net50_best.ckpt --file_format ONNX   # a train.py checkpoint
    python export.py --model res2net50_v1b --pretrained --file_format ONNX --out v1b.onnx
    python export.py --model res2net50 --ckpt_path r50.ckpt --file_format ONNX --dynamic_batch false --batch_size 8
    python export.py --ckpt_path best.ckpt --file_format ONNX --quantize int8 --calib_data data/fashion_mnist

Batch dimension: ONNX files take any batch size by default (``--dynamic_batch false``: the fixed
``--batch_size``); MINDIR files have the fixed ``--batch_size`` unless ``--dynamic_batch`` is given.

Metadata: the file describes itself (``mindcv_res2net.deploy.runtimes``: model name, number of classes,
the evaluation preprocessing (the config keys, and input size, mean/std, crop_pct, interpolation),
label names, display names, toolkit version), in the ONNX file's ``metadata_props`` or the MINDIR
model's ``user_info`` map, so that ``validate.py --onnx_path`` / ``--mindir_path`` and ``predict.py
--onnx_path`` preprocess and label images as the model was trained. Preprocessing and model: each
from the first of the command line (``--image_size``, ``--crop_pct``, ``--interpolation``,
``--mean``, ``--std``, ``--in_channels``, ``--model``), the ``-c`` YAML file, the checkpoint
(train.py stores them), the model's defaults; one line says where each came from. Label names: the
class folders training used (stored in train.py's checkpoints), else the sorted ImageNet-1k WordNet
ids for 1000 classes. Display names: ``--class_names FILE``, else the checkpoint's, else ImageNet's
for 1000 classes, else ``class_<i>``. ONNX export needs the deployment extra
(``pip install 'mindcv_res2net[deploy]'``: onnx, onnxruntime).

int8 (``--quantize int8``, ONNX only; ``mindcv_res2net.deploy.quantize``): the float32 export is
quantized statically by onnxruntime's quantization tools (QDQ format, int8 per-channel weights,
uint8 activations), its activation ranges calibrated (``--calib_method``: minmax, entropy,
percentile) on ``--calib_images`` images (default 512) drawn with a fixed seed from ``--calib_data``
(a data root with ``train/``, or any folder of images), each through the model's evaluation
transform, the one the file's metadata states. The metadata also records the quantization
(``quantization``: scheme, calibration method, folder and number of images).

``--out``: the file to write; the format's suffix (.mindir / .onnx / .air) is added when missing.
The file is written under a temporary name and renamed, so a kill never leaves a partial file
under the final name. A user's mistake prints one line (``error: ...``) and exits with status 2.
"""
from mindcv_res2net.cli import run_main
from mindcv_res2net.cli.export_args import main

if __name__ == "__main__":
    run_main(main)
