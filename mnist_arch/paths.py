"""Where things live, for both sides of the wall: the folder holding MNIST and a model target's file.

Plain strings and paths: no torch, nothing else of ours.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The environment variable that names the folder holding MNIST/raw/ (`mnist_root`).
DATA_ENV = "MNIST_ARCH_DATA"


def mnist_root(explicit: str | Path | None = None, table_data: Path | None = None) -> Path:
    """Where every face (the command line, the plugin, `bench`, the library's `data.load_mnist`) looks for
    MNIST, the folder holding MNIST/raw/: the command line's --data-dir or the plugin's --mnist-arch-data,
    else $MNIST_ARCH_DATA, else `data` of the [tool.mnist-arch] table (`table_data`), else the user's cache
    ($XDG_CACHE_HOME or ~/.cache, then mnist-arch)."""
    chosen = explicit or os.environ.get(DATA_ENV) or table_data
    if not chosen:
        chosen = Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "mnist-arch"
    return Path(chosen).expanduser().resolve()


def is_file_target(source: str) -> bool:
    """Whether the part of a model target before ':ATTR' names a file (PATH.py) rather than a module
    (package.module)."""
    return source.endswith(".py") or "/" in source or "\\" in source


def resolve_target(target: str, root: Path) -> str:
    """A target with its PATH.py made absolute against `root` (package.module:ATTR unchanged)."""
    source, sep, attr = target.rpartition(":")
    if sep and is_file_target(source) and not Path(source).is_absolute():
        source = str((root / source).resolve())
    return f"{source}{sep}{attr}"
