"""``predict.py``'s work: the top-k classes of image files, from a model built from its weights or
from a file written by ``export.py`` (``--onnx_path`` / ``--mindir_path``).

- ``collect_images(inputs)``: the image files named or found in folders, each once.
- ``Preprocessor(image_size, in_channels, cfg, crop_pct)``: a file -> the CHW array the model
  takes, exactly as validate.py's evaluation pipeline makes it.
- ``predict_arrays(net, arrays, batch_size)``, ``softmax``, ``top_k``, ``format_table``.
- ``predict(args)``: predict.py's parsed options -> the table on stdout and/or the JSON result.

``predict(args)`` expects the checks ``predict.parse_args`` makes before MindSpore loads (images
given, one source of the model); it then checks the model name, the class-names file and the
inputs before building anything. The model comes from ``deploy.build_inference_model`` (a checkpoint or the
published weights) or ``runtimes.open_deployed`` (an exported file, whose metadata gives the
model name, class names and preprocessing); the class names from ``class_names``.
"""
import json
import os
import sys

import mindspore as ms
import numpy as np

from .atomic_io import write_text_atomic
from .class_names import resolve_class_names
from .data import decode
from .data.decode import IMAGE_EXTENSIONS
from .data.transforms import create_transforms
from .deploy import build_inference_model, check_image_size
from .errors import UserError
from .models import is_model
from .models.factory import create_model
from .models.registry import get_model_cfg
from .runtimes import DeployedModel, open_deployed

__all__ = ["collect_images", "Preprocessor", "softmax", "predict_arrays", "top_k", "format_table", "predict"]


# ------------------------------------------------------------------------------------------------
# inputs
# ------------------------------------------------------------------------------------------------

def _walk_images(folder):
    """Image files under ``folder``, sorted, following symbolic links to folders but entering each
    real folder once (a link cycle, or two links to one folder, is walked once)."""
    found = []
    visited = set()
    for root, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in visited:  # reached again through another link
            dirs[:] = []
            continue
        visited.add(real)
        dirs[:] = sorted(d for d in dirs if os.path.realpath(os.path.join(root, d)) not in visited)
        found += [os.path.join(root, n) for n in sorted(names)
                  if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith(".")]
    return found


def collect_images(inputs):
    """Files named directly (any extension) and image files found recursively in folders, in order;
    each file once (by real path), each real folder walked once (symbolic-link cycles end).

    A path that does not exist raises ``UserError``; a folder with no images only warns.
    """
    files = []
    for item in inputs:
        if os.path.isdir(item):
            found = _walk_images(item)
            if not found:
                print(f"warning: no image files in folder {item}", file=sys.stderr)
            files += found
        elif os.path.exists(item):
            files.append(item)
        else:
            raise UserError(f"image or folder not found: {item}. Check the path.")
    seen = set()
    unique = []
    for path in files:
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique


class Preprocessor:
    """Bytes of an image file -> float32 CHW array, as validate.py's evaluation pipeline.

    RGB models: the data package's decoding (JPEGs as they are, anything else re-encoded by Pillow
    as RGB: alpha dropped, palette expanded, CMYK converted, 16-bit scaled, EXIF orientation
    applied) and its ImageNet eval transform (``create_transforms(..., is_training=False)``).
    Grey models (``in_channels=1``): the image decoded as grey, the MNIST-family eval transform.
    """

    def __init__(self, image_size, in_channels, cfg, crop_pct=None):
        self._decode = decode
        self.in_channels = int(in_channels)
        crop = float(crop_pct if crop_pct is not None else cfg.get("crop_pct", 0.875))
        if not 0.0 < crop <= 1.0:
            raise UserError(f"--crop_pct must be in (0, 1], got {crop}")
        if self.in_channels == 3:
            self.ops = create_transforms("imagenet", image_size, is_training=False,
                                         interpolation=cfg.get("interpolation", "bilinear"), crop_pct=crop,
                                         mean=cfg.get("mean"), std=cfg.get("std"))
        elif self.in_channels == 1:
            self.ops = create_transforms("fashion_mnist", image_size, is_training=False,
                                         interpolation=cfg.get("interpolation", "bilinear"), in_channels=1)
        else:
            raise UserError(f"predict.py reads RGB (in_channels 3) or grey (in_channels 1) images; the model "
                            f"takes {self.in_channels} channels")
        # the RGB list starts with Decode (applied in load); the grey one works on decoded arrays
        self._first_after_decode = 1 if self.ops and type(self.ops[0]).__name__ == "Decode" else 0

    def load(self, path):
        """The decoded image as the model sees it before resizing: HxWx3 (RGB) or HxWx1 (grey) uint8.
        Raises ``BadImage`` (from the data package) for an unreadable file."""
        dec = self._decode
        data = dec.read_file(path)
        if not data:
            raise dec.BadImage("empty file (0 bytes)")
        if self.in_channels == 1:
            return dec.decode_with_pil(data, mode="L")[:, :, None]
        if not self._first_after_decode:
            return dec.decode_with_pil(data)
        try:
            return np.asarray(self.ops[0](np.frombuffer(dec.prepare_encoded(data), dtype=np.uint8)))
        except (RuntimeError, ValueError, TypeError) as exc:  # the C++ decoder's complaint
            text = str(exc).strip()
            raise dec.BadImage(text.splitlines()[0] if text else type(exc).__name__) from None

    def __call__(self, path):
        """(CHW float32 array, None) or (None, reason)."""
        try:
            image = self.load(path)
            for op in self.ops[self._first_after_decode:]:
                image = op(image)
        except self._decode.BadImage as exc:
            return None, str(exc)
        except (RuntimeError, ValueError, TypeError) as exc:
            text = str(exc).strip()
            return None, text.splitlines()[0] if text else type(exc).__name__
        return np.ascontiguousarray(image, dtype=np.float32), None


