"""samplers.fields: per-field rules, one checker, clear errors, JSON lists become tuples."""

from __future__ import annotations

import dataclasses

import pytest

from samplers.fields import (
    INTEGER,
    NON_NEGATIVE,
    POSITIVE,
    POSITIVE_OR_NONE,
    WIDTHS,
    Checked,
    configure,
    field,
    field_names,
    integer,
    merge,
    nest,
    one_of,
    within,
)

CHOICES = {"a": 1, "b": 2}


@dataclasses.dataclass(frozen=True)
class _Config(Checked):
    rate: float = field(1e-3, POSITIVE)
    clip: float | None = field(None, POSITIVE_OR_NONE)
    eps: float = field(0.0, NON_NEGATIVE)
    count: int = field(2, integer(2))
    every: int | None = field(None, integer(1, optional=True))
    offset: int = field(-3, INTEGER)
    widths: tuple[int, ...] = field((4, 4), WIDTHS)
    kind: str = field("a", one_of(CHOICES))
    late: str = field("x", one_of(lambda: LATE))
    fraction: float = field(0.5, within(0, 1))
    window: float = field(0.0, within(0, 0.5, closed="left"))
    free: int = 7  # no rule

    def check(self):
        if self.count > 100 and self.every is None:
            raise ValueError("_Config: count > 100 needs every")


LATE = ("x", "y")  # defined after the config: one_of reads it when a config is made


def test_defaults_pass_and_lists_become_tuples():
    config = _Config(widths=[8, 8])
    assert config.widths == (8, 8) and hash(config) == hash(_Config(widths=(8, 8)))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"rate": 0.0}, "_Config: rate must be positive, got 0.0"),
        ({"clip": -1.0}, "clip must be positive or None"),
        ({"eps": -0.1}, "eps must be >= 0"),
        ({"count": 1}, "count must be an integer >= 2, got 1"),
        ({"count": True}, "count must be an integer >= 2, got True"),
        ({"every": 0}, "every must be a positive integer or None"),
        ({"offset": 1.5}, "offset must be an integer"),
        ({"widths": (4, 0)}, "widths must be a non-empty tuple of positive widths"),
        ({"widths": ()}, "widths must be a non-empty tuple of positive widths"),
        ({"kind": "c"}, r"_Config: unknown kind 'c'; valid choices: \['a', 'b'\]"),
        ({"late": "z"}, r"valid choices: \['x', 'y'\]"),
        ({"fraction": 1.5}, r"fraction must lie in \[0, 1\], got 1.5"),
        ({"window": 0.5}, r"window must lie in \[0, 0.5\)"),
        ({"count": 200}, "count > 100 needs every"),
    ],
)
def test_each_rule_names_the_class_the_field_and_the_requirement(overrides, message):
    with pytest.raises(ValueError, match=message):
        _Config(**overrides)


def test_valid_values_at_the_edges():
    _Config(fraction=0.0, window=0.0, every=1, eps=0.0, clip=None, count=200, late="y")
    assert within(0, 1, closed="right", optional=True).ok(None)
    assert not within(0, 1, closed="right").ok(0.0)


@dataclasses.dataclass(frozen=True)
class _Child(_Config):
    count: int = 5  # a new default only: the base's rules still apply


def test_a_subclass_default_keeps_the_base_rules():
    assert _Child().count == 5
    with pytest.raises(ValueError, match="_Child: count must be an integer >= 2"):
        _Child(count=1)


# ---------------------------------------------------------------------------------------------
# composed configs: sub-configs, nested and dotted overrides
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Inner(Checked):
    rate: float = field(1e-3, POSITIVE)
    widths: tuple[int, ...] = field((4, 4), WIDTHS)


@dataclasses.dataclass(frozen=True)
class _Outer(Checked):
    moved = {"old_rate": "inner.rate"}

    inner: _Inner = field(_Inner(widths=(2,)))
    count: int = field(2, integer(2))


def test_sub_config_from_a_mapping_replaces_only_the_named_fields():
    outer = _Outer(inner={"rate": 0.5})
    assert outer.inner == _Inner(rate=0.5, widths=(2,))  # the class's default sub-config, not _Inner()
    assert hash(outer) == hash(_Outer(inner=_Inner(rate=0.5, widths=(2,))))


def test_configure_takes_dotted_and_nested_keys_over_a_base():
    base = configure(_Outer, {"inner.rate": 0.5, "count": 3})
    assert base == _Outer(inner=_Inner(rate=0.5, widths=(2,)), count=3)
    again = configure(_Outer, {"inner": {"widths": [8]}}, base=base)
    assert again.inner == _Inner(rate=0.5, widths=(8,)) and again.count == 3
    assert field_names(_Outer) == ["inner.rate", "inner.widths", "count"]


def test_merge_and_nest_are_deep():
    assert nest({"a.b.c": 1, "a.b.d": 2, "e": 3}) == {"a": {"b": {"c": 1, "d": 2}}, "e": 3}
    assert merge({"a": {"b": 1, "c": 2}}, {"a.c": 3, "d": 4}) == {"a": {"b": 1, "c": 3}, "d": 4}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"rate": 1.0},
            r"unknown config field\(s\) \['rate'\] \('rate' is now 'inner.rate'\); valid fields: "
            r"\['inner.rate', 'inner.widths', 'count'\]",
        ),
        ({"old_rate": 1.0}, r"'old_rate' is now 'inner.rate'"),
        ({"inner.speed": 1.0}, r"unknown config field\(s\) \['inner.speed'\]; valid fields: \['inner.rate'"),
        ({"inner": {"rate": -1.0}}, "_Inner: rate must be positive, got -1.0"),
        (
            {"inner": "fast"},
            r"inner is a sub-config \(_Inner\); give a _Inner or an object of its fields "
            r"\['inner.rate', 'inner.widths'\], got 'fast'",
        ),
    ],
)
def test_configure_errors_name_the_valid_dotted_fields(overrides, message):
    with pytest.raises(ValueError, match=message):
        configure(_Outer, overrides)
