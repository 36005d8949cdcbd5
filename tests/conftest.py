import os

# No network: gradio analytics and the Hugging Face hub client must never try it.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402

@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """A private feature/image cache for one test."""
    d = tmp_path / "cache"
    d.mkdir()
    monkeypatch.setenv("MDW_CACHE", str(d))
    return str(d)


@pytest.fixture
def browser():
    """Playwright's chromium: Debian's /usr/bin/chromium, headless (skips without either)."""
    from app.server import CHROMIUM, CHROMIUM_ARGS
    sync_api = pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no chromium at {CHROMIUM}")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def one_thread():
    """For modules of many tiny ops (one Grad-CAM pass per word and shift): a second OpenMP thread only
    spins on a shared, loaded CPU (seen 60x slower), so such a module runs on one thread. A module asks
    for it with pytestmark = pytest.mark.usefixtures("one_thread")."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def planted():
    """helpers.planted_model(): a tower whose Grad-CAM answer is known (one per module: it is read-only)."""
    from helpers import planted_model
    return planted_model()
