"""The command-line layer: one parser per entry script, one vocabulary, one error style.

* ``entry``: ``run_main(main)``, how every entry script runs and ends (a user's mistake: one
  ``error:`` line, exit status 2; under mpirun, one message for all ranks).
* ``config`` (train.py / validate.py: typed keys, YAML, ``parse_args``; the top-level ``config.py``
  is that module) and ``keys`` (the table of config keys; its choice lists come from the packages
  that build them: ``optim``, ``scheduler``, ``loss``, ``data``).
* ``predict_args``, ``export_args``, ``benchmark_args``, ``convert_args``, ``prepare_args``: the
  parsers of predict.py, export.py, benchmark.py, ``python -m mindcv_res2net.convert`` and
  ``python -m mindcv_res2net.data.prepare``.
* ``options``: the parser pieces they share (booleans, device target, ``--debug``).

The library never imports this package; it imports the library.
"""
from ..lazy_exports import lazy_exports

_EXPORTS = {"run_main": "entry"}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
