"""The config a recording was made with, as replay and export read it."""

from __future__ import annotations

from typing import Any

from closedloop.config import Config, default_config, load_config, loads_config, parse_config


def recorded_config(session: Any, config_path: str | None = None) -> Config:
    """The config of a recording: ``config_path`` if given, else the one it holds
    (every setting as the session resolved it), else defaults on its channels."""
    if config_path:
        return load_config(config_path)
    meta = getattr(session, "metadata", {}) or {}
    if isinstance(meta.get("resolved_config"), dict):
        return parse_config(meta["resolved_config"], source=f"{session.path} (recorded config)",
                            text=session.config_text or "")
    if session.config_text:
        return loads_config(session.config_text, source=f"{session.path} (recorded config)")
    return default_config(session.channels)


__all__ = ["recorded_config"]
