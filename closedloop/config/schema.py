"""How settings are declared and checked: one place for ranges, choices and error messages.

Every settings class of the config is a frozen pydantic dataclass made by
:func:`settings`. A field declares its type, its allowed values and its default in one
line::

    @settings
    class EnvelopeSettings:
        kind: Literal["rms", "lowpass", "tkeo"] = "rms"
        window_ms: Annotated[float, Range(2.0, 1000.0)] = 15.0

and that declaration is all there is: pydantic checks it (for a TOML table and for a
constructor call alike), and :func:`config_error` turns pydantic's findings into one
:class:`~closedloop.errors.ConfigError` naming the file, the dotted key path (list
indices included, ``muscles[0].stim.current_ma``), the bad value and everything that is
allowed, in words read off the same declaration. A pydantic message never reaches the
user.

The building blocks:

* :class:`Range`: a finite number (or whole number) with optional bounds; TOML types
  only (no text for numbers, no true/false for numbers). ``limit`` marks a bound that is
  an absolute ceiling or floor of :mod:`closedloop.config.ceilings`, which the message
  then says.
* :class:`Check`: a rule on one value that a type cannot say (mains frequencies, muscle
  names), with the words that describe what passes.
* ``Text`` and ``Flag``: a string and a boolean, strictly (no coercion).
* :func:`invalid`, :func:`missing`, :func:`problem`: what a rule across fields of one
  table raises.
* :func:`parse_table`: one TOML table into one settings class.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import reprlib
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal, TypeVar, overload

import pydantic
import pydantic.dataclasses
from pydantic import ConfigDict, Strict, TypeAdapter, ValidationError
from pydantic_core import PydanticCustomError
from pydantic_core import core_schema as cs
from typing_extensions import dataclass_transform

from closedloop.errors import ConfigError

T = TypeVar("T")

#: Every settings class: unknown keys refused, no NaN or infinity. Strictness is per
#: field (:class:`Range`, ``Text``, ``Flag``: no "3" for 3, no true for 1) so that a TOML
#: array still becomes a tuple.
MODEL_CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False)

#: Where a bound from :mod:`closedloop.config.ceilings` lives (said in messages).
CEILINGS_FILE = "closedloop/config/ceilings.py"


# -- declaring fields ------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Range:
    """A finite number in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``); a whole number
    when the field is declared ``int``. Only TOML numbers pass (not text, not booleans).

    ``limit = "ceiling"`` (``hi`` is an absolute ceiling) or ``"floor"`` (``lo`` is an
    absolute floor) makes the message point at :mod:`closedloop.config.ceilings`.
    """

    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    limit: Literal["", "ceiling", "floor"] = ""

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> cs.CoreSchema:
        lo = self.lo if self.lo > -math.inf else None
        hi = self.hi if self.hi < math.inf else None
        ge, gt = (None, lo) if self.lo_open else (lo, None)
        if source is int:
            return cs.int_schema(strict=True, ge=_whole(ge), gt=_whole(gt), le=_whole(hi))
        return cs.float_schema(strict=True, allow_inf_nan=False, ge=ge, gt=gt, le=hi)

    def describe(self, whole: bool, plural: bool = False) -> str:
        """``a number >= 0.5 and <= 100`` and the like."""
        if whole:
            noun = "whole numbers" if plural else "a whole number"
            if self.lo > -math.inf and self.hi < math.inf:
                text = f"{noun} from {self.lo:g} to {self.hi:g}"
            else:
                text = noun + _bounds(self)
        else:
            text = ("numbers" if plural else "a number") + _bounds(self)
        if self.limit == "ceiling":
            text += f" ({self.hi:g} is the absolute ceiling, {CEILINGS_FILE})"
        elif self.limit == "floor":
            text += f" ({self.lo:g} is the absolute floor, {CEILINGS_FILE})"
        return text


def _whole(x: float | None) -> int | None:
    return None if x is None else int(x)


def _bounds(r: Range) -> str:
    parts = []
    if r.lo > -math.inf:
        parts.append(f"{'>' if r.lo_open else '>='} {r.lo:g}")
    if r.hi < math.inf:
        parts.append(f"<= {r.hi:g}")
    return " " + " and ".join(parts) if parts else ""


@dataclasses.dataclass(frozen=True)
class Check:
    """A rule on one value: ``test(value)`` must be true; ``expected`` says what passes.

    With ``plain`` the check replaces the type check (for a value that may be of
    several types, such as a channel label or index).
    """

    test: Callable[[Any], bool]
    expected: str
    plain: bool = False
    #: What is wrong with a value that fails (said before what is expected), optional.
    why: Callable[[Any], str] | None = None

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> cs.CoreSchema:
        if self.plain:
            return cs.no_info_plain_validator_function(self._validate)
        return cs.no_info_after_validator_function(self._validate, handler(source))

    def _validate(self, value: Any) -> Any:
        if not self.test(value):
            raise invalid("", value, self.expected, self.why(value) if self.why else "")
        return value


#: A text string (no number or boolean turned into text).
Text = Annotated[str, Strict()]
#: ``true`` or ``false`` (no 0/1, no "yes").
Flag = Annotated[bool, Strict()]


def invalid(key: str, value: Any, expected: str, why: str = "") -> PydanticCustomError:
    """The error a rule raises: ``key`` (dotted, relative to the table being checked;
    empty for the value itself) holds ``value``, which is not what is ``expected``
    (``why``, when given, says what is wrong with it)."""
    # the value goes in already shown: pydantic formats the context, and a value may be
    # a 5000-deep table whose full repr would recurse
    return PydanticCustomError(
        "closedloop", "{key} = {value} is not allowed; expected {expected}",
        {"key": key, "value": show(value), "expected": expected, "why": why},
    )


def missing(key: str, why: str) -> PydanticCustomError:
    """The error for a key that a rule needs (``why`` says which rule)."""
    return PydanticCustomError("closedloop_missing", "{key} is missing: {why}",
                               {"key": key, "why": why})


def problem(key: str, text: str) -> PydanticCustomError:
    """Any other finding of a rule, said in full by ``text`` (after ``file: key:``)."""
    return PydanticCustomError("closedloop_problem", "{key}: {text}", {"key": key, "text": text})


# -- the settings decorator ------------------------------------------------------------------
@overload
@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field, pydantic.Field))
def settings(cls: type[T], /) -> type[T]: ...


@overload
def settings(*, kw_only: bool = False) -> Callable[[type[T]], type[T]]: ...


def settings(cls: type[T] | None = None, /, *, kw_only: bool = False) -> Any:
    """Make ``cls`` a frozen, validating settings dataclass.

    It stays a dataclass (attribute access, ``dataclasses.replace``, ``asdict``,
    equality), unknown keys are refused, and a constructor call with a bad value (code
    building settings directly, or ``replace``) raises :class:`ConfigError` like a bad
    config file does, with ``<code>`` as the file.
    """

    def wrap(cls: type[T]) -> type[T]:
        model: Any = pydantic.dataclasses.dataclass(frozen=True, config=MODEL_CONFIG,
                                                    kw_only=kw_only)(cls)
        validating_init = model.__init__

        @functools.wraps(validating_init)
        def init(self: Any, *args: Any, **kwargs: Any) -> None:
            try:
                validating_init(self, *args, **kwargs)
            except ValidationError as exc:
                names = [f.name for f in dataclasses.fields(model) if f.init]
                given = {**dict(zip(names, args, strict=False)), **kwargs}
                raise config_error(exc, model, given, source="<code>",
                                   path=model.__name__) from None

        model.__init__ = init
        return typing.cast("type[T]", model)

    return wrap if cls is None else wrap(cls)


def is_settings(tp: Any) -> bool:
    """True for a class made by :func:`settings` (any pydantic dataclass)."""
    return isinstance(tp, type) and hasattr(tp, "__pydantic_fields__") and (
        dataclasses.is_dataclass(tp))


# -- reading a table ---------------------------------------------------------------------------
@functools.cache
def _adapter(cls: Any) -> TypeAdapter[Any]:
    return TypeAdapter(cls)


def parse_table(cls: type[T], data: Any, *, source: str = "<config>", path: str = "",
                context: Mapping[str, Any] | None = None) -> T:
    """One TOML table (a mapping) into the settings class ``cls``.

    Parameters
    ----------
    cls : settings class
    data : mapping
        The table as parsed from TOML (or JSON, for recorded settings).
    source, path : str
        File name and dotted key path of the table, for messages.
    context : mapping, optional
        What rules across tables need (``muscles``: the muscle names, for
        ``[protocol]``).

    Raises
    ------
    ConfigError
        Naming the file, the key, the bad value and what is allowed.
    """
    if not isinstance(data, Mapping):
        name = f"[{path}]" if path else "the top level"
        raise ConfigError(f"{_where(source, path)} = {show(data)} is not allowed; expected "
                          f"a table ({name})")
    code_only = sorted(set(data) & _code_only(cls))
    if code_only:
        raise ConfigError(f"{_where(source, path)}: unknown key(s) {', '.join(code_only)}; "
                          f"known keys here: {_known(cls)}")
    try:
        out = _adapter(typing.cast(Any, cls)).validate_python(dict(data),
                                                              context=dict(context or {}))
    except ValidationError as exc:
        raise config_error(exc, cls, data, source=source, path=path) from None
    locate(out, source, path)
    return typing.cast(T, out)


def locate(obj: Any, source: str, path: str = "") -> None:
    """Tell ``obj`` and the settings inside it where they were read (``file: path``), for
    the messages of rules across tables. Only classes that declare a ``where`` class
    attribute keep it (an attribute, not a field: a config file cannot set it, equality
    and ``asdict`` ignore it)."""
    if hasattr(type(obj), "where"):
        object.__setattr__(obj, "where", _where(source, path))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if is_settings(type(value)):
            locate(value, source, _dotted(path, [f.name]))
        elif isinstance(value, tuple) and value and is_settings(type(value[0])):
            for i, v in enumerate(value):
                locate(v, source, _dotted(path, [f.name, i]))


def dump(obj: Any) -> Any:
    """Settings as plain TOML/JSON values (tables as dicts, tuples as lists), every field
    included, each object by its own class (a registered kind's settings keep their own
    fields)."""
    if is_settings(type(obj)):
        return {f.name: dump(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [dump(v) for v in obj]
    return obj


# -- messages -----------------------------------------------------------------------------------
_repr = reprlib.Repr()
_repr.maxlevel, _repr.maxstring, _repr.maxother = 3, 80, 80
_repr.maxlist = _repr.maxtuple = _repr.maxdict = 8


def show(value: Any) -> str:
    """``repr`` of a value, shortened (a config may hold a 5000-deep table)."""
    return _repr.repr(value)


def _where(source: str, path: str) -> str:
    return f"{source}: {path or 'top level'}"


def _dotted(base: str, parts: Sequence[str | int]) -> str:
    out = base
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif p:
            out += f".{p}" if out else p
    return out


def _unwrap(tp: Any) -> tuple[Any, list[Any]]:
    """(type, metadata) with ``Annotated`` and ``X | None`` taken apart."""
    meta: list[Any] = []
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp, *extra = typing.get_args(tp)
            meta.extend(extra)
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp, meta
            tp = args[0]
        else:
            return tp, meta


def _element(tp: Any) -> Any:
    """The settings class of a ``tuple[X, ...]`` of settings, else None."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) is tuple and len(args) == 2 and args[1] is Ellipsis:
        inner, _ = _unwrap(args[0])
        return inner if is_settings(inner) else None
    return None


