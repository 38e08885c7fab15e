"""Replay a recorded session's EMG through the same pipeline, sample for sample.

:class:`ReplaySource` reads an XDF recording with
:func:`closedloop.io.xdf.load_session` and delivers its EMG as chunks carrying the
recorded timestamps and counter, unchanged, so the signal core, protocol and guard see
exactly what they saw live (their decisions do not depend on chunk sizes).

Pacing
------
``speed="fast"`` delivers every chunk at once (no waiting). ``"realtime"`` (or a number
``x``, meaning ``x`` times real time) paces against the clock: chunk ``k`` becomes due
when ``(k + 1) * chunk_size / (fs * x)`` seconds have passed since the first
:meth:`ReplaySource.read`, counted from that fixed start, never by adding up sleeps, so
no drift builds up; a consumer that fell behind gets the due chunks without waiting.
The wall clock only paces delivery; it never changes a sample or a timestamp.
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import numpy as np

from closedloop.core.stream import Chunk
from closedloop.errors import ConfigError, InputError, RecordingDamagedError
from closedloop.io.xdf import Session, load_session
from closedloop.sources.base import Source

#: The slowest replay: 100 times slower than real time, where a minute of recording takes
#: 100 minutes. Slower is not a replay anyone means, and far slower (1e-300) no sample
#: would fall due before the watchdog called the replay a stall.
MIN_SPEED = 0.01
#: What a replay speed may be, as every message and ``--help`` say it.
SPEED_RULE = (f"'fast', 'realtime' or a factor of real time from {MIN_SPEED:g} (100 times "
              "slower) upward, e.g. 2")


def parse_speed(speed: str | float) -> float:
    """``"fast"`` (or infinity) -> inf, ``"realtime"`` -> 1.0, a number from
    :data:`MIN_SPEED` -> itself.

    Raises
    ------
    ConfigError
        Anything else: not a number, not above 0, NaN, or below :data:`MIN_SPEED`.
    """
    if isinstance(speed, str):
        text = speed.strip().lower()
        if text == "fast":
            return math.inf
        if text == "realtime":
            return 1.0
        try:
            value = float(text)
        except ValueError:
            value = math.nan
    else:
        value = float(speed)
    if not value >= MIN_SPEED:  # NaN too
        why = (f": slower than {MIN_SPEED:g} a replay takes absurdly long (at {MIN_SPEED:g} a "
               f"minute of recording replays in {1 / MIN_SPEED:g} minutes), and far slower "
               "no sample falls due before its watchdog calls it a stall"
               if 0 < value < MIN_SPEED else "")
        raise ConfigError(f"replay speed {speed!r} is not allowed{why}; expected {SPEED_RULE}")
    return value


class ReplaySource(Source):
    """EMG from a recording, delivered chunk by chunk.

    Parameters
    ----------
    path : str or Path
        XDF recording (closedloop's own, or another tool's with an EMG stream).
    stream : str, optional
        Name (or type) of the EMG stream; see :func:`load_session`.
    speed : {"fast", "realtime"} or float
        Pacing (see the module docstring).
    chunk_size : int, optional
        Samples per chunk (default: 20 ms worth, at least 1).
    session : Session, optional
        An already loaded session (then ``path`` only names it).
    partial : bool
        Deliver the intact part of a recording that is cut short or corrupt (see
        :func:`closedloop.io.xdf.load_session`). Without it such a recording is refused:
        a session run from it would not be the recorded one.
    """

    kind = "replay"
    spec_form = "replay:FILE.xdf[?stream=NAME&speed=fast|realtime|X&chunk_size=N]"
    #: The options a ``replay:`` spec takes.
    OPTIONS = ("stream", "speed", "chunk_size")

    @classmethod
    def parse_spec(cls, spec: str, target: str, options: dict[str, str]) -> dict[str, str]:
        """The recording's path and the options of a ``replay:FILE.xdf`` spec."""
        from urllib.parse import unquote

        from closedloop.sources.spec import spec_error

        path = unquote(target).strip()
        if not path:
            raise spec_error(spec, "replay needs a file (replay:session.xdf)")
        unknown = sorted(set(options) - set(cls.OPTIONS))
        if unknown:
            raise spec_error(spec, f"unknown replay option(s) {unknown}; allowed "
                             f"{list(cls.OPTIONS)}")
        return {"path": path, **options}

    @classmethod
    def from_spec(cls, spec: str, params: dict[str, str], context) -> ReplaySource:  # noqa: ANN001
        """The source of a ``replay:`` spec's parameters."""
        from closedloop.sources.spec import existing_file, number

        chunk = params.get("chunk_size")
        return cls(
            existing_file(spec, "recording", params["path"]),
            stream=params.get("stream"),
            speed=params.get("speed", "fast"),
            chunk_size=None if chunk is None else int(number(spec, "chunk_size", chunk, int)),
        )

    def __init__(
        self,
        path: str | Path,
        *,
        stream: str | None = None,
        speed: str | float = "fast",
        chunk_size: int | None = None,
        session: Session | None = None,
        partial: bool = False,
    ) -> None:
        super().__init__()
        self.path = Path(path)
        self.partial = bool(partial)
        self.stream = stream
        self.speed = parse_speed(speed)
        if chunk_size is not None and int(chunk_size) < 1:
            raise ConfigError(f"replay chunk_size = {chunk_size!r}; expected an integer >= 1")
        self._chunk_size_arg = None if chunk_size is None else int(chunk_size)
        self.session: Session | None = session
        self.chunk_size = 1
        self._pos = 0
        self._t_start: float | None = None
        self._stop = threading.Event()

    def open(self) -> None:
        """Load the recording. Idempotent.

        Raises
        ------
        RecordingDamagedError
            The recording is cut short or corrupt and ``partial`` is False.
        InputError
            Missing or unreadable file, no or ambiguous EMG stream.
        """
        if self.is_open:
            return
        if self.session is None:
            self.session = load_session(self.path, emg_stream=self.stream)
        s = self.session
        if s.damage and not self.partial:
            raise RecordingDamagedError(
                f"{s.damage_report}\nNot replayed: replay its intact part with "
                "'closedloop replay --partial'")
        if not (s.fs > 0):
            raise InputError(
                f"{self.path.name}: stream {s.name!r} has no nominal rate (an irregular "
                "stream); it cannot be replayed as EMG: pick the EMG stream with --stream "
                "NAME, or record the amplifier from a stream with a nominal rate"
            )
        self.chunk_size = self._chunk_size_arg or max(1, round(0.02 * s.fs))
        self._info = s.source_info
        self._pos = 0
        self._t_start = None
        self._stop.clear()
        super().open()

    def close(self) -> None:
        """Stop delivering (wakes a waiting :meth:`read`). Idempotent."""
        self._stop.set()
        super().close()

    @property
    def exhausted(self) -> bool:
        """True once every recorded sample has been delivered."""
        return self.session is not None and self._pos >= self.session.n

    @property
    def position(self) -> int:
        """Index of the next sample to deliver."""
        return self._pos

    def read(self, timeout: float) -> Chunk | None:
        """Next chunk, or None if no sample is due within ``timeout`` or the file is done.

        Paced (a finite speed), a chunk is delivered when its last sample is due; when
        that is more than ``timeout`` away (a slow replay), the samples due by the end
        of ``timeout`` are delivered then, as an amplifier delivers what it has: the
        loop sees data as often as its watchdog needs, and the decisions, which do not
        depend on the chunking, are the same. At the end of the recording it waits
        ``timeout`` (interruptibly) and returns None; check :attr:`exhausted`.
        """
        if not self.is_open or self.session is None:
            raise RuntimeError(f"ReplaySource {self.path.name}: open() it before read()")
        s = self.session
        if self.exhausted:
            self._stop.wait(max(0.0, timeout))
            return None
        stop = min(self._pos + self.chunk_size, s.n)
        if math.isfinite(self.speed):
            now = time.perf_counter()
            if self._t_start is None:
                self._t_start = now
            due = self._t_start + stop / (s.fs * self.speed)
            wait = due - now
            if wait > timeout:  # not all due in time: what is due by then
                if self._stop.wait(max(0.0, timeout)):
                    return None
                due_n = (time.perf_counter() - self._t_start) * s.fs * self.speed
                stop = min(stop, int(math.floor(due_n)))
                if stop <= self._pos:
                    return None
            elif wait > 0 and self._stop.wait(wait):
                return None
        start, self._pos = self._pos, stop
        counter = _counter(s, start, stop)
        return Chunk(
            # NaN/inf as recorded; float32 recordings widened here, chunk by chunk
            samples=np.array(s.received[start:stop], dtype=np.float64),
            timestamps=np.array(s.timestamps[start:stop], copy=True),
            counter=counter,
            arrival_wall=time.perf_counter(),
        )


def _counter(session, start: int, stop: int) -> np.ndarray | None:
    """The counter the live session's source gave for these samples (so the input checks
    see the same gaps and restarts), or the recorded sample counter for recordings that
    do not say (None where the source gave none)."""
    if session.source_counter is None:
        return None if session.counter is None else session.counter[start:stop].copy()
    c = session.source_counter[start:stop]
    return None if np.isnan(c).any() else c.astype(np.int64)

