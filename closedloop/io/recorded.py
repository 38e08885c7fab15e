"""The config a recording was made with, as replay and export read it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from closedloop.config import Config, default_config, load_config, parse_config
from closedloop.config.model import tomllib
from closedloop.errors import ConfigError

#: The detector of recordings whose config does not name one: before ``[detector] kind``
#: was recorded, every session ran the envelope threshold detector (the default then;
#: the default is now ``cusum``, which would not read their ``[detector]`` keys).
LEGACY_DETECTOR = "threshold"


def with_legacy_kind(data: Mapping[str, Any]) -> dict[str, Any]:
    """A recorded config's data with ``[detector] kind`` set to :data:`LEGACY_DETECTOR`
    when it names none (see there)."""
    out = dict(data)
    detector = out.get("detector", {})
    if isinstance(detector, Mapping) and "kind" not in detector:
        out["detector"] = {"kind": LEGACY_DETECTOR, **detector}
    return out


#: The cusum band-pass edge of recordings whose ``[detector]`` does not name one: before
#: ``highpass_hz`` existed, cusum ran the ``[filters]`` band as it was (``highpass_hz = 0``;
#: the default is now 30 Hz, which would decide some onsets a sample or more apart).
LEGACY_CUSUM_HIGHPASS_HZ = 0.0

#: What cusum did before each of these keys existed, for a recorded ``[detector]`` that
#: does not name it (a default that changes decisions would otherwise replay an earlier
#: session differently from how it ran): ``highpass_hz`` (above); ``rest_skips_ringing``:
#: the block after an artefact hold, where the band-pass rings, entered the rest estimate;
#: ``artifact_mains_lag``, ``hold_resets_evidence``, ``artifact_ring_ms``: the artefact
#: test compared samples 5 ms apart, the evidence of a knock's rise stayed, and the
#: evidence was frozen 50 ms after a hold.
LEGACY_CUSUM: dict[str, Any] = {
    "highpass_hz": LEGACY_CUSUM_HIGHPASS_HZ,
    "rest_skips_ringing": False,
    "artifact_mains_lag": False,
    "hold_resets_evidence": False,
    "artifact_ring_ms": 50.0,
}


def with_legacy_settings(data: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`with_legacy_kind`, and a cusum ``[detector]`` given the :data:`LEGACY_CUSUM`
    value of every key it does not name (see there)."""
    out = with_legacy_kind(data)
    detector = out.get("detector")
    if isinstance(detector, Mapping) and detector.get("kind") == "cusum":
        out["detector"] = {**LEGACY_CUSUM, **detector}
    return out


#: What ``[safety]`` did before each of these keys existed, for a recorded config of a
#: stimulating session (one with ``[protocol]``) that does not name it:
#: ``wait_for_rate``: stimulation could start before the stream's rate was checked.
LEGACY_SAFETY: dict[str, Any] = {"wait_for_rate": False}


def with_legacy_safety(data: Mapping[str, Any]) -> dict[str, Any]:
    """A recorded config's data with its ``[safety]`` given the :data:`LEGACY_SAFETY`
    value of every key it does not name, when it has a ``[protocol]`` (see there)."""
    out = dict(data)
    safety = out.get("safety", {})
    if "protocol" in out and isinstance(safety, Mapping):
        out["safety"] = {**LEGACY_SAFETY, **safety}
    return out


#: The name a recorded config without one is read with: configs named ``""`` were
#: accepted before names were checked, and their sessions were named so then
#: (:meth:`closedloop.identity.SessionId.new`).
LEGACY_NAME = "session"


def _as_recorded(data: Mapping[str, Any]) -> dict[str, Any]:
    """A recorded config's data as the session ran it: :func:`with_legacy_settings`,
    :func:`with_legacy_safety`, and a blank name read as :data:`LEGACY_NAME` (the
    recording stays replayable)."""
    out = with_legacy_safety(with_legacy_settings(data))
    if isinstance(out.get("name"), str) and not out["name"].strip():
        out["name"] = LEGACY_NAME
    return out


def recorded_detector_kind(config_text: str | None, metadata: Mapping[str, Any]) -> str:
    """The detector kind a recording's session ran, from what its session stream holds
    (the resolved config in its metadata, else its config text; :data:`LEGACY_DETECTOR`
    when neither names one), as :func:`recorded_config` reads it; without parsing the
    rest of the config."""
    resolved = metadata.get("resolved_config")
    data: Any = resolved if isinstance(resolved, Mapping) else {}
    if not data and config_text:
        try:
            data = tomllib.loads(config_text)
        except (tomllib.TOMLDecodeError, RecursionError):
            data = {}
    detector = with_legacy_kind(data).get("detector")
    kind = detector.get("kind") if isinstance(detector, Mapping) else None
    return str(kind) if kind else LEGACY_DETECTOR


def loads_recorded(text: str, source: str) -> Config:
    """A config recorded as TOML text (older recordings), read as the session ran it."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{source}: not a usable config: values are nested too deeply; "
                          "replay it with another --config") from None
    return parse_config(_as_recorded(data), source=source, text=text)


def recorded_config(session: Any, config_path: str | None = None) -> Config:
    """The config of a recording: ``config_path`` if given, else the one it holds
    (every setting as the session resolved it), else defaults on its channels."""
    if config_path:
        return load_config(config_path)
    meta = getattr(session, "metadata", {}) or {}
    source = f"{session.path} (recorded config)"
    if isinstance(meta.get("resolved_config"), dict):
        return parse_config(_as_recorded(meta["resolved_config"]), source=source,
                            text=session.config_text or "")
    if session.config_text:
        return loads_recorded(session.config_text, source)
    return default_config(session.channels)


__all__ = ["LEGACY_CUSUM_HIGHPASS_HZ", "LEGACY_DETECTOR", "LEGACY_NAME", "LEGACY_SAFETY",
           "loads_recorded", "recorded_config", "recorded_detector_kind", "with_legacy_kind",
           "with_legacy_safety", "with_legacy_settings"]