def _walk(model: type, loc: Sequence[str | int]) -> tuple[list[str | int], Any, list[Any]]:
    """Follow an error location through the models: (key path, type, metadata) of the
    deepest field it names. Positions inside a plain value (an element of a list of
    numbers) are not followed: the whole value is reported."""
    tp: Any = model
    meta: list[Any] = []
    parts: list[str | int] = []
    for part in loc:
        if is_settings(tp) and isinstance(part, int):  # a positional constructor argument
            names = [f.name for f in dataclasses.fields(tp) if f.init]
            if part >= len(names):
                break
            part = names[part]
        if is_settings(tp) and isinstance(part, str):
            fields = tp.__pydantic_fields__
            parts.append(part)
            if part not in fields:
                return parts, None, []
            tp, meta = _unwrap(fields[part].rebuild_annotation())
        elif isinstance(part, int) and _element(tp) is not None:
            parts.append(part)
            tp, meta = _element(tp), []
        else:
            break
    return parts, tp, meta


def _value_at(data: Any, parts: Sequence[str | int]) -> Any:
    for p in parts:
        if isinstance(p, str) and isinstance(data, Mapping) and p in data:
            data = data[p]
        elif isinstance(p, int) and isinstance(data, (list, tuple)) and -len(data) <= p < len(
                data):
            data = data[p]
        else:
            return None
    return data