# ------------------------------------------------------------------------------------------------
# running and reporting
# ------------------------------------------------------------------------------------------------

def softmax(logits):
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def predict_arrays(net, arrays, batch_size):
    """Logits for a list of CHW arrays, ``batch_size`` at a time; the last batch is padded to the
    same shape (so graph mode compiles once) and the padding dropped. ``net``: a MindSpore network
    or a ``runtimes.DeployedModel`` (an exported file)."""
    if isinstance(net, DeployedModel):  # any batch size: the file's own batch is handled by the model
        outputs = [net(np.stack(arrays[i:i + batch_size])) for i in range(0, len(arrays), batch_size)]
        return np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)
    outputs = []
    for start in range(0, len(arrays), batch_size):
        chunk = arrays[start:start + batch_size]
        batch = np.stack(chunk)
        if len(chunk) < batch_size and len(arrays) > batch_size:
            pad = np.zeros((batch_size - len(chunk),) + batch.shape[1:], batch.dtype)
            batch = np.concatenate([batch, pad])
        logits = net(ms.Tensor(batch)).asnumpy()
        outputs.append(logits[:len(chunk)])
    return np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)


def top_k(probs, names, k):
    k = min(k, probs.shape[1])
    results = []
    for row in probs:
        order = np.argsort(-row, kind="stable")[:k]
        results.append([{"rank": r + 1, "index": int(i), "class": names[i], "probability": float(row[i])}
                        for r, i in enumerate(order)])
    return results


