"""Shared test setup: the repository root on sys.path, PyNative mode by default, fixed seeds."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
REFERENCE_DIR = os.path.join(os.path.dirname(ROOT), "shared", "reference")


@pytest.fixture(autouse=True)
def _pynative_by_default():
    """Each test starts in PyNative mode on CPU (fast for small nets); graph tests switch themselves."""
    import mindspore as ms
    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
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
    if not os.path.isdir(REFERENCE_DIR):
        pytest.skip(f"reference facts not found at {REFERENCE_DIR}")
    return REFERENCE_DIR
