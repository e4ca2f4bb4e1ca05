"""``--task data``: the input pipeline alone (JPEG decode + ImageNet training transforms + batch),
images per second for each ``--workers`` count, read from class folders (ImageFolder) and from a
MindRecord copy of the same images (``--mindrecord_dir``, else written to a temporary folder by
``prepare mindrecord`` in the same run; ``--mindrecord_dir none`` skips it)."""
import os
import shutil
import tempfile
import time

from ..data.readers.mindrecord_writer import find_split, open_split, prepare_mindrecord
from ..data.throughput import make_synthetic_jpegs, measure_pipeline_throughput
from ..errors import UserError
from .common import environment, fmt, peak_rss_mb
from .settings import command


def run_data(args):
    """Measure the pipeline on ``args.data_dir`` (an ImageFolder root) or on generated JPEGs; print
    the table and return the JSON report."""
    tmp = mr_tmp = None
    formats = {}
    try:
        if args.data_dir:
            root = args.data_dir
            if not os.path.isdir(os.path.join(root, "train")):
                raise UserError(f"--data_dir needs a train/ folder of class folders: {root}. Point it at an "
                                f"ImageFolder root, or leave it out to use generated JPEGs")
            source = f"ImageFolder {root}/train"
        else:
            tmp = tempfile.mkdtemp(prefix="r2bench_jpegs_")
            start = time.perf_counter()
            make_synthetic_jpegs(tmp, n_images=args.num_images, size=(500, 375), seed=args.seed)
            print(f"generated {args.num_images} synthetic 500x375 JPEGs in {time.perf_counter() - start:.1f} s",
                  flush=True)
            root, source = tmp, f"{args.num_images} synthetic 500x375 JPEGs (photo-like, quality 90)"
        n_images = args.steps * args.batch_size
        print(f"benchmark data: {source}; decode + random-resized-crop {args.image_size} + flip + normalise + "
              f"CHW + batch {args.batch_size}; {n_images} images timed after {args.warmup} batch(es)", flush=True)
        mr_root = getattr(args, "mindrecord_dir", None)
        if mr_root is None:
            mr_tmp = mr_root = tempfile.mkdtemp(prefix="r2bench_mindrecord_")
            start = time.perf_counter()
            prepare_mindrecord(root, mr_root, shards=1, splits=["train"], overwrite=True, log=lambda *a: None)
            print(f"wrote a MindRecord copy of the train images in {time.perf_counter() - start:.1f} s", flush=True)
        elif str(mr_root).lower() == "none":
            mr_root = None
        elif find_split(mr_root, "train") is None:
            raise UserError(f"--mindrecord_dir {mr_root} holds no MindRecord train set. Write one with 'python -m "
                            f"mindcv_res2net.data.prepare mindrecord --src IMAGEFOLDER --out {mr_root}', or leave "
                            f"the option out")
        for fmt_name, froot in (("ImageFolder", root), ("MindRecord", mr_root)):
            if froot is None:
                continue
            rows = formats.setdefault(fmt_name, {})
            for w in args.worker_counts:
                res = measure_pipeline_throughput(froot, num_workers=w, n_images=n_images,
                                                  image_size=args.image_size, batch_size=args.batch_size,
                                                  warmup_batches=args.warmup)
                if fmt_name == "MindRecord":  # the mean stored image, not the mean shard file
                    meta = open_split(find_split(froot, "train")).meta
                    res["mean_file_kb"] = meta["image_bytes"] / max(1, meta["num_images"]) / 1024.0
                rows[str(w)] = res
    finally:
        for folder in (tmp, mr_tmp):
            if folder:
                shutil.rmtree(folder, ignore_errors=True)
    workers = formats["ImageFolder"]
    lines = ["", "| format | workers | img/s | img/s per worker | img per CPU-second | images timed | mean image (KB) |",
             "|---|---|---|---|---|---|---|"]
    for fmt_name, rows in formats.items():
        for w, r in rows.items():
            lines.append(f"| {fmt_name} | {w} | {r['images_per_sec']:.1f} | {r['images_per_sec_per_worker']:.1f} | "
                         f"{fmt(r.get('images_per_cpu_second'))} | {r['n_images']} | "
                         f"{fmt(r.get('mean_file_kb'), '.0f')} |")
    lines.append(f"peak RSS of this process: {peak_rss_mb():.0f} MB")
    print("\n".join(lines))
    return {"benchmark": "mindcv_res2net", "task": "data", "available": True, "source": source,
            "batch_size": args.batch_size, "image_size": args.image_size, "workers": workers,
            "formats": formats,
            "peak_rss_mb": peak_rss_mb(), "environment": environment(args),
            "command": command(args)}
