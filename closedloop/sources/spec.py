"""Source specs: one string that says where the EMG comes from.

Forms
-----
``sim[?k=v&...]``
    The simulated patient (built by a factory; see :func:`open_source`).
``brainflow:BOARD[?k=v&...]``
    A BrainFlow board by name or id, with BrainFlow parameters
    (``serial_port``, ``ip_address``, ``ip_port``, ``mac_address``, ``serial_number``,
    ``file``, ``master_board``, ``timeout``, ``other_info``...) and closedloop options
    ``channels=1,2`` (1-based EMG channels), ``labels=biceps,triceps``,
    ``chunk_timeout=5``.
``lsl:name=NAME`` / ``lsl:type=EMG`` / ``lsl:source_id=ID`` ``[?k=v&...]``
    An LSL stream selected by one property; options ``resolve_timeout``,
    ``channels=a,b`` (labels), ``lost_after``.
``replay:FILE.xdf[?stream=NAME&speed=fast|realtime|X&chunk_size=N]``
    A recording replayed through the pipeline.

Values are percent-decoded (``%3F`` for ``?``, ``%26`` for ``&``), so any file name or
stream name can be written.

Each form is its source class's (:meth:`~closedloop.sources.base.Source.parse_spec`):
this module splits a spec, finds the class in :data:`closedloop.registry.SOURCES` (a
``package.module:Class`` spec works too) and hands it the rest.
"""

from __future__ import annotations

import math
import os
from urllib.parse import unquote

from closedloop.errors import ConfigError
from closedloop.sources.base import Source, SourceContext


def forms() -> list[str]:
    """The spec form of every registered source (for help and errors)."""
    from closedloop.registry import SOURCES

    out = []
    for name in SOURCES.names():
        try:
            out.append(SOURCES.load(name).spec_form or f"{name}[:...]")
        except ConfigError:  # an add-on that does not load: still name it
            out.append(f"{name}[:...] (does not load)")
    return out + ["package.module:Class[:TARGET][?k=v...]  (your own source)"]


def _error(spec: str, why: str) -> ConfigError:
    text = "\n  ".join(forms())
    return ConfigError(f"source spec {spec!r}: {why}. Allowed forms:\n  {text}")


def spec_error(spec: str, why: str) -> ConfigError:
    """The error a source's :meth:`~Source.parse_spec` raises (it lists every form)."""
    return _error(spec, why)


def _query(spec: str, text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    if not text:
        return out
    for part in text.split("&"):
        if not part:
            continue
        key, sep, value = part.partition("=")
        key = unquote(key).strip()
        if not sep or not key:
            raise _error(spec, f"option {part!r} must be key=value")
        if key in out:
            raise _error(spec, f"option {key!r} given twice")
        out[key] = unquote(value)
    return out


def split_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """``NAME[:TARGET][?k=v&...]`` as ``(name, target, options)``, percent-decoded.

    ``NAME`` is a registered source (lower-cased) or a ``package.module:Class`` spec (kept
    as written, its target after the next ``:``). The target is left as written (each
    source decodes its own: ``lsl`` splits ``PROP=VALUE`` first); options are decoded.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise _error(str(spec), "it is empty")
    spec = spec.strip()
    head, _, query = spec.partition("?")
    name, colon, target = head.partition(":")
    if "." in name and colon:  # package.module:Class[:TARGET]
        cls, _, target = target.partition(":")
        name = f"{name}:{cls}"
    else:
        name = name.strip().lower()
    return name, target, _query(spec, query)


def _source_class(spec: str, name: str) -> type[Source]:
    from closedloop.registry import SOURCES

    if name not in SOURCES.names() and not SOURCES.is_spec(name):
        raise _error(spec, f"unknown source kind {name!r}; expected one of "
                     f"{', '.join(SOURCES.names())} (or a module:Class of a source)")
    return SOURCES.load(name)


def parse_source_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Split a source spec into its kind and parameters (checked by the source's class).

    Returns
    -------
    kind : str
        ``"sim"``, ``"brainflow"``, ``"lsl"``, ``"replay"`` or another registered name.
    params : dict of str to str
        ``brainflow``: ``board`` plus the options; ``lsl``: the one selecting property
        (``name``, ``type`` or ``source_id``) plus options; ``replay``: ``path`` plus
        options; ``sim``: the options.

    Raises
    ------
    ConfigError
        Malformed spec, naming the problem and listing the allowed forms.
    """
    name, target, options = split_spec(spec)
    cls = _source_class(spec.strip(), name)
    try:
        return name, cls.parse_spec(spec.strip(), target, options)
    except ConfigError as exc:
        msg = str(exc)
        if "Allowed forms" in msg:
            raise
        raise _error(spec.strip(), msg.partition(": ")[2] if msg.startswith("source spec")
                     else msg) from None


#: Longest wait for an LSL stream to appear, s.
MAX_RESOLVE_S = 60.0


def files_read(spec: str) -> list[tuple[str, str]]:
    """``(role, path)`` of the files a source spec reads (a replayed recording, a
    BrainFlow playback file), which no output of the command may replace.

    Raises
    ------
    ConfigError
        Malformed spec (as :func:`parse_source_spec`).
    """
    kind, params = parse_source_spec(spec)
    out = []
    if kind == "replay" and params.get("path"):
        out.append(("replayed recording", params["path"]))
    if params.get("file"):
        out.append(("played-back file", params["file"]))
    return out


def number(spec: str, key: str, value: str, cast: type = float, *,
            hi: float = math.inf) -> float:
    """A positive, finite option value (at most ``hi``)."""
    try:
        number = cast(value)
    except ValueError:
        raise _error(spec, f"option {key}={value!r} must be a number") from None
    if not (math.isfinite(number) and 0 < number <= hi):
        limit = "" if math.isinf(hi) else f", at most {hi:g}"
        raise _error(spec, f"option {key}={value!r} must be a number > 0{limit}")
    return number


def existing_file(spec: str, key: str, path: str) -> str:
    """A file name the system can look up (a missing file is the source's to report)."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        pass
    except (OSError, ValueError) as exc:
        raise _error(spec, f"{key} {path[:80]!r}: {getattr(exc, 'strerror', None) or exc}"
                     ) from None
    return path


def csv_list(value: str) -> list[str]:
    """The non-empty items of a comma-separated list, stripped."""
    return [v.strip() for v in value.split(",") if v.strip()]


def open_source(spec: str, context: SourceContext | None = None) -> Source:
    """Build the source a spec names (not yet opened: call ``open()`` or use ``with``).

    Parameters
    ----------
    spec : str
        A source spec (see the module docstring).
    context : SourceContext, optional
        What the session gives the source (config, seed, stimulator...).

    Raises
    ------
    ConfigError
        Malformed spec, unknown options or values (see :func:`parse_source_spec`).
    """
    name, params = parse_source_spec(spec)
    cls = _source_class(spec.strip(), name)
    return cls.from_spec(spec.strip(), params, context or SourceContext())
