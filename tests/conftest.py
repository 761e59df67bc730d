"""Shared test configuration: GPU tests skip without CUDA; runs are single-threaded and quiet."""

from __future__ import annotations

import os
import tempfile

import pytest

os.environ.setdefault("PLANNER_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Classification heads fitted by tests are cached in a throw-away folder, not the user's cache.
os.environ.setdefault("PLANNER_CACHE", tempfile.mkdtemp(prefix="planner-test-cache-"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
