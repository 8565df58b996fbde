"""The huggingface_hub environment variables chatllm honours, in one place.

huggingface_hub reads them once, when it is imported (~100 ms); chatllm reads
them when they are used, so listing the cache or `chatllm doctor` never import
it and a test or a user can change them between calls. The cache folder's
variables are read by hub/cache.py's `hub_cache_dir`, beside the cache layout.
"""

from __future__ import annotations

import os

DEFAULT_ENDPOINT = "https://huggingface.co"
_TRUE = {"1", "ON", "YES", "TRUE"}


def is_offline() -> bool:
    """HF_HUB_OFFLINE (or the older TRANSFORMERS_OFFLINE) is set."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in _TRUE


def hub_endpoint() -> str:
    """HF_ENDPOINT (a mirror, or the tests' local Hub), else huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def hub_description() -> str:
    """Who answered, for an error about what it sent: a mirror is named with
    the variable that chose it, so the user knows where to look."""
    if os.environ.get("HF_ENDPOINT"):
        return f"the Hub mirror at {hub_endpoint()} (HF_ENDPOINT)"
    return f"the Hub at {hub_endpoint()}"


def metadata_timeout_s() -> float:
    """HF_HUB_ETAG_TIMEOUT: seconds to wait for the Hub's answer about a file or repo."""
    return float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or 10)


def download_timeout_s() -> float:
    """HF_HUB_DOWNLOAD_TIMEOUT: seconds a download may wait for the next bytes."""
    return float(os.environ.get("HF_HUB_DOWNLOAD_TIMEOUT") or 10)
