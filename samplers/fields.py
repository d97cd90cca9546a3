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

Configs compose: a field whose default is itself a `Checked` config is a *sub-config* (a learned
method's `optim: OptimConfig`, `network: NetworkConfig`, `sde: SDEConfig`). It is validated by its own
rules when made, and may be given as a mapping of its fields, which replaces only those fields of the
default sub-config: `MyConfig(optim={"learning_rate": 1e-2})`. `configure(cls, overrides)` makes a
config from overrides that may also use dotted keys (`{"optim.learning_rate": 1e-2}`), and raises on an
unknown key with the valid dotted names (and the new name of a field that moved into a sub-config).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping
from typing import Any, ClassVar

__all__ = [
    "INTEGER",
    "NON_NEGATIVE",
    "POSITIVE",
    "POSITIVE_OR_NONE",
    "WIDTHS",
    "Checked",
    "Rule",
    "configure",
    "field",
    "field_names",
    "followers",
    "integer",
    "merge",
    "nest",
    "new_name",
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

    def holds(self, value: Any) -> bool:
        """`ok(value)`, False for a value of the wrong type (e.g. a string for a number)."""
        try:
            return bool(self.ok(value))
        except TypeError:
            return False

    def check(self, who: str, name: str, value: Any) -> None:
        """Raise `ValueError("<who>: <name> <requirement>, got <value>")` unless `ok(value)`."""
        if not self.holds(value):
            raise ValueError(f"{who}: {name} {self.requirement}, got {value!r}")


class _Choice(Rule):
    """`one_of`: the error names the valid choices."""

    def check(self, who: str, name: str, value: Any) -> None:
        if not self.holds(value):
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


def field(default: Any, *rules: Rule, follows: str | None = None) -> Any:
    """A dataclass field with a default and its validity rules (checked by `validate`).

    `follows` names a problem setting whose resolved value replaces `default` when the benchmark
    harness makes the config for a problem (e.g. `follows="sigma"`: an initial scale that follows the
    base's scale); the config's own default applies elsewhere, and an explicit setting wins
    (`followers`)."""
    return dataclasses.field(default=default, metadata={"rules": rules, "follows": follows})


def followers(cls: type, prefix: str = "") -> dict[str, str]:
    """`{dotted field name: problem setting}` of the fields of config `cls` (and its sub-configs)
    declared with `follows`."""
    out = {}
    for f in dataclasses.fields(cls):
        if _is_sub_config(f.default):
            out.update(followers(type(f.default), prefix=f"{prefix}{f.name}."))
        else:
            source = next(
                (
                    k.__dataclass_fields__[f.name].metadata.get("follows")
                    for k in cls.__mro__
                    if f.name in getattr(k, "__dataclass_fields__", {})
                    and k.__dataclass_fields__[f.name].metadata.get("follows")
                ),
                None,
            )
            if source:
                out[prefix + f.name] = source
    return out


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
        if _is_sub_config(f.default):
            value = _sub_config(who, f.name, f.default, value)
            object.__setattr__(config, f.name, value)
        for rule in _rules(type(config), f.name):
            rule.check(who, f.name, value)


def _is_sub_config(default: Any) -> bool:
    return isinstance(default, Checked) and dataclasses.is_dataclass(default)


def _sub_config(who: str, name: str, default: Any, value: Any) -> Any:
    """A sub-config field's value: an instance of the default's class, or a mapping of its fields
    applied to the default."""
    cls = type(default)
    if isinstance(value, Mapping):
        return configure(cls, value, base=default, who=who, prefix=name + ".")
    if not isinstance(value, cls):
        raise ValueError(
            f"{who}: {name} is a sub-config ({cls.__name__}); give a {cls.__name__} or an object of its "
            f"fields {field_names(cls, prefix=name + '.')}, got {value!r}"
        )
    return value


def field_names(cls: type, prefix: str = "") -> list[str]:
    """Every settable name of config `cls`, sub-config fields as dotted names (`optim.learning_rate`)."""
    out = []
    for f in dataclasses.fields(cls):
        if _is_sub_config(f.default):
            out.extend(field_names(type(f.default), prefix=f"{prefix}{f.name}."))
        else:
            out.append(prefix + f.name)
    return out


def nest(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted keys as nested mappings: `{"optim.learning_rate": 1, "batch_size": 2}` ->
    `{"optim": {"learning_rate": 1}, "batch_size": 2}` (nested mappings are nested recursively)."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if rest:
            value = {rest: value}
        if isinstance(value, Mapping):
            value = nest(value)
            if isinstance(out.get(head), Mapping):
                value = merge(out[head], value)
        out[head] = value
    return out


def merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """`extra` over `base`, recursively for keys whose values are both mappings (dotted keys nested
    first), so that `{"optim": {"grad_clip": 1}}` over `{"optim": {"learning_rate": 2}}` keeps both."""
    out = nest(base)
    for key, value in nest(extra).items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            value = merge(out[key], value)
        out[key] = value
    return out


def new_name(cls: type, key: str) -> str | None:
    """The dotted name that the old flat field `key` of config `cls` has now (`cls.moved`, or the one
    sub-config field of that name), or None."""
    moved = getattr(cls, "moved", {})
    return moved.get(key) or next((n for n in field_names(cls) if n.endswith("." + key)), None)


def configure(
    cls: type, overrides: Mapping[str, Any], *, base: Any = None, who: str | None = None, prefix: str = ""
) -> Any:
    """A `cls` config with `overrides` (dotted or nested keys) replacing fields of `base` (default:
    the class's defaults); a mapping for a sub-config replaces only the fields it names.

    Raises:
        ValueError: naming `who` (default the class), the unknown key(s) as dotted names, the new name
            of a key that moved into a sub-config (or was renamed: `cls.moved`), and every valid name.
    """
    who = who or cls.__name__
    values = nest(overrides)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        valid = field_names(cls, prefix)
        hints = []
        for key in unknown:
            new = None if prefix else new_name(cls, key)
            if new:
                hints.append(f"{key!r} is now {new!r}")
        hint = f" ({'; '.join(hints)})" if hints else ""
        names = [prefix + key for key in unknown]
        raise ValueError(f"{who}: unknown config field(s) {names}{hint}; valid fields: {valid}")
    for name, value in values.items():
        default = getattr(base, name) if base is not None else fields[name].default
        if isinstance(value, Mapping) and _is_sub_config(fields[name].default):
            sub = type(fields[name].default)
            values[name] = configure(sub, value, base=default, who=who, prefix=f"{prefix}{name}.")
    return cls(**values) if base is None else dataclasses.replace(base, **values)


class Checked:
    """Mixin of the method configs: `validate` the declared fields, then the cross-field `check`.

    `moved` maps an old field name to its new dotted name (e.g. `"learning_rate_decay_steps":
    "optim.decay_steps"`), for the error `configure` raises when the old name is given.
    """

    moved: ClassVar[Mapping[str, str]] = {}

    def __post_init__(self) -> None:
        validate(self)
        self.check()

    def check(self) -> None:
        """Rules that involve several fields (none by default); raise a ValueError naming them."""
