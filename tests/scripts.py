"""Load a file of `scripts/` (not an importable package) as a module, for the tests of those scripts."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str, register: Callable[[str, ModuleType], None] | None = None) -> ModuleType:
    """`scripts/<name>.py` as a fresh module; `register(name, module)` runs before the module executes
    (e.g. `monkeypatch.setitem(sys.modules, ...)`, for dataclasses that resolve their module by name)."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    if register is not None:
        register(name, module)
    spec.loader.exec_module(module)
    return module
