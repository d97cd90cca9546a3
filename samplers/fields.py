"""Typed config fields: each field declares its own validity rules, one checker runs them all.

A method config is a frozen dataclass whose fields are declared with `field(default, *rules)`:

    @dataclasses.dataclass(frozen=True)
    class MyConfig(Checked):
        learning_rate: float = field(1e-3, POSITIVE)
        batch_size: int = field(256, integer(2))
        network: str = field("auto", one_of(NETWORKS))

`Checked.__post_init__` runs `validate`, which applies every field's rules in declaration order and
raises a `ValueError` naming the class, the field, the requirement and the offending value (for a
choice: the valid choices). Rules that tie several fields together go in the config's `check` method,
run after the per-field rules. A JSON list given for a tuple-valued field (e.g. `hidden`) is turned
into a tuple first, so that the frozen config stays hashable.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection
from typing import Any

__all__ = [
    "INTEGER",
    "NON_NEGATIVE",
    "POSITIVE",
    "POSITIVE_OR_NONE",
    "WIDTHS",
    "Checked",
    "Rule",
    "field",
    "integer",
    "one_of",
    "validate",
    "within",
]


@dataclasses.dataclass(frozen=True)
class Rule:
    """A requirement on one field's value.

    Attributes:
        ok: `value -> bool`.
        requirement: what a valid value is, as it reads after the field's name ("must be positive").
    """

    ok: Callable[[Any], bool]
    requirement: str

    def check(self, who: str, name: str, value: Any) -> None:
        """Raise `ValueError("<who>: <name> <requirement>, got <value>")` unless `ok(value)`."""
        if not self.ok(value):
            raise ValueError(f"{who}: {name} {self.requirement}, got {value!r}")


class _Choice(Rule):
    """`one_of`: the error names the valid choices."""

    def check(self, who: str, name: str, value: Any) -> None:
        if not self.ok(value):
            raise ValueError(f"{who}: unknown {name} {value!r}; valid choices: {self.requirement}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


INTEGER = Rule(_is_int, "must be an integer")
POSITIVE = Rule(lambda v: v > 0, "must be positive")
POSITIVE_OR_NONE = Rule(lambda v: v is None or v > 0, "must be positive or None")
NON_NEGATIVE = Rule(lambda v: v >= 0, "must be >= 0")
WIDTHS = Rule(
    lambda v: isinstance(v, tuple) and len(v) > 0 and all(_is_int(w) and w >= 1 for w in v),
    "must be a non-empty tuple of positive widths",
)


def integer(minimum: int, *, optional: bool = False) -> Rule:
    """An integer `>= minimum` (not a bool), or None when `optional`."""
    if minimum == 1:
        text = "must be a positive integer"
    else:
        text = f"must be an integer >= {minimum}"
    return Rule(
        lambda v: (optional and v is None) or (_is_int(v) and v >= minimum),
        text + (" or None" if optional else ""),
    )


def one_of(choices: Collection[str] | Callable[[], Collection[str]]) -> Rule:
    """A name among `choices`: a registry dict or any collection, or a function returning one (for a
    registry defined below the config). Read when a config is made, so registries may grow."""
    names = choices if callable(choices) else lambda: choices
    return _Choice(lambda v: v in names(), _SortedNames(names))


class _SortedNames:
    """The sorted valid names, rendered when an error is raised."""

    def __init__(self, names: Callable[[], Collection[str]]):
        self.names = names

    def __str__(self) -> str:
        return str(sorted(self.names()))


def within(low: float, high: float, *, closed: str = "both", optional: bool = False) -> Rule:
    """A number in the interval from `low` to `high`; `closed` is "both", "left", "right" or "neither"."""
    left = closed in ("both", "left")
    right = closed in ("both", "right")
    text = ("[" if left else "(") + f"{low:g}, {high:g}" + ("]" if right else ")")

    def ok(v):
        if v is None:
            return optional
        return (v >= low if left else v > low) and (v <= high if right else v < high)

    return Rule(ok, f"must lie in {text}" + (" or be None" if optional else ""))


def field(default: Any, *rules: Rule) -> Any:
    """A dataclass field with a default and its validity rules (checked by `validate`)."""
    return dataclasses.field(default=default, metadata={"rules": rules})


def _rules(cls: type, name: str) -> tuple[Rule, ...]:
    """The rules of field `name`: its own, or those of the nearest base class that declares some (a
    subclass that only changes a default, `num_warmup: int = 1000`, keeps its base's rules)."""
    for klass in cls.__mro__:
        declared = getattr(klass, "__dataclass_fields__", {}).get(name)
        if declared is not None and declared.metadata.get("rules"):
            return declared.metadata["rules"]
    return ()


def validate(config: Any) -> None:
    """Apply every field's rules to a (frozen) dataclass instance; lists given for tuple-valued
    fields become tuples first."""
    who = type(config).__name__
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, list) and isinstance(f.default, tuple):
            value = tuple(value)
            object.__setattr__(config, f.name, value)
        for rule in _rules(type(config), f.name):
            rule.check(who, f.name, value)


class Checked:
    """Mixin of the method configs: `validate` the declared fields, then the cross-field `check`."""

    def __post_init__(self) -> None:
        validate(self)
        self.check()

    def check(self) -> None:
        """Rules that involve several fields (none by default); raise a ValueError naming them."""
