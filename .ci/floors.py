"""Print pip constraints that pin the project's declared version floors exactly (for `make test-min`).

Reads ``[project].dependencies`` of pyproject.toml and turns ``name>=X`` into ``name==X`` for the
packages whose floors the project promises (FLOORED). torch is left out: the only CPU build of torch on
these machines' package index is the one the Makefile installs; its floor is what `make gpu-check`
runs on a GPU machine (README, "Supported versions").
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import tomllib

FLOORED = ("transformers", "onnxruntime", "numpy", "pandas")


def floors(pyproject: Path) -> dict[str, str]:
    """name -> floor version of every FLOORED dependency (each must be declared as ``name>=X``)."""
    declared = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    found: dict[str, str] = {}
    for spec in declared:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9][^,;\s]*)", spec.strip())
        if match and match.group(1).lower() in FLOORED:
            found[match.group(1).lower()] = match.group(2)
    missing = [name for name in FLOORED if name not in found]
    if missing:
        names = ", ".join(missing)
        raise SystemExit(f"pyproject.toml declares no '>=' floor for {names}; add one (e.g. 'numpy>=1.26').")
    return found


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml")
    for name, version in floors(path).items():
        print(f"{name}=={version}")