def expected(tp: Any, meta: Sequence[Any], path: str = "") -> str:
    """What a field declared as ``tp`` with ``meta`` allows, in words."""
    for m in meta:
        if isinstance(m, Check):
            return m.expected
    rng = next((m for m in meta if isinstance(m, Range)), None)
    if rng is not None:
        return rng.describe(whole=tp is int)
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(c) for c in typing.get_args(tp))
    if tp is bool:
        return "true or false"
    if tp is str:
        return "a text string"
    if is_settings(tp):
        return f"a table ([{path}])" if path else "a table ([section])"
    if _element(tp) is not None:
        return f"an array of tables ([[{path}]])" if path else "an array of tables"
    args = typing.get_args(tp)
    if typing.get_origin(tp) is tuple and args and Ellipsis not in args:
        inner, inner_meta = _unwrap(args[0])
        rng = next((m for m in inner_meta if isinstance(m, Range)), None)
        what = rng.describe(whole=inner is int, plural=True) if rng else "values"
        return f"a list of {len(args)} {what}"
    return f"a value of type {getattr(tp, '__name__', tp)}"


def _code_only(model: type) -> set[str]:
    """Fields set by code, never by a config file (``metadata={"toml": False}``)."""
    return {f.name for f in dataclasses.fields(model) if not f.metadata.get("toml", True)}


