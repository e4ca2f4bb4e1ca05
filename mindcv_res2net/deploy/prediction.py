"""``predict.py``'s work: the top-k classes of image files, from a model built from its weights or
from a file written by ``export.py`` (``--onnx_path`` / ``--mindir_path``).

- ``collect_images(inputs)``: the image files named or found in folders, each once.
- ``Preprocessor(preprocessing)``: a file -> the CHW array the model takes, exactly as
  validate.py's evaluation pipeline makes it (``data.transforms.EvalPreprocessing``: the same
  keys, the same transform).
- ``predict_arrays(net, arrays, batch_size)``, ``softmax``, ``top_k``, ``format_table``.
- ``predict(args)``: predict.py's parsed options -> the table on stdout and/or the JSON result.

``predict(args)`` expects the checks ``predict.parse_args`` makes before MindSpore loads (images
given, one source of the model); it then checks the model name, the class-names file and the
inputs before building anything. The model comes from ``deploy.build_inference_model`` (a checkpoint or the
published weights) or ``runtimes.open_deployed`` (an exported file, whose metadata gives the
model name, class names and preprocessing); the class names from ``class_names``.

Preprocessing: each key of ``EvalPreprocessing`` from the first of: the command line, the ``-c``
file (``args.layers``, made by ``predict.parse_args``), the checkpoint's stored preprocessing
(train.py stores it) or the exported file's metadata, the model's defaults (so a MindCV
checkpoint, which stores none, is fed as before). One line on stderr says where each came from.
"""
import json
import os
import sys

import mindspore as ms
import numpy as np

from ..atomic_io import write_text_atomic
from .class_names import resolve_class_names
from ..data import decode
from ..data.decode import IMAGE_EXTENSIONS
from ..data.transforms import EvalPreprocessing, describe_preprocessing, resolve_eval_preprocessing
from .inference_model import build_inference_model, checkpoint_metadata, model_from_checkpoint, model_preprocessing
from ..errors import UserError
from ..weights.checkpoint_file import open_checkpoint
from ..models import is_model
from ..models.factory import create_model
from ..models.registry import get_model_cfg
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
    """Bytes of an image file -> float32 CHW array, as validate.py's evaluation pipeline makes it.

    ``preprocessing``: an ``EvalPreprocessing``; its ``transforms()`` is the evaluation pipeline's
    transform. The file is decoded as the data package's image-folder source decodes it: RGB
    (JPEGs as they are, anything else re-encoded by Pillow as RGB: alpha dropped, palette expanded,
    CMYK converted, 16-bit scaled, EXIF orientation applied) and then ``Decode``; or, for the
    Fashion-MNIST / MNIST reading (``preprocessing.grey``), decoded as grey by Pillow.
    """

    def __init__(self, preprocessing):
        self._decode = decode
        self.preprocessing = preprocessing
        self.in_channels = preprocessing.in_channels
        self.ops = preprocessing.transforms()
        # the RGB list starts with Decode (applied in load); the grey one works on decoded arrays
        self._first_after_decode = 0 if preprocessing.grey else 1

    def load(self, path):
        """The decoded image as the model sees it before resizing: HxWx3 (RGB) or HxWx1 (grey) uint8.
        Raises ``BadImage`` (from the data package) for an unreadable file."""
        dec = self._decode
        data = dec.read_file(path)
        if not data:
            raise dec.BadImage("empty file (0 bytes)")
        if self.preprocessing.grey:
            return dec.decode_with_pil(data, mode="L")[:, :, None]
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


def _layer_value(layers, key):
    """``(value, source)`` of the first layer that sets ``key``; ``(None, None)`` when none does."""
    for source, keys in layers:
        if keys.get(key) is not None:
            return keys[key], source
    return None, None


