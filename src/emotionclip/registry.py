"""Plugins by name: one syntax, ``py:package.module:factory``, for detectors, scorers and segmenters.

Each kind keeps a table ``{name: factory}`` of what the package ships; :func:`resolve` looks a name
up there, or imports ``factory`` from ``package.module`` for ``py:`` names and calls it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

PLUGIN_PREFIX = "py:"


def load_plugin(spec: str) -> Callable[..., Any]:
    """``py:package.module:factory`` -> the ``factory`` callable (not called)."""
    module_name, _, attr = spec[len(PLUGIN_PREFIX) :].partition(":")
    if not spec.startswith(PLUGIN_PREFIX) or not module_name or not attr:
        raise ValueError(f"{spec!r}: expected py:package.module:factory")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"{spec!r}: cannot import {module_name} ({e})") from e
    try:
        return getattr(module, attr)
    except AttributeError as e:
        raise ValueError(f"{spec!r}: {module_name} has no {attr!r}") from e


def resolve(kind: str, spec: str, table: Mapping[str, Callable[..., Any]], **kw) -> Any:
    """Build the ``kind`` named ``spec``: a table entry ``NAME`` or ``NAME:ARG`` (the factory gets
    ``ARG`` as its first argument), or ``py:module:factory``. Keyword arguments go to the factory."""
    if spec.startswith(PLUGIN_PREFIX):
        return load_plugin(spec)(**kw)
    name, sep, arg = spec.partition(":")
    if spec in table:
        return table[spec](**kw)
    if sep and name in table:
        return table[name](arg, **kw)
    names = ", ".join(sorted(table))
    raise ValueError(f"unknown {kind} {spec!r}; use one of {names}, or py:package.module:factory")
