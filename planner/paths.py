"""Where the planner keeps what it may reuse, and how a cached file is named.

``DEFAULT_CACHE``: ``$PLANNER_CACHE``, else ``~/.cache/latency-planner`` (latency tables, error scores,
converted GGUF models, checkpoints). ``cache_key``: the short hash that names a cached file after
everything its content depends on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

DEFAULT_CACHE = Path(os.environ.get("PLANNER_CACHE", Path.home() / ".cache" / "latency-planner"))


def cache_key(*parts: Any) -> str:
    """16 hex characters identifying ``parts`` (dataclasses and mappings by content)."""
    plain = [dataclasses.asdict(p) if dataclasses.is_dataclass(p) and not isinstance(p, type) else p for p in parts]
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()[:16]
