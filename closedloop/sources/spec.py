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
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from urllib.parse import unquote

from closedloop.errors import ConfigError
from closedloop.sources.base import Source

KINDS = ("sim", "brainflow", "lsl", "replay")

FORMS = (
    "sim[?k=v&...]",
    "brainflow:BOARD[?k=v&...]  (e.g. brainflow:cyton?serial_port=/dev/ttyUSB0)",
    "lsl:name=NAME | lsl:type=TYPE | lsl:source_id=ID  [?resolve_timeout=S]",
    "replay:FILE.xdf[?stream=NAME&speed=fast|realtime|X&chunk_size=N]",
)

_LSL_OPTIONS = ("resolve_timeout", "channels", "lost_after")
_REPLAY_OPTIONS = ("stream", "speed", "chunk_size")


def _error(spec: str, why: str) -> ConfigError:
    forms = "\n  ".join(FORMS)
    return ConfigError(f"source spec {spec!r}: {why}. Allowed forms:\n  {forms}")


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


def parse_source_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Split a source spec into its kind and parameters.

    Returns
    -------
    kind : str
        ``"sim"``, ``"brainflow"``, ``"lsl"`` or ``"replay"``.
    params : dict of str to str
        ``brainflow``: ``board`` plus the options; ``lsl``: the one selecting property
        (``name``, ``type`` or ``source_id``) plus options; ``replay``: ``path`` plus
        options; ``sim``: the options.

    Raises
    ------
    ConfigError
        Malformed spec, naming the problem and listing the allowed forms.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise _error(str(spec), "it is empty")
    spec = spec.strip()
    head, _, query = spec.partition("?")
    kind, colon, target = head.partition(":")
    kind = kind.strip().lower()
    params = _query(spec, query)
    if kind == "sim":
        if colon and target:
            raise _error(spec, "sim takes no target after ':' (use sim?k=v)")
        return "sim", params
    if kind == "brainflow":
        board = unquote(target).strip()
        if not board:
            raise _error(spec, "brainflow needs a board (brainflow:synthetic, brainflow:cyton)")
        if "board" in params:
            raise _error(spec, "give the board after 'brainflow:', not as an option")
        return "brainflow", {"board": board, **params}
    if kind == "lsl":
        prop, eq, value = target.partition("=")
        prop = prop.strip().lower()
        value = unquote(value)
        if not eq or prop not in ("name", "type", "source_id") or not value:
            raise _error(spec, "lsl needs exactly one of name=, type=, source_id= with a value")
        unknown = sorted(set(params) - set(_LSL_OPTIONS))
        if unknown:
            raise _error(spec, f"unknown lsl option(s) {unknown}; allowed {list(_LSL_OPTIONS)}")
        if prop in params:
            raise _error(spec, f"{prop} given twice")
        return "lsl", {prop: value, **params}
    if kind == "replay":
        path = unquote(target).strip()
        if not path:
            raise _error(spec, "replay needs a file (replay:session.xdf)")
        unknown = sorted(set(params) - set(_REPLAY_OPTIONS))
        if unknown:
            raise _error(
                spec, f"unknown replay option(s) {unknown}; allowed {list(_REPLAY_OPTIONS)}"
            )
        return "replay", {"path": path, **params}
    raise _error(spec, f"unknown source kind {kind!r}; expected one of {', '.join(KINDS)}")


#: Longest wait for an LSL stream to appear, s: liblsl's wait cannot be interrupted, so
#: Ctrl-C during it is only seen when it ends.
MAX_RESOLVE_S = 60.0


def _number(spec: str, key: str, value: str, cast: type = float, *,
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


def _file(spec: str, key: str, path: str) -> str:
    """A file name the system can look up (a missing file is the source's to report)."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        pass
    except (OSError, ValueError) as exc:
        raise _error(spec, f"{key} {path[:80]!r}: {getattr(exc, 'strerror', None) or exc}"
                     ) from None
    return path


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def open_source(
    spec: str,
    *,
    sim_factory: Callable[[dict[str, str]], Source] | None = None,
) -> Source:
    """Build the source a spec names (not yet opened: call ``open()`` or use ``with``).

    Parameters
    ----------
    spec : str
        A source spec (see the module docstring).
    sim_factory : callable, optional
        Builds the simulated source from the spec's options; default:
        ``closedloop.sources.sim.SimSource()``, which then takes no options.

    Raises
    ------
    ConfigError
        Malformed spec, unknown options or values (see :func:`parse_source_spec`).
    """
    kind, params = parse_source_spec(spec)
    if kind == "sim":
        if sim_factory is not None:
            return sim_factory(params)
        try:
            from closedloop.sources.sim import SimSource  # written alongside; lazy on purpose
        except ImportError as exc:
            raise _error(spec, f"the simulated source is not available ({exc})") from None
        if params:
            raise _error(spec, "sim options need a sim_factory that understands them")
        return SimSource()
    if kind == "brainflow":
        from closedloop.sources.brainflow import BrainFlowSource

        board = params.pop("board")
        if "file" in params:
            _file(spec, "file", params["file"])
        kwargs: dict = {}
        if "channels" in params:
            kwargs["channels"] = [
                int(_number(spec, "channels", c, int)) for c in _csv(params.pop("channels"))
            ]
        if "labels" in params:
            kwargs["labels"] = _csv(params.pop("labels"))
        if "chunk_timeout" in params:
            kwargs["chunk_timeout"] = _number(spec, "chunk_timeout", params.pop("chunk_timeout"))
        if "counter_modulus" in params:
            text = params.pop("counter_modulus")
            kwargs["counter_modulus"] = (
                None if text.lower() == "none" else int(_number(spec, "counter_modulus", text, int))
            )
        return BrainFlowSource(board, params, **kwargs)
    if kind == "lsl":
        from closedloop.sources.lsl import LslSource

        kwargs = {}
        if "resolve_timeout" in params:
            kwargs["resolve_timeout"] = _number(
                spec, "resolve_timeout", params.pop("resolve_timeout"), hi=MAX_RESOLVE_S
            )
        if "lost_after" in params:
            kwargs["lost_after"] = _number(spec, "lost_after", params.pop("lost_after"))
        if "channels" in params:
            kwargs["channels"] = _csv(params.pop("channels"))
        return LslSource(**params, **kwargs)
    from closedloop.sources.replay import ReplaySource

    chunk = params.get("chunk_size")
    return ReplaySource(
        _file(spec, "recording", params["path"]),
        stream=params.get("stream"),
        speed=params.get("speed", "fast"),
        chunk_size=None if chunk is None else int(_number(spec, "chunk_size", chunk, int)),
    )
