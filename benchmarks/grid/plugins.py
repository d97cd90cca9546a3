"""User plugins: modules that register targets, methods or metrics (`--import MODULE`).

Shared by the CLI and by the launchers' worker processes, which re-import the same modules before
running a cell.
"""

from __future__ import annotations

import importlib
import os
import sys

__all__ = ["import_plugins"]


def import_plugins(modules: list[str]) -> None:
    """Import user modules that register targets / methods / metrics (`--import MODULE`).

    The current directory is put first on `sys.path` (as `python -m` does), so a module next to the
    user's suite file is found. A module that cannot be imported raises a ValueError naming it.
    """
    if modules and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ValueError(f"--import {module}: cannot import it ({err})") from None
