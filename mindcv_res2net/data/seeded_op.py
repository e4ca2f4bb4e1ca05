"""Per-process seeding of the Python ops in a data pipeline (RandAugment, AugMix, RandomErasing, 3a).

A worker process starts with a copy of its parent's random state; an op that kept it would draw the
same numbers in every worker. ``SeededOp`` reseeds on ``set_seed(seed)`` and, on the first call in a
new process, switches to a stream derived from (seed, pid). Subclasses say which generator they use.
"""
import os
import random

import numpy as np


class SeededOp:
    def new_rng(self, seed, pid):
        """The generator for ``seed`` (``pid`` None: the process that called ``set_seed``)."""
        raise NotImplementedError

    def set_seed(self, seed):
        self._seed = seed
        self._pid = os.getpid()
        self.rng = self.new_rng(seed, None)

    def check_process(self):
        pid = os.getpid()
        if pid != self._pid:
            self._pid = pid
            self.rng = self.new_rng(self._seed, pid)


class PythonSeededOp(SeededOp):
    """``self.rng`` is a ``random.Random``."""

    def new_rng(self, seed, pid):
        if pid is None:
            return random.Random(seed)
        return random.Random((0 if seed is None else seed) * 1_000_003 + pid)


class NumpySeededOp(SeededOp):
    """``self.rng`` is a ``numpy.random.Generator``."""

    def new_rng(self, seed, pid):
        if pid is None:
            return np.random.default_rng(seed)
        return np.random.default_rng([0 if seed is None else seed, pid])