def format_table(records):
    rows = [("file", "rank", "class", "probability")]
    for rec in records:
        for p in rec["predictions"]:
            rows.append((rec["file"] if p["rank"] == 1 else "", str(p["rank"]), p["class"],
                         f"{p['probability']:.4f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = []
    for n, r in enumerate(rows):
        lines.append(f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]:>{widths[3]}}".rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _write_json(result, target):
    text = json.dumps(result, indent=2, ensure_ascii=False)
    if target == "-":
        sys.stdout.write(text + "\n")
        return
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    write_text_atomic(target, text + "\n", what="predictions file")


# ------------------------------------------------------------------------------------------------
# the model
# ------------------------------------------------------------------------------------------------

def _registered_cfg(name):
    """The registered model's default configuration, or ``{}`` for a name the registry lacks."""
    return get_model_cfg(name).default_cfg() if is_model(name) else {}


def _deployed_model(args):
    """The exported file as ``(model, info)``, ``info`` as ``build_inference_model``'s."""
    (model,) = open_deployed(args.onnx_path, args.mindir_path)
    meta = model.metadata
    name = meta.get("model_name") or args.model or os.path.basename(model.path)
    if args.model and meta.get("model_name") and args.model != meta["model_name"]:
        raise UserError(f"{model.path} holds a {meta['model_name']} model, not {args.model}: leave --model out")
    channels, height, width = model.input_shape
    if height != width:
        raise UserError(f"{model.path} takes {height}x{width} images; predict.py feeds square images only")
    for option, value, own in (("--image_size", args.image_size, height), ("--in_channels", args.in_channels, channels),
                               ("--num_classes", args.num_classes, model.num_classes)):
        if value is not None and value != own:
            raise UserError(f"{option} {value} does not fit {model.path}, which has {own}: leave {option} out")
    if not model.num_classes:
        raise UserError(f"{model.path} has no classifier output (an exported backbone): predict.py needs one")
    cfg = dict(_registered_cfg(name))
    cfg.update({k: meta[k] for k in ("crop_pct", "interpolation", "mean", "std") if k in meta})
    cfg["input_size"] = (channels, height, width)
    info = {"model": name, "num_classes": model.num_classes, "in_channels": channels, "default_cfg": cfg,
            "meta": {"class_names": meta.get("class_names")}, "weights": model.path}
    return model, info


def _built_model(args):
    """``(net, info, image size, source of the class names)`` for predict.py's options."""
    if args.onnx_path or args.mindir_path:
        net, info = _deployed_model(args)
        return net, info, info["default_cfg"]["input_size"][-1], net.path
    if args.image_size is not None:
        check_image_size(args.model, args.image_size)
    net, info = build_inference_model(args.model, ckpt_path=args.ckpt_path, pretrained=args.pretrained,
                                      num_classes=args.num_classes, in_channels=args.in_channels,
                                      use_ema=args.ema)
    if info["num_classes"] <= 0:
        raise UserError(f"checkpoint {args.ckpt_path} has no classifier (a backbone): predict.py needs one. "
                        f"Pass --num_classes only with a checkpoint that holds that classifier.")
    size = check_image_size(args.model, args.image_size or tuple(info["default_cfg"].get("input_size",
                                                                                      (3, 224, 224)))[-1])
    return net, info, size, args.ckpt_path


# ------------------------------------------------------------------------------------------------
# predict.py's run
# ------------------------------------------------------------------------------------------------

def _read_images(files, preprocess):
    """``(kept paths, arrays, skipped records)``; each unreadable file is named in a warning."""
    kept, arrays, skipped = [], [], []
    for path in files:
        array, reason = preprocess(path)
        if array is None:
            print(f"warning: skipping unreadable image {path}: {reason}", file=sys.stderr)
            skipped.append({"file": path, "reason": reason})
            continue
        kept.append(path)
        arrays.append(array)
    if not arrays:
        raise UserError(f"none of the {len(files)} file(s) could be read as an image (see the warnings above)")
    return kept, arrays, skipped


def predict(args):
    """Classify ``args.inputs`` as predict.py does: print the table (unless ``--json -``), write the
    JSON when ``--json`` is given, and return the result (the JSON's content)."""
    if args.model and not is_model(args.model):
        create_model(args.model)  # the factory's UserError, with suggestions
    if args.class_names and not os.path.isfile(args.class_names):
        raise UserError(f"class-names file not found: {args.class_names}. Pass a text file with one class "
                        f"name per line.")
    files = collect_images(args.inputs)
    if not files:
        raise UserError(f"no image files found in {', '.join(args.inputs)} (looked for "
                        f"{', '.join(IMAGE_EXTENSIONS)})")

    ms.set_context(mode=ms.GRAPH_MODE if args.mode == 0 else ms.PYNATIVE_MODE)
    if args.device_target != "auto":
        ms.set_device(args.device_target)

    net, info, size, source = _built_model(args)
    names = resolve_class_names(info["num_classes"], class_names_file=args.class_names,
                                saved_names=info["meta"].get("class_names"), source=source)
    preprocess = Preprocessor(size, info["in_channels"], info["default_cfg"], crop_pct=args.crop_pct)
    kept, arrays, skipped = _read_images(files, preprocess)

    probs = softmax(predict_arrays(net, arrays, args.batch_size))
    records = [{"file": path, "predictions": preds} for path, preds in zip(kept, top_k(probs, names, args.topk))]
    result = {"model": info["model"], "weights": info["weights"], "num_classes": info["num_classes"],
              "image_size": size, "topk": min(args.topk, info["num_classes"]), "predictions": records,
              "skipped": skipped}
    if args.json != "-":
        print(format_table(records))
        if skipped:
            print(f"{len(skipped)} unreadable file(s) skipped", file=sys.stderr)
    if args.json:
        _write_json(result, args.json)
    return result
