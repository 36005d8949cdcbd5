import os

# No network: gradio analytics and the Hugging Face hub client must never try it.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402

SHARED_FLICKR8K = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "flickr8k")


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """A private feature/image cache for one test."""
    d = tmp_path / "cache"
    d.mkdir()
    monkeypatch.setenv("MDW_CACHE", str(d))
    return str(d)
