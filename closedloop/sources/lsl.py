"""EMG from a Lab Streaming Layer stream (any amplifier application that has an outlet).

The stream is resolved by exactly one property (``name``, ``type`` or ``source_id``).

closedloop's own streams (every stream whose description has ``<closedloop>``: a
session's re-published EMG, envelope, markers...) are never selected by ``name=`` or
``type=``: ``--source lsl:type=EMG`` must find the patient's amplifier, not another
session's copy of some EMG. When several other streams match, :meth:`LslSource.open`
refuses and lists them, each with the spec that selects it alone. A ``source_id=`` is a
deliberate choice of one stream and may name a closedloop stream;
:attr:`LslSource.closedloop_session` then says whose, and ``closedloop run`` refuses to
stimulate from it (detection only; see :func:`closedloop.runtime.devices.check_input`).
Channel labels, units and the nominal rate come from the stream itself
(``desc/channels/channel/label`` and ``unit``, ``nominal_srate``). A channel labelled
``counter`` (the self-checking sample counter closedloop's own outlets and the
simulator add) is not EMG: it becomes :attr:`Chunk.counter`.

Timestamps and processing flags
-------------------------------
The inlet is opened with ``proc_none``: liblsl hands over the timestamps exactly as the
sender stamped them. liblsl's dejitter is not used because it fits a line through the
timestamps by sample count, which smears a real gap (lost samples) into the
neighbouring timestamps so :mod:`closedloop.core.checks` could no longer see it, and
the jitter it removes does not affect decisions (they run on sample counts). liblsl's
``proc_clocksync`` is not used either: it adds a correction that is re-estimated every
few seconds, so timestamps would step by its noise.

Instead the clock offset to the sender (``time_correction()``) is measured once at
:meth:`LslSource.open` and added to every timestamp as a constant,
:attr:`LslSource.clock_offset`. Stream time is then in this machine's LSL clock (so the
streams closedloop re-publishes line up with everything else LabRecorder records),
monotonic whenever the sender's is, and identical in a replay, which reads back the
corrected timestamps closedloop recorded. Drift between two machines' clocks over one
session is not corrected (usually well below a millisecond per minute); it only shifts
alignment with other streams, never a decision.

Lost streams
------------
The inlet is created with ``recover=False``, so a vanished outlet raises liblsl's
``LostError`` at once; :meth:`LslSource.read` turns it, and silence longer than
``lost_after`` seconds, into :class:`~closedloop.errors.DeviceLostError`.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Sequence

import numpy as np
import pylsl
from pylsl.util import LostError
from pylsl.util import TimeoutError as LslTimeoutError

from closedloop.core.stream import Chunk, SourceInfo, sample_format
from closedloop.errors import ConfigError, DeviceLostError
from closedloop.identity import OWN_STREAM_XPATH, xpath_literal
from closedloop.io.lsl import (
    channel_field,
    describe_stream,
    find_streams,
    list_streams,
    own_session,
)
from closedloop.sources.base import Source

#: Label of the channel that carries a sample counter instead of EMG.
COUNTER_LABEL = "counter"

_PROPS = ("name", "type", "source_id")


def _choice(info: pylsl.StreamInfo, among: list[pylsl.StreamInfo]) -> str | None:
    """The source spec that selects ``info`` alone among ``among`` (shell-quoted), or None."""
    for prop, value in (("source_id", info.source_id()), ("name", info.name())):
        same = [i for i in among if (i.source_id() if prop == "source_id" else i.name()) == value]
        if value and len(same) == 1:
            encoded = value.replace("%", "%25").replace("?", "%3F").replace("&", "%26")
            return shlex.quote(f"lsl:{prop}={encoded}")
    return None


#: After the first matching stream answered, how long the others get to answer too
#: (several matching streams are refused: which one is meant cannot be told), seconds.
RESOLVE_MORE_S = 0.5


class LslSource(Source):
    """EMG from an LSL stream resolved by one property.

    Parameters
    ----------
    name, type, source_id : str, optional
        Exactly one of them selects the stream.
    resolve_timeout : float
        Seconds to wait for the stream to appear.
    channels : sequence of str, optional
        Labels of the channels to use (default: every channel but ``counter``).
    lost_after : float or None
        Seconds without a sample after which the stream counts as lost (None: only
        liblsl's own detection).
    max_chunk : int
        Most samples returned by one :meth:`read`.
    max_buflen : int
        Seconds liblsl buffers on this side before dropping the oldest samples.

    Raises
    ------
    ConfigError
        Not exactly one property given.
    """

    kind = "lsl"
    spec_form = "lsl:name=NAME | lsl:type=TYPE | lsl:source_id=ID  [?resolve_timeout=S]"
    #: The options an ``lsl:`` spec takes.
    OPTIONS = ("resolve_timeout", "channels", "lost_after")

    @classmethod
    def parse_spec(cls, spec: str, target: str, options: dict[str, str]) -> dict[str, str]:
        """Exactly one selecting property (``name=``, ``type=``, ``source_id=``) and the
        options :data:`OPTIONS`."""
        from urllib.parse import unquote

        from closedloop.sources.spec import spec_error

        prop, eq, value = target.partition("=")
        prop = prop.strip().lower()
        value = unquote(value)
        if not eq or prop not in ("name", "type", "source_id") or not value:
            raise spec_error(spec, "lsl needs exactly one of name=, type=, source_id= with a "
                             "value")
        unknown = sorted(set(options) - set(cls.OPTIONS))
        if unknown:
            raise spec_error(spec, f"unknown lsl option(s) {unknown}; allowed "
                             f"{list(cls.OPTIONS)}")
        if prop in options:
            raise spec_error(spec, f"{prop} given twice")
        return {prop: value, **options}

    @classmethod
    def from_spec(cls, spec: str, params: dict[str, str], context) -> LslSource:  # noqa: ANN001
        """The source of an ``lsl:`` spec's parameters."""
        from closedloop.sources.spec import MAX_RESOLVE_S, csv_list, number

        params = dict(params)
        kwargs: dict = {}
        if "resolve_timeout" in params:
            kwargs["resolve_timeout"] = number(
                spec, "resolve_timeout", params.pop("resolve_timeout"), hi=MAX_RESOLVE_S)
        if "lost_after" in params:
            kwargs["lost_after"] = number(spec, "lost_after", params.pop("lost_after"))
        if "channels" in params:
            kwargs["channels"] = csv_list(params.pop("channels"))
        return cls(**params, **kwargs)

    def __init__(
        self,
        name: str | None = None,
        type: str | None = None,  # noqa: A002 - LSL's own property name
        source_id: str | None = None,
        *,
        resolve_timeout: float = 5.0,
        channels: Sequence[str] | None = None,
        lost_after: float | None = 10.0,
        max_chunk: int = 4096,
        max_buflen: int = 60,
    ) -> None:
        super().__init__()
        given = {k: v for k, v in (("name", name), ("type", type), ("source_id", source_id)) if v}
        if len(given) != 1:
            raise ConfigError(
                "LslSource: give exactly one of name=, type=, source_id= to select the "
                f"stream (got {given or 'none'})"
            )
        ((self.prop, self.value),) = given.items()
        self.resolve_timeout = float(resolve_timeout)
        self.channels_wanted = None if channels is None else [str(c) for c in channels]
        self.lost_after = lost_after
        self.max_chunk = int(max_chunk)
        self.max_buflen = int(max_buflen)
        self.clock_offset = 0.0
        self.stream_xml = ""
        #: The closedloop session whose re-published stream this is (only ever by a
        #: deliberate source_id=), else None.
        self.closedloop_session: str | None = None
        self._inlet: pylsl.StreamInlet | None = None
        self._cols: np.ndarray = np.zeros(0, dtype=np.int64)
        self._counter_col: int | None = None
        self._last_sample_wall = 0.0
        self._delivered = 0

    @property
    def selector(self) -> str:
        """``prop=value`` as given."""
        return f"{self.prop}={self.value}"

    def open(self) -> None:
        """Resolve the stream, read its description and subscribe. Idempotent.

        Raises
        ------
        DeviceLostError
            No stream matched within ``resolve_timeout``; the message lists the streams
            that were found.
        ConfigError
            Several streams matched, or the stream is unusable (irregular rate, string
            format, unknown channel labels, mixed units).
        """
        if self.is_open:
            return
        match = f"{self.prop}={xpath_literal(self.value)}"
        # a source_id names one stream deliberately; name= and type= never pick one of
        # closedloop's own streams (a session's re-published EMG is not an amplifier)
        pred = match if self.prop == "source_id" else f"{match} and not({OWN_STREAM_XPATH})"
        found = self._resolve(pred)
        if not found:
            raise DeviceLostError(self._not_found(match))
        if len(found) > 1:
            raise ConfigError(self._ambiguous(found))
        inlet = pylsl.StreamInlet(
            found[0],
            max_buflen=self.max_buflen,
            recover=False,
            processing_flags=pylsl.proc_none,
        )
        try:
            info = inlet.info(timeout=self.resolve_timeout)
            self._configure(info)
            inlet.open_stream(timeout=self.resolve_timeout)
            try:
                self.clock_offset = float(inlet.time_correction(timeout=self.resolve_timeout))
            except LslTimeoutError:
                raise DeviceLostError(
                    f"LSL stream {self.selector}: no clock-offset answer within "
                    f"{self.resolve_timeout:g} s; check the network between the machines"
                ) from None
        except (LostError, LslTimeoutError) as exc:
            raise DeviceLostError(
                f"LSL stream {self.selector} vanished while connecting ({exc}); is the sender "
                "still running?"
            ) from None
        self._inlet = inlet
        self._last_sample_wall = time.perf_counter()
        self._delivered = 0
        super().open()

    def _resolve(self, pred: str) -> list[pylsl.StreamInfo]:
        """Every stream matching ``pred``, waiting up to ``resolve_timeout`` for the
        first; [] when none appeared (:func:`~closedloop.discovery.find_streams`).

        A stop asked for meanwhile (:attr:`cancelled`) ends the wait at once. Once one
        stream answered, others get :data:`RESOLVE_MORE_S` to answer too.

        Raises
        ------
        DeviceLostError
            The wait was cancelled.
        """
        found = find_streams(pred, self.resolve_timeout, settle=RESOLVE_MORE_S,
                             stop=self.cancelled)
        if self.cancelled():
            raise DeviceLostError(f"stopped while waiting for the LSL stream {self.selector}")
        return found

    def _not_found(self, match: str) -> str:
        """Why nothing matched: the streams visible, and closedloop's own that matched."""
        others = list_streams(1.0)
        listing = "\n  ".join(others) if others else "(no LSL stream at all)"
        msg = f"no LSL stream with {self.selector} within {self.resolve_timeout:g} s. "
        own = [] if self.prop == "source_id" else find_streams(
            f"{match} and {OWN_STREAM_XPATH}", 0.5)
        if own:
            msg += (
                f"{len(own)} stream(s) with {self.selector} are closedloop sessions' own "
                "re-published streams, which name= and type= never select (a session "
                "would stimulate from another session's EMG):\n  "
                + "\n  ".join(describe_stream(i) for i in own) + "\n"
            )
        return (msg + f"Streams visible now:\n  {listing}\nCheck the amplifier application "
                "is streaming, the spelling (case matters) and that both machines are on "
                "the same network")

    def _ambiguous(self, found: list[pylsl.StreamInfo]) -> str:
        """The refusal when several streams match: each, and what to type to take it."""
        lines = []
        for info in found:
            choice = _choice(info, found)
            how = (f"--source {choice}" if choice else
                   "cannot be told apart from another (same name and source_id): stop one")
            lines.append(f"{describe_stream(info)}\n      -> {how}")
        return (f"{len(found)} LSL streams match {self.selector}"
                + (" (closedloop's own streams left out)" if self.prop != "source_id" else "")
                + ":\n  " + "\n  ".join(lines)
                + "\nclosedloop will not guess which one is the patient's amplifier: choose "
                "one as shown")

    def _configure(self, info: pylsl.StreamInfo) -> None:
        self.closedloop_session = own_session(info)
        name = info.name()
        fs = info.nominal_srate()
        if fs <= 0:
            raise ConfigError(
                f"LSL stream {name!r} has an irregular rate; EMG needs a stream with a "
                "nominal sampling rate"
            )
        if info.channel_format() in (pylsl.cf_string, pylsl.cf_undefined):
            raise ConfigError(f"LSL stream {name!r} carries strings, not samples")
        n = info.channel_count()
        labels = channel_field(info, "label")
        units = channel_field(info, "unit")
        types = channel_field(info, "type")
        if len(labels) != n or not all(labels):
            labels = [f"EMG{k + 1}" for k in range(n)]
        units += [""] * (n - len(units))
        types += [""] * (n - len(types))
        counter_col = None
        for k, (lab, typ) in enumerate(zip(labels, types, strict=False)):
            if lab.lower() == COUNTER_LABEL or typ.lower() == COUNTER_LABEL:
                counter_col = k
                break
        if self.channels_wanted is not None:
            missing = [c for c in self.channels_wanted if c not in labels]
            if missing:
                raise ConfigError(
                    f"LSL stream {name!r} has no channel(s) {missing}; its channels are {labels}"
                )
            twice = sorted({c for c in self.channels_wanted if labels.count(c) > 1})
            if twice:
                raise ConfigError(
                    f"LSL stream {name!r} has several channels labelled {twice}; which one "
                    f"is meant cannot be told (its channels are {labels}). Give the stream's "
                    "channels labels of their own, or leave channels= out and name each "
                    "muscle's channel by its 0-based index in the config")
            cols = [labels.index(c) for c in self.channels_wanted]
        else:
            cols = [k for k in range(n) if k != counter_col]
        if not cols:
            raise ConfigError(f"LSL stream {name!r} has no EMG channel besides its counter")
        used_units = {units[k] for k in cols}
        if len(used_units) > 1:
            raise ConfigError(
                f"LSL stream {name!r}: the selected channels have different units "
                f"{sorted(used_units)}; select channels with one unit"
            )
        unit = used_units.pop() or "unknown"
        self._cols = np.asarray(cols, dtype=np.int64)
        self._counter_col = counter_col
        self.stream_xml = info.as_xml()
        fmt = {v: k for k, v in pylsl.info.string2fmt.items()}.get(info.channel_format(), "")
        self._info = SourceInfo(
            name=name,
            fs=float(fs),
            channels=tuple(labels[k] for k in cols),
            units=unit,
            kind="lsl",
            sample_format=sample_format(fmt),  # recorded as the amplifier sends it
        )

    def close(self) -> None:
        """Drop the subscription. Idempotent."""
        inlet, self._inlet = self._inlet, None
        if inlet is not None:
            try:
                inlet.close_stream()
            except Exception:  # noqa: BLE001 - closing must not fail
                pass
            del inlet
        super().close()

    @property
    def position(self) -> int:
        """Samples delivered since :meth:`open`."""
        return self._delivered

    @property
    def exhausted(self) -> bool:
        """Never: a live stream that stops sending has stalled or was lost."""
        return False

    def latest_time_correction(self, timeout: float = 1.0) -> float:
        """The current clock-offset estimate of liblsl (for monitoring drift; not applied)."""
        if self._inlet is None:
            raise DeviceLostError(f"LSL stream {self.selector}: not open")
        try:
            return float(self._inlet.time_correction(timeout=timeout))
        except (LostError, LslTimeoutError) as exc:
            raise DeviceLostError(f"LSL stream {self.selector}: {exc}") from None

    def read(self, timeout: float) -> Chunk | None:
        """Next chunk (up to ``max_chunk`` samples), or None after ``timeout`` seconds.

        Waits inside liblsl (no polling) for the first sample, then takes whatever else
        is already there.

        Raises
        ------
        DeviceLostError
            The outlet disappeared, or sent nothing for ``lost_after`` seconds.
        """
        inlet = self._inlet
        if inlet is None or not self.is_open:
            raise DeviceLostError(f"LSL stream {self.selector}: read() before open()")
        try:
            data, ts = inlet.pull_chunk(
                timeout=max(0.0, timeout),
                max_samples=self.max_chunk,
                min_samples=1,
                as_numpy=True,
            )
        except LostError:
            raise DeviceLostError(
                f"LSL stream {self.selector} was lost (the sender closed or crashed); "
                "restart the amplifier application"
            ) from None
        now = time.perf_counter()
        if ts is None or len(ts) == 0:
            silent = now - self._last_sample_wall
            if self.lost_after is not None and silent > self.lost_after:
                raise DeviceLostError(
                    f"LSL stream {self.selector}: no sample for {silent:.1f} s (lost_after = "
                    f"{self.lost_after:g} s); check the sender and the network"
                )
            return None
        self._last_sample_wall = now
        data = np.asarray(data)
        samples = np.ascontiguousarray(data[:, self._cols], dtype=np.float64)
        timestamps = np.asarray(ts, dtype=np.float64) + self.clock_offset
        counter = None
        if self._counter_col is not None:
            counter = np.rint(data[:, self._counter_col]).astype(np.int64)
        self._delivered += samples.shape[0]
        return Chunk(samples=samples, timestamps=timestamps, counter=counter, arrival_wall=now)
