"""What is on the LSL network, and what a stream says about itself.

The discovery helpers every layer from :mod:`closedloop.io` up shares: the streams
matching a predicate (:func:`~closedloop.discovery.find_streams`, re-exported), a
one-line description of a stream (:func:`describe_stream`), the list of every visible
stream (:func:`list_streams`, printed when a stream a user asked for is missing), the
channel fields of a stream's description (:func:`channel_field`) and the session a
closedloop stream belongs to (:func:`own_session`). The EMG source
(:mod:`closedloop.sources.lsl`) and the recorder (:mod:`closedloop.io.recorder`) both
name the streams they could not find with them, so they live here, below both.
"""

from __future__ import annotations

import pylsl

from closedloop.discovery import find_streams

__all__ = ["channel_field", "describe_stream", "find_streams", "list_streams", "own_session"]


def describe_stream(info: pylsl.StreamInfo) -> str:
    """One line naming a stream: name, type, source_id, channels, rate, host."""
    rate = info.nominal_srate()
    rate_s = f"{rate:g} Hz" if rate > 0 else "irregular"
    return (
        f"name={info.name()!r} type={info.type()!r} source_id={info.source_id()!r} "
        f"channels={info.channel_count()} rate={rate_s} host={info.hostname()!r}"
    )


def list_streams(wait: float = 1.0) -> list[str]:
    """Describe every LSL stream visible within ``wait`` seconds."""
    return [describe_stream(i) for i in find_streams(None, wait)]


def channel_field(info: pylsl.StreamInfo, field: str) -> list[str]:
    """``desc/channels/channel/<field>`` of every channel ('' where missing)."""
    out: list[str] = []
    ch = info.desc().child("channels").child("channel")
    while not ch.empty():
        out.append(ch.child_value(field))
        ch = ch.next_sibling("channel")
    return out


def own_session(info: pylsl.StreamInfo) -> str | None:
    """The closedloop session a stream belongs to (``desc/closedloop/session``), or None
    for any other stream (see :mod:`closedloop.identity`)."""
    return info.desc().child("closedloop").child_value("session") or None
