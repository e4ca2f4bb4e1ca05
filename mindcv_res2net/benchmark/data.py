"""``--task data``: the input pipeline alone (JPEG decode + ImageNet training transforms + batch),
images per second for each ``--workers`` count."""
import os
import shutil
import tempfile
import time

from ..data.throughput import make_synthetic_jpegs, measure_pipeline_throughput
from ..errors import UserError
from .common import environment, fmt, peak_rss_mb
from .options import command


def run_data(args):
    """Measure the pipeline on ``args.data_dir`` (an ImageFolder root) or on generated JPEGs; print
    the table and return the JSON report."""
    tmp = None
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
        workers = {}
        for w in args.worker_counts:
            res = measure_pipeline_throughput(root, num_workers=w, n_images=n_images, image_size=args.image_size,
                                              batch_size=args.batch_size, warmup_batches=args.warmup)
            workers[str(w)] = res
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    lines = ["", "| workers | img/s | img/s per worker | img per CPU-second | images timed | mean JPEG (KB) |",
             "|---|---|---|---|---|---|"]
    for w, r in workers.items():
        lines.append(f"| {w} | {r['images_per_sec']:.1f} | {r['images_per_sec_per_worker']:.1f} | "
                     f"{fmt(r.get('images_per_cpu_second'))} | {r['n_images']} | "
                     f"{fmt(r.get('mean_file_kb'), '.0f')} |")
    lines.append(f"peak RSS of this process: {peak_rss_mb():.0f} MB")
    print("\n".join(lines))
    return {"benchmark": "mindcv_res2net", "task": "data", "available": True, "source": source,
            "batch_size": args.batch_size, "image_size": args.image_size, "workers": workers,
            "peak_rss_mb": peak_rss_mb(), "environment": environment(args),
            "command": command(args)}