def _known(model: type) -> str:
    fields = getattr(model, "__pydantic_fields__", {})
    return ", ".join(sorted(set(fields) - _code_only(model))) or "none"


def config_error(exc: ValidationError, model: type, data: Any, *, source: str,
                 path: str = "") -> ConfigError:
    """The first problem pydantic found in ``data`` (read into ``model``), as one
    ConfigError: ``file: key.path = value is not allowed; expected ...``."""
    errors = exc.errors(include_url=False, include_input=False)  # no repr of a deep input
    err = errors[0]
    loc = tuple(err["loc"])
    kind = err["type"]
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        where = loc[:-1]
        keys = [str(e["loc"][-1]) for e in errors
                if e["type"] == kind and tuple(e["loc"][:-1]) == where]
        parts, tp, _ = _walk(model, where)
        owner = tp if is_settings(tp) else model
        return ConfigError(
            f"{_where(source, _dotted(path, parts))}: unknown key(s) {', '.join(keys)}; "
            f"known keys here: {_known(owner)}"
        )
    parts, tp, meta = _walk(model, loc)
    if kind.startswith("closedloop"):
        ctx = err.get("ctx") or {}
        key = _dotted(path, parts)
        key = _dotted(key, [ctx["key"]]) if ctx.get("key") else key
        if kind == "closedloop_missing":
            return ConfigError(f"{_where(source, key)} is missing: {ctx['why']}")
        if kind == "closedloop_problem":
            return ConfigError(f"{_where(source, key)}: {ctx['text']}")
        why = f": {ctx['why']}" if ctx.get("why") else ""
        return ConfigError(f"{_where(source, key)} = {ctx['value']} is not allowed{why}; "
                           f"expected {ctx['expected']}")
    full = _dotted(path, parts)
    if kind == "missing":
        return ConfigError(f"{_where(source, full)} is missing; it is required")
    value = _value_at(data, parts) if parts else data
    if kind == "too_short" and _element(tp) is not None and not value:
        return ConfigError(f"{_where(source, full)} is empty; add at least one [[{full}]] "
                           "table")
    section = re.sub(r"\[\d+\]", "", full)  # muscles[0].stim -> muscles.stim
    return ConfigError(f"{_where(source, full)} = {show(value)} is not allowed; expected "
                       f"{expected(tp, meta, section)}")
