"""What benchmark.py runs: speed against references, the input pipeline, the model table.

    options   the command line (parser, checks); imports nothing heavy, so mistakes print fast
    common    memory and environment probes, MindSpore setup, number formatting
    runners   the implementations under test (ours, ours_optimized, mindcv, torch, timm, onnxruntime)
    speed     --task train / infer: build, compile, warm up, time in rotated rounds, report
    data      --task data: JPEG decode + training transforms throughput per worker count
    table     --table: parameters, MACs and published accuracy of every registered model

Each ``run_*(args)`` prints its markdown and returns the JSON report; benchmark.py parses the
command line, picks one and writes the JSON. This package file imports nothing, so that
``mindcv_res2net.benchmark.options`` stays free of MindSpore.
"""
