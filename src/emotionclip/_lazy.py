"""Lazy re-exports for package fronts: names are imported on first use, so that importing a package
(and the CLI's ``--help``) does not load torch, open_clip or pandas."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(
    package: str, exports: dict[str, str]
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``exports``: public name -> module (absolute, or relative to ``package``) defining it.
    Returns ``(__getattr__, __dir__)`` for the package's ``__init__``."""
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str):
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *exports})

    return __getattr__, __dir__