def _deployed_model(args, layers):
    """The exported file as ``(model, info, preprocessing, its sources)``, ``info`` as
    ``build_inference_model``'s."""
    (model,) = open_deployed(args.onnx_path, args.mindir_path)
    stated = model.metadata.get("model_name")
    given, given_by = _layer_value(layers, "model")
    if given and stated and given != stated:
        raise UserError(f"{model.path} holds a {stated} model, not {given} ({given_by}): leave --model out")
    name = stated or given or os.path.basename(model.path)
    channels, height, width = model.input_shape
    if height != width:
        raise UserError(f"{model.path} takes {height}x{width} images; predict.py feeds square images only")
    classes, classes_by = _layer_value(layers, "num_classes")
    if classes is not None and classes != model.num_classes:
        raise UserError(f"--num_classes {classes} ({classes_by}) does not fit {model.path}, which has "
                        f"{model.num_classes}: leave --num_classes out")
    if not model.num_classes:
        raise UserError(f"{model.path} has no classifier output (an exported backbone): predict.py needs one")
    defaults = EvalPreprocessing.from_model_cfg(_registered_cfg(name), channels).keys()
    prep, sources = resolve_eval_preprocessing(layers + [(f"the metadata of {model.path}", model.preprocessing_keys()),
                                                         (f"the {name} defaults", defaults)])
    for key, option, own in (("image_resize", "--image_size", height), ("in_channels", "--in_channels", channels)):
        if getattr(prep, key) != own:
            raise UserError(f"{option} {getattr(prep, key)} ({sources[key]}) does not fit {model.path}, which has "
                            f"{own}: leave {option} out")
    info = {"model": name, "num_classes": model.num_classes, "in_channels": channels,
            "display_names": model.display_names, "weights": model.path}
    return model, info, prep, sources


def _checkpoint_model(args, layers):
    """The checkpoint's (or the published weights') model as ``(net, info, preprocessing, its
    sources)``; the model name from ``--model`` / ``-c``, else the checkpoint's."""
    ckpt = open_checkpoint(args.ckpt_path) if args.ckpt_path else None  # read once, passed down
    meta = checkpoint_metadata(ckpt) if ckpt else {}
    given, given_by = _layer_value(layers, "model")
    name = model_from_checkpoint(given, ckpt, meta, given_by)
    net, info = build_inference_model(name, ckpt_path=ckpt, pretrained=args.pretrained,
                                      num_classes=_layer_value(layers, "num_classes")[0],
                                      in_channels=_layer_value(layers, "in_channels")[0], use_ema=args.ema,
                                      meta=meta)
    if info["num_classes"] <= 0:
        raise UserError(f"checkpoint {args.ckpt_path} has no classifier (a backbone): predict.py needs one. "
                        f"Pass --num_classes only with a checkpoint that holds that classifier.")
    prep, sources = model_preprocessing(layers, info, ckpt)
    info["display_names"] = meta.get("class_names")
    return net, info, prep, sources


def _built_model(args):
    """``(net, info, preprocessing, its sources, what the class names come from)`` for predict.py's options."""
    layers = list(getattr(args, "layers", None) or [])
    if args.onnx_path or args.mindir_path:
        net, info, prep, sources = _deployed_model(args, layers)
        return net, info, prep, sources, net.path
    net, info, prep, sources = _checkpoint_model(args, layers)
    return net, info, prep, sources, f"checkpoint {args.ckpt_path}"


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

    net, info, prep, sources, names_from = _built_model(args)
    names = resolve_class_names(info["num_classes"], class_names_file=args.class_names,
                                saved_names=info["display_names"], source=names_from)
    print(describe_preprocessing(prep, sources), file=sys.stderr)
    kept, arrays, skipped = _read_images(files, Preprocessor(prep))

    probs = softmax(predict_arrays(net, arrays, args.batch_size))
    records = [{"file": path, "predictions": preds} for path, preds in zip(kept, top_k(probs, names, args.topk))]
    result = {"model": info["model"], "weights": info["weights"], "num_classes": info["num_classes"],
              "image_size": prep.image_resize, "preprocessing": prep.keys(),
              "topk": min(args.topk, info["num_classes"]), "predictions": records,
              "skipped": skipped}
    if args.json != "-":
        print(format_table(records))
        if skipped:
            print(f"{len(skipped)} unreadable file(s) skipped", file=sys.stderr)
    if args.json:
        _write_json(result, args.json)
    return result
