import pytest


@pytest.fixture(autouse=True)
def _token_cache(tmp_path_factory, monkeypatch):
    """Token caches go to a temporary folder, never the user's home."""
    monkeypatch.setenv("TINYGPT_CACHE", str(tmp_path_factory.getbasetemp() / "token-cache"))
