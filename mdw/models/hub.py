"""Where model weights come from, offline-aware: a local path, the local Hugging Face cache, or the hub.

Every family (open_clip tags, `timm:` towers, `hf:` text encoders) resolves its weights here, so the
rule is one: a local path is used as it is; a hub name is taken from the local cache when it is
there; otherwise it is downloaded only when the network may be used (HF_HUB_OFFLINE and
TRANSFORMERS_OFFLINE unset) and the host answers within a second. Anything else is a ModelError
at once that says how to give a local path instead; nothing waits on a network timeout.
"""
from __future__ import annotations

import os
import socket
import threading
from typing import Optional

from ..errors import ModelError

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".npz", ".ckpt")
HF_HOST = "huggingface.co"
PROBE_TIMEOUT_S = 0.8


def looks_like_path(tag: str) -> bool:
    """True when a weights string names a file or folder (has a separator, ~, . or a checkpoint suffix)."""
    return (os.sep in tag or "/" in tag or tag.startswith(("~", ".")) or tag.lower().endswith(CHECKPOINT_SUFFIXES))


def network_disabled() -> bool:
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def host_reachable(host: str, port: int = 443, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """True when a TCP connection to host:port opens within `timeout` s (DNS included)."""
    ok: list = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            ok.append(True)
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 0.2)
    return bool(ok)


def offline_reason(host: str = HF_HOST) -> Optional[str]:
    """Why a download cannot happen now (None: it may): the offline flag, or `host` not answering."""
    if network_disabled():
        return "HF_HUB_OFFLINE is set"
    if not host or not host_reachable(host):
        return f"no network: {host or 'the host'} unreachable"
    return None


def hf_cached_file(repo_id: str, filenames) -> Optional[str]:
    """The local path of the first of `filenames` of a Hugging Face repo in the local cache, else None."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for name in filenames:
        try:
            found = try_to_load_from_cache(repo_id=repo_id, filename=name)
        except Exception:  # a malformed repo id
            return None
        if isinstance(found, str) and os.path.isfile(found):
            return found
    return None


def local_path(path: str, what: str) -> str:
    """An existing local file or folder, absolute; ModelError naming `what` when it does not exist."""
    full = os.path.abspath(os.path.expanduser(path))
    if not os.path.exists(full):
        raise ModelError(f"{what}: local weights not found: {full}")
    return full


def hf_model_source(name_or_path: str, what: str, hint: str) -> str:
    """A Hugging Face model (config.json + weights) as a local folder, or its hub name when it is
    not cached and may be downloaded now. Raises ModelError (at once) when it is neither a local
    folder nor cached and the network may not be used; the message ends with `hint`."""
    if looks_like_path(name_or_path):
        folder = local_path(name_or_path, what)
        if not os.path.isfile(os.path.join(folder, "config.json")):
            raise ModelError(f"{what}: {folder} has no config.json (a Hugging Face model folder is needed)")
        return folder
    cfg = hf_cached_file(name_or_path, ["config.json"])
    if cfg and any(hf_cached_file(name_or_path, [w]) for w in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")):
        return os.path.dirname(cfg)
    reason = offline_reason()
    if reason:
        raise ModelError(f"{what}: {name_or_path!r} is not in the local Hugging Face cache and cannot be downloaded "
                         f"offline ({reason}). {hint}")
    return name_or_path
