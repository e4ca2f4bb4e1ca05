"""mindcv_res2net: train, evaluate, convert, benchmark and export the Res2Net family on MindSpore.

The packages, one concept each (their ``__init__`` lists their modules):

    models/        the architectures, the registry, create_model, the inference-optimised nets
    weights/       checkpoint files, PyTorch files, conversion, loading into a model, published weights
    data/          datasets (readers/: image folders, MNIST idx, MindRecord), transforms, loader
    optim/ scheduler/ loss/     optimizers and parameter groups; the lr schedule; the losses
    training/      the train step, the epoch loop and what a run writes
    evaluation/    evaluate, validate.py's work, checkpoint-vs-export comparison
    deploy/        the inference model, export, runtimes (onnxruntime, MindSpore's GraphCell), predict, int8
    distributed/   launch detection, the mpirun bridge, collectives, process set-up
    benchmark/     what benchmark.py measures and the benchmark table's reproduction
    cli/           the command line of every entry script (the library never imports it)

Names are imported on first use, so that ``import mindcv_res2net.errors`` (config parsing,
``--help``, ``--dry_run``) does not pay for importing MindSpore.
"""
from .lazy_exports import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {"create_model": "models.factory", "list_models": "models.registry",
            "optimize_for_inference": "models.inference", "UserError": "errors"}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = ["__version__", *sorted(_EXPORTS)]
