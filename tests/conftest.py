"""Shared test set-up: a fresh seeded RNG per test, and helpers for optional packages."""
import pytest

from autograd import backend


@pytest.fixture(autouse=True)
def _seeded():
    backend.seed(0)
    yield


def cuda_available():
    try:
        backend.use_backend("cupy")
    except Exception:
        return False
    finally:
        backend.use_backend("numpy")
    return True


def pytest_collection_modifyitems(config, items):
    if any("gpu" in item.keywords for item in items) and not cuda_available():
        skip = pytest.mark.skip(reason="no CUDA device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
