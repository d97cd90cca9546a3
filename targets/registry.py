"""A small name -> factory registry, shared by targets, methods and metrics.

One registry per kind: the registry drives the CLI choices, the test
parametrisation and the README tables, and an unknown name fails with the list of known names.
It lives in `targets` (the lowest package) so that `samplers` and `benchmarks` can reuse it
without any import going upward.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

__all__ = ["Registry", "UnknownNameError"]

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """Raised for an unknown registry name; the message lists every valid choice."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """Maps a snake_case name to a factory `(**kwargs) -> T` plus free-form metadata.

    Args:
        kind: what the registry holds ("target", "method", "metric"), used in error messages.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def register(
        self, name: str, factory: Callable[..., T] | None = None, *, overwrite: bool = False, **meta: Any
    ):
        """Register `factory` under `name`; usable directly or as a decorator.

        Raises:
            ValueError: if `name` is taken (pass `overwrite=True` to replace it) or not snake_case.
        """
        if not name or not name.replace("_", "").isalnum() or name != name.lower():
            raise ValueError(f"{self.kind} names must be lower-case snake_case identifiers, got {name!r}")

        def _add(fn: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories and not overwrite:
                raise ValueError(
                    f"{self.kind} {name!r} is already registered; pass overwrite=True to replace it"
                )
            self._factories[name] = fn
            self._meta[name] = dict(meta)
            return fn

        return _add(factory) if factory is not None else _add

    def unregister(self, name: str) -> None:
        """Remove `name` (used by tests and by users replacing a built-in)."""
        self._check(name)
        del self._factories[name]
        del self._meta[name]

    def _check(self, name: str) -> None:
        if name not in self._factories:
            close = difflib.get_close_matches(name, self.names(), n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}.{hint} Valid {self.kind}s: {', '.join(self.names())}"
            )

    def factory(self, name: str) -> Callable[..., T]:
        """The registered factory for `name` (raises `UnknownNameError` listing valid names)."""
        self._check(name)
        return self._factories[name]

    def get(self, name: str, **kwargs: Any) -> T:
        """Build the object registered as `name`, passing `kwargs` to its factory."""
        return self.factory(name)(**kwargs)

    def meta(self, name: str) -> dict[str, Any]:
        """The metadata given at registration (family, tags, ...)."""
        self._check(name)
        return dict(self._meta[name])

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._factories)
