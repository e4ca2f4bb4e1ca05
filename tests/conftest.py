"""Shared test setup: the repository root on sys.path, PyNative mode by default, fixed seeds."""
import logging
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
# Published reference facts the tests check against (key lists with shapes; see data/README.md),
# shipped with the tests so that every test runs on any clone.
REFERENCE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
# Debian's dataset-fashion-mnist (the raw IDX files that ``data.prepare`` reads).
FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


@pytest.fixture(autouse=True)
def _pynative_by_default():
    """Each test starts in PyNative mode on CPU (fast for small nets); graph tests switch themselves."""
    import mindspore as ms
    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_device("CPU")
    ms.set_seed(0)
    yield
    ms.set_context(mode=ms.PYNATIVE_MODE)


@pytest.fixture
def graph_mode():
    import mindspore as ms
    ms.set_context(mode=ms.GRAPH_MODE)
    yield
    ms.set_context(mode=ms.PYNATIVE_MODE)


@pytest.fixture
def reference_dir():
    """tests/data: the published key lists (``res2net_keys/<model>.tsv``)."""
    return REFERENCE_DIR


class _Messages(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def dataset_warnings():
    """The messages of the warnings the data package logs during the test (the handler is attached to
    its logger directly: ``setup_logging`` elsewhere in the same process turns propagation to the
    root logger off)."""
    handler = _Messages()
    logger = logging.getLogger("mindcv_res2net.data")
    logger.addHandler(handler)
    yield handler.messages
    logger.removeHandler(handler)


@pytest.fixture(scope="session")
def fashion_mnist_subset(tmp_path_factory):
    """``fashion_mnist_subset(limit)``: the path of an image folder (train/ and val/) holding the
    first ``limit`` images of Fashion-MNIST per split, made once per limit in this pytest run.
    Skips the test when Debian's dataset-fashion-mnist is not installed."""
    made = {}

    def make(limit):
        if not os.path.isdir(FASHION_MNIST):
            pytest.skip("Debian's dataset-fashion-mnist is not installed (bash scripts/setup.sh installs it)")
        if limit not in made:
            from mindcv_res2net.data.preparation import prepare
            out = tmp_path_factory.mktemp(f"fashion{limit}")
            prepare("fashion_mnist", str(out), limit=limit, log=lambda *a, **k: None)
            made[limit] = str(out)
        return made[limit]
    return make
