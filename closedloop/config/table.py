"""Typed reading of TOML tables with errors that name the file, key, value and range.

Every settings dataclass in closedloop is read through a :class:`Table`, which:

* knows where it came from (file and dotted key path) so every error can say so;
* checks type and range of each value it hands out;
* refuses unknown keys when :meth:`Table.finish` is called (typos are errors);
* remembers every value it handed out, defaults included (:meth:`Table.resolved`), so a
  recording can keep the settings a session really ran with: a replay built from them
  decides the same even after a default changed.

Example
-------
>>> t = Table({"k_on": 3.0}, source="biceps.toml", path="detector")
>>> t.float("k_on", 3.0, lo=0.5, hi=50.0)
3.0
>>> t.finish()
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from closedloop.errors import ConfigError

_MISSING = object()


class Table:
    """A TOML table being validated. See the module docstring."""

    def __init__(self, data: Mapping[str, Any], *, source: str = "<config>", path: str = ""):
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: [{path or 'top level'}] must be a table, got {data!r}")
        self.data = dict(data)
        self.source = source
        self.path = path
        self._used: set[str] = set()
        self._given: dict[str, Any] = {}  # every value handed out (sub-tables as Tables)

    # -- naming ----------------------------------------------------------------------
    def where(self, key: str | None = None) -> str:
        """``file: section.key`` for error messages."""
        full = ".".join(p for p in (self.path, key) if p)
        return f"{self.source}: {full or 'top level'}"

    def error(self, key: str, value: Any, allowed: str) -> ConfigError:
        """A ConfigError naming file, key, bad value and what is allowed."""
        return ConfigError(f"{self.where(key)} = {value!r} is not allowed; expected {allowed}")

    # -- access ------------------------------------------------------------------------
    def has(self, key: str) -> bool:
        return key in self.data

    def _get(self, key: str, default: Any) -> Any:
        self._used.add(key)
        if key in self.data:
            value = self.data[key]
        elif default is _MISSING:
            raise ConfigError(f"{self.where(key)} is missing; it is required")
        else:
            value = default
        self._given[key] = value
        return value

    def resolved(self) -> dict[str, Any]:
        """Every key read so far with the value it resolved to (defaults filled in),
        sub-tables likewise: reading this dict again gives the same settings."""
        def plain(v: Any) -> Any:
            if isinstance(v, Table):
                return v.resolved()
            if isinstance(v, (list, tuple)):
                return [plain(x) for x in v]
            return v

        return {k: plain(v) for k, v in self._given.items()}

    def float(
        self,
        key: str,
        default: Any = _MISSING,
        *,
        lo: float = -math.inf,
        hi: float = math.inf,
        lo_open: bool = False,
        allow_none: bool = False,
    ) -> float | None:
        """A finite number in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``)."""
        value = self._get(key, default)
        if value is None and allow_none:
            return None
        rng = f"a number {'>' if lo_open else '>='} {lo:g} and <= {hi:g}"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(key, value, rng)
        value = float(value)
        if not math.isfinite(value) or value > hi or value < lo or (lo_open and value == lo):
            raise self.error(key, value, rng)
        return value

    def int(
        self, key: str, default: Any = _MISSING, *, lo: int = -(2**62), hi: int = 2**62
    ) -> int:
        """An integer in ``[lo, hi]``."""
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise self.error(key, value, f"a whole number from {lo} to {hi}")
        return int(value)

    def bool(self, key: str, default: Any = _MISSING) -> bool:
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise self.error(key, value, "true or false")
        return value

    def str(
        self, key: str, default: Any = _MISSING, *, choices: Iterable[str] | None = None,
        allow_none: bool = False,
    ) -> str | None:
        """A string, one of ``choices`` when given."""
        value = self._get(key, default)
        if value is None and allow_none:
            return None
        if not isinstance(value, str):
            raise self.error(key, value, "a text string")
        if choices is not None:
            options = list(choices)
            if value not in options:
                raise self.error(key, value, "one of " + ", ".join(repr(c) for c in options))
        return value

    def floats(
        self, key: str, default: Any = _MISSING, *, length: int | None = None,
        lo: float = -math.inf, hi: float = math.inf,
    ) -> tuple[float, ...]:
        """A list of finite numbers in range, of a fixed length when given."""
        value = self._get(key, default)
        what = f"a list of {length or 'any number of'} numbers between {lo:g} and {hi:g}"
        if not isinstance(value, (list, tuple)) or (length is not None and len(value) != length):
            raise self.error(key, value, what)
        out = []
        for v in value:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise self.error(key, value, what)
            if not math.isfinite(float(v)) or not lo <= float(v) <= hi:
                raise self.error(key, value, what)
            out.append(float(v))
        return tuple(out)

    def table(self, key: str, default: Any = _MISSING) -> Table:
        """A sub-table (``{}`` when absent and a default of ``{}`` is given)."""
        value = self._get(key, default)
        if not isinstance(value, Mapping):
            raise self.error(key, value, "a table ([section])")
        child = Table(value, source=self.source, path=".".join(p for p in (self.path, key) if p))
        self._given[key] = child
        return child

    def tables(self, key: str, default: Any = _MISSING) -> list[Table]:
        """An array of tables (``[[key]]``)."""
        value = self._get(key, default)
        if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
            raise self.error(key, value, "an array of tables ([[section]])")
        base = ".".join(p for p in (self.path, key) if p)
        children = [Table(v, source=self.source, path=f"{base}[{i}]") for i, v in enumerate(value)]
        self._given[key] = children
        return children

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        """The value unchecked (the caller checks it and uses :meth:`error`)."""
        return self._get(key, default)

    def finish(self) -> None:
        """Refuse keys nobody asked for: a typo must not be silently ignored."""
        unknown = sorted(set(self.data) - self._used)
        if unknown:
            known = ", ".join(sorted(self._used)) or "none"
            raise ConfigError(
                f"{self.where()}: unknown key(s) {', '.join(unknown)}; known keys here: {known}"
            )
