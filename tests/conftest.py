"""Shared test set-up: a fresh seeded RNG per test, and helpers for optional packages."""
import pytest

from autograd import backend


@pytest.fixture(autouse=True)
def _seeded():
    backend.seed(0)
    yield


def cuda_unavailable():
    """None where CuPy and a CUDA device work; otherwise why not, in backend's own words
    (CuPy missing, CuPy failing to import, no device), which the skips then show."""
    try:
        backend.use_backend("cupy")
    except backend.BackendUnavailable as exc:
        return str(exc)
    finally:
        backend.use_backend("numpy")
    return None


def cuda_available():
    return cuda_unavailable() is None


def pytest_collection_modifyitems(config, items):
    if not any("gpu" in item.keywords for item in items):
        return
    why = cuda_unavailable()
    if why is not None:
        skip = pytest.mark.skip(reason=f"no CUDA: {why}")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
