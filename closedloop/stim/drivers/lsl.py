"""A stimulator that publishes each command as a JSON marker on an LSL stream.

Use it to drive an external stimulator program, or to record the stimulation next to
the EMG with LabRecorder. The stream is an irregular-rate, one-channel ``string``
stream of type ``Markers`` (default name ``closedloop-stim``). Each sample is one
JSON object with the fields in :data:`FIELDS`::

    {"muscle": "biceps", "channel": 1, "current_ma": 20.0, "pulse_width_us": 250.0,
     "frequency_hz": 35.0, "sample": 12345, "stream_time": 1234.567, "phase": "plateau"}

and is timestamped with the command's ``stream_time``. ``stop_all`` publishes an off
marker (phase ``stop``, ``sample`` null) for every channel 1..n_channels, stamped with
the injected ``clock()`` (default ``pylsl.local_clock``). The field list and encoding
are also in the stream description (``<desc><encoding>``, ``<fields>``).

LSL details handled here (see ``pylsl.StreamOutlet.push_sample``): a timestamp of
exactly 0.0 means "now" to liblsl, so a command at stream time 0.0 is pushed at 1 ns
instead; a non-finite stream time is replaced by ``clock()`` and published as null.
Pushes are sent asynchronously and liblsl has no flush: destroying the outlet right
after the last push can lose it, so ``close()`` waits ``close_grace_s`` (when anyone
is listening) between the stop markers and destroying the outlet.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import pylsl

from closedloop.errors import DeviceLostError, StimulatorError
from closedloop.stim.base import ChannelOutput, Stimulator
from closedloop.stim.commands import StimCommand

#: The JSON fields of each marker, in order.
FIELDS = (
    "muscle", "channel", "current_ma", "pulse_width_us", "frequency_hz", "sample",
    "stream_time", "phase",
)

#: liblsl reads a timestamp of exactly 0.0 as "stamp with local_clock() now".
_ZERO_STAMP = 1e-9


def _translate(exc: Exception, what: str) -> Exception:
    if isinstance(exc, pylsl.util.LostError):
        return DeviceLostError(f"LSL stimulator stream lost while {what}: {exc}")
    return StimulatorError(f"LSL stimulator failed while {what}: {exc}")


class LslStimulator(Stimulator):
    """Publish stimulation commands as JSON markers on an LSL outlet.

    Parameters
    ----------
    name : str
        LSL stream name.
    source_id : str, optional
        LSL source id (lets recorders re-find the stream after a restart); default
        ``"closedloop-stim:" + name``.
    clock : callable, optional
        Current stream time for ``stop_all`` markers and for commands without a finite
        stream time; default ``pylsl.local_clock``.
    n_channels : int
        Channels announced off by ``stop_all``.
    close_grace_s : float
        Time given to liblsl to send the final stop markers before the outlet is
        destroyed on ``close()`` (only when a consumer is connected).
    sleep : callable
        Used for that wait (injectable for tests).
    """

    def __init__(
        self,
        name: str = "closedloop-stim",
        *,
        source_id: str | None = None,
        clock: Callable[[], float] | None = None,
        n_channels: int = 8,
        close_grace_s: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__()
        if not name:
            raise StimulatorError("LslStimulator: the stream name must not be empty")
        self.name = name
        self.source_id = source_id if source_id is not None else f"closedloop-stim:{name}"
        self.n_channels = n_channels
        self._clock = clock if clock is not None else pylsl.local_clock
        self._outlet: pylsl.StreamOutlet | None = None
        self._muscle: dict[int, str] = {}
        self._grace = close_grace_s
        self._sleep = sleep

    def open(self) -> None:
        """Create the outlet (the stream becomes discoverable)."""
        if self._outlet is not None:
            return
        try:
            info = pylsl.StreamInfo(self.name, "Markers", 1, pylsl.IRREGULAR_RATE, "string",
                                    self.source_id)
            desc = info.desc()
            desc.append_child_value("encoding", "json")
            desc.append_child_value(
                "description",
                "closedloop stimulation commands after the safety guard; one JSON object "
                "per marker, timestamped with the EMG stream time of the deciding sample; "
                "current_ma 0 means off; phase 'stop' markers come from stop_all",
            )
            fields = desc.append_child("fields")
            for f in FIELDS:
                fields.append_child_value("field", f)
            chans = desc.append_child("channels")
            ch = chans.append_child("channel")
            ch.append_child_value("label", "stim_command")
            ch.append_child_value("type", "Markers")
            self._outlet = pylsl.StreamOutlet(info)
        except Exception as exc:  # liblsl raises RuntimeError subclasses
            raise _translate(exc, f"creating outlet {self.name!r}") from exc
        super().open()

    def close(self) -> None:
        """Publish stop markers, give liblsl time to send them, then drop the outlet."""
        try:
            super().close()
        finally:
            outlet, self._outlet = self._outlet, None
            if outlet is not None and self._grace > 0:
                try:
                    if outlet.have_consumers():
                        self._sleep(self._grace)
                except Exception:  # closing must not fail on a status query
                    pass
            del outlet  # destroying the outlet un-publishes the stream

    @property
    def outlet(self) -> pylsl.StreamOutlet | None:
        return self._outlet

    def _push(self, record: dict[str, Any], stamp: float) -> None:
        assert self._outlet is not None
        if stamp == 0.0:
            stamp = _ZERO_STAMP
        self._outlet.push_sample([json.dumps(record)], stamp)

    def apply(self, commands: Sequence[StimCommand]) -> None:
        """Publish one marker per command. Raises StimulatorError when not open."""
        if self._outlet is None or not self.is_open:
            raise StimulatorError(f"LslStimulator {self.name!r} is not open; call open() first")
        for c in commands:
            t = c.stream_time if math.isfinite(c.stream_time) else None
            record = {
                "muscle": c.muscle, "channel": c.channel, "current_ma": c.current_ma,
                "pulse_width_us": c.pulse_width_us, "frequency_hz": c.frequency_hz,
                "sample": c.sample, "stream_time": t, "phase": c.phase,
            }
            try:
                self._push(record, t if t is not None else self._clock())
            except Exception as exc:
                raise _translate(exc, f"publishing a command for {c.muscle!r}") from exc
            self._outputs[c.channel] = ChannelOutput(c.current_ma, c.pulse_width_us,
                                                     c.frequency_hz)
            self._muscle[c.channel] = c.muscle

    def stop_all(self) -> None:
        """Publish an off marker for every channel. A no-op on a closed driver."""
        self._outputs = {ch: ChannelOutput(0.0, o.pulse_width_us, o.frequency_hz)
                         for ch, o in self._outputs.items()}
        if self._outlet is None:
            return
        t = self._clock()
        first: Exception | None = None
        for ch in range(1, self.n_channels + 1):
            record = {
                "muscle": self._muscle.get(ch, ""), "channel": ch, "current_ma": 0.0,
                "pulse_width_us": 0.0, "frequency_hz": 0.0, "sample": None,
                "stream_time": t, "phase": "stop",
            }
            try:
                self._push(record, t)
            except Exception as exc:  # try every channel, then raise
                first = first or exc
        if first is not None:
            raise _translate(first, "publishing stop markers") from first
