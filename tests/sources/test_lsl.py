"""LslSource against real LSL outlets on this machine (loopback)."""

from __future__ import annotations

import threading
import time
import uuid

import numpy as np
import pylsl
import pytest

from closedloop.core.checks import InputMonitor
from closedloop.core.stream import SourceInfo
from closedloop.errors import ConfigError, DeviceLostError, SafetyError
from closedloop.io.outlets import SessionOutlets
from closedloop.runtime.devices import check_input
from closedloop.sources.lsl import LslSource
from closedloop.stim.drivers.sim import SimStimulator

FS = 1000.0
LABELS = ("biceps", "triceps")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def make_outlet(
    name: str,
    *,
    labels: tuple[str, ...] = (*LABELS, "counter"),
    units: tuple[str, ...] = ("microvolts", "microvolts", "samples"),
    rate: float = FS,
    stype: str = "EMG",
    source_id: str | None = None,
    closedloop_session: str | None = None,
) -> pylsl.StreamOutlet:
    sid = name + "-sid" if source_id is None else source_id
    info = pylsl.StreamInfo(name, stype, len(labels), rate, pylsl.cf_double64, sid)
    if closedloop_session is not None:  # as closedloop's own outlets describe themselves
        cl = info.desc().append_child("closedloop")
        cl.append_child_value("session", closedloop_session)
        cl.append_child_value("role", "emg")
    chans = info.desc().append_child("channels")
    for lab, unit in zip(labels, units, strict=True):
        ch = chans.append_child("channel")
        ch.append_child_value("label", lab)
        ch.append_child_value("unit", unit)
        ch.append_child_value("type", "counter" if lab == "counter" else "EMG")
    return pylsl.StreamOutlet(info)


def expected_block(start: int, n: int) -> np.ndarray:
    k = np.arange(start, start + n, dtype=np.float64)
    return np.column_stack([np.sin(k / 7.0) * 50.0, k * 0.5, k])


class Sender(threading.Thread):
    """Pushes ``n_total`` samples (two EMG channels and a counter) at 4x real time."""

    def __init__(self, outlet: pylsl.StreamOutlet, n_total: int, chunk: int = 16) -> None:
        super().__init__(daemon=True)
        self.outlet = outlet
        self.n_total = n_total
        self.chunk = chunk
        self.stop = threading.Event()
        self.t0 = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            if not self.outlet.wait_for_consumers(5.0):
                raise TimeoutError("no consumer")
            self.t0 = pylsl.local_clock()
            start = time.perf_counter()
            sent = 0
            while sent < self.n_total and not self.stop.is_set():
                due = min(self.n_total, int((time.perf_counter() - start) * FS * 4))
                while sent < due:
                    n = min(self.chunk, due - sent)
                    ts = self.t0 + np.arange(sent, sent + n) / FS
                    self.outlet.push_chunk(expected_block(sent, n), ts.tolist())
                    sent += n
                self.stop.wait(0.005)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


def read_until(src: LslSource, n: int, limit: float = 10.0) -> list:
    chunks, got = [], 0
    deadline = time.perf_counter() + limit
    while got < n and time.perf_counter() < deadline:
        c = src.read(0.2)
        if c is not None:
            chunks.append(c)
            got += c.n
    return chunks


def test_every_sample_arrives_in_order_with_labels_rate_units() -> None:
    name = unique("emg")
    outlet = make_outlet(name)
    sender = Sender(outlet, 1500)
    src = LslSource(name=name, resolve_timeout=5.0)
    with src:
        info = src.info
        assert info.name == name and info.fs == FS and info.kind == "lsl"
        assert info.channels == LABELS  # the counter channel is not EMG
        assert info.units == "microvolts"
        sender.start()
        chunks = read_until(src, 1500)
    sender.join(5.0)
    assert sender.error is None
    samples = np.concatenate([c.samples for c in chunks])
    counter = np.concatenate([c.counter for c in chunks])
    ts = np.concatenate([c.timestamps for c in chunks])
    np.testing.assert_array_equal(counter, np.arange(1500))
    np.testing.assert_array_equal(samples, expected_block(0, 1500)[:, :2])
    # raw sender timestamps plus one constant clock offset (measured once at open)
    sent = sender.t0 + np.arange(1500) / FS
    np.testing.assert_allclose(ts - src.clock_offset, sent, rtol=0, atol=1e-9)
    assert abs(src.clock_offset) < 0.01  # same machine
    monitor = InputMonitor(src.info)
    assert [i for c in chunks for i in monitor.check(c).issues] == []


def test_channel_selection() -> None:
    name = unique("emg")
    outlet = make_outlet(name)
    sender = Sender(outlet, 200)
    with LslSource(name=name, channels=["triceps"]) as src:
        assert src.info.channels == ("triceps",)
        sender.start()
        chunks = read_until(src, 200)
    samples = np.concatenate([c.samples for c in chunks])
    np.testing.assert_array_equal(samples[:, 0], expected_block(0, 200)[:, 1])
    with pytest.raises(ConfigError, match="no channel\\(s\\) \\['deltoid'\\].*biceps"):
        LslSource(name=name, channels=["deltoid"], resolve_timeout=2.0).open()
    del outlet


def test_resolve_failure_lists_the_streams_found() -> None:
    other = unique("other")
    outlet = make_outlet(other)
    missing = unique("missing")
    src = LslSource(name=missing, resolve_timeout=0.3)
    with pytest.raises(DeviceLostError) as err:
        src.open()
    msg = str(err.value)
    assert f"no LSL stream with name={missing}" in msg
    assert f"name={other!r} type='EMG' source_id={other + '-sid'!r} channels=3 rate=1000 Hz" in msg
    del outlet


def test_ambiguous_and_unusable_streams() -> None:
    name = unique("twin")
    a = make_outlet(name)
    b = pylsl.StreamOutlet(pylsl.StreamInfo(name, "EMG", 1, FS, pylsl.cf_float32, "other-sid"))
    with pytest.raises(
        ConfigError, match="(?s)2 LSL streams match name=.*other-sid.*choose one as shown"
    ):
        LslSource(name=name, resolve_timeout=2.0).open()
    del a, b
    irregular = unique("markers")
    m = make_outlet(irregular, rate=pylsl.IRREGULAR_RATE)
    with pytest.raises(ConfigError, match="irregular rate"):
        LslSource(name=irregular, resolve_timeout=2.0).open()
    mixed = unique("mixed")
    x = make_outlet(mixed, units=("uV", "mV", "samples"))
    with pytest.raises(ConfigError, match="different units"):
        LslSource(name=mixed, resolve_timeout=2.0).open()
    del m, x
    with pytest.raises(ConfigError, match="exactly one of name=, type=, source_id="):
        LslSource(name="a", type="EMG")


def test_lost_stream_raises_device_lost() -> None:
    name = unique("emg")
    outlet = make_outlet(name)
    sender = Sender(outlet, 100)
    src = LslSource(source_id=name + "-sid", resolve_timeout=5.0)
    src.open()
    sender.start()
    assert len(read_until(src, 100)) > 0
    sender.join(5.0)
    sender.outlet = None  # type: ignore[assignment]
    del outlet  # the sender application goes away
    with pytest.raises(DeviceLostError, match="was lost"):
        deadline = time.perf_counter() + 5.0
        while time.perf_counter() < deadline:
            src.read(0.1)
    src.close()


def test_silent_stream_counts_as_lost() -> None:
    name = unique("emg")
    outlet = make_outlet(name)
    src = LslSource(name=name, resolve_timeout=5.0, lost_after=0.4)
    with src:
        assert src.read(0.1) is None
        with pytest.raises(DeviceLostError, match="no sample for .*lost_after = 0.4"):
            deadline = time.perf_counter() + 3.0
            while time.perf_counter() < deadline:
                src.read(0.1)
    del outlet


# -- closedloop's own streams are never inputs -------------------------------------------------
def session_outlets(name: str) -> SessionOutlets:
    """A session's real outlets (its re-published EMG is ``<name>-EMG``)."""
    return SessionOutlets(name, SourceInfo("amp", FS, LABELS, "microvolts", "lsl"),
                          with_envelope=False)


def test_a_sessions_re_published_emg_is_never_chosen_by_name() -> None:
    name = unique("closedloop-other")
    outlets = session_outlets(name)
    try:
        with pytest.raises(DeviceLostError) as err:
            LslSource(name=f"{name}-EMG", resolve_timeout=1.0).open()
        msg = str(err.value)
        assert "closedloop sessions' own re-published streams" in msg
        assert f"name='{name}-EMG'" in msg and "never select" in msg
        # an amplifier of the same name is the one taken, without ambiguity
        amp = make_outlet(f"{name}-EMG", source_id=unique("amp-sid"))
        with LslSource(name=f"{name}-EMG", resolve_timeout=5.0) as src:
            assert src.closedloop_session is None
            assert src.stream_xml.count("<closedloop>") == 0
        del amp
    finally:
        outlets.close()


def test_a_closedloop_stream_is_never_chosen_by_type() -> None:
    stype = unique("EMG")  # a type no other test on the network uses
    own = make_outlet(unique("copy"), stype=stype, closedloop_session="closedloop-x-1")
    amp_name = unique("amp")
    amp = make_outlet(amp_name, stype=stype)
    with LslSource(type=stype, resolve_timeout=5.0) as src:
        assert src.info.name == amp_name
    del amp
    with pytest.raises(DeviceLostError, match=r"1 stream\(s\) with type=.* closedloop"):
        LslSource(type=stype, resolve_timeout=0.5).open()
    del own


def test_source_id_of_a_closedloop_stream_is_deliberate_and_never_stimulates() -> None:
    name = unique("closedloop-other")
    outlets = session_outlets(name)
    try:
        src = LslSource(source_id=outlets.source_ids["emg"], resolve_timeout=5.0)
        with src:
            assert src.closedloop_session == name
            assert src.info.channels == LABELS
            with pytest.raises(SafetyError, match=f"re-published by closedloop session {name}"):
                check_input(src, SimStimulator())
            assert "detection only" in check_input(src, None)
    finally:
        outlets.close()


def test_several_amplifiers_are_refused_and_listed_with_what_to_type() -> None:
    stype = unique("EMG")
    a, b, c = unique("ampA"), unique("ampB"), unique("ampC")
    shared = unique("shared-sid")
    outs = [make_outlet(a, stype=stype, source_id="weird?&%sid-" + a),
            make_outlet(b, stype=stype, source_id=shared),
            make_outlet(c, stype=stype, source_id=shared),
            make_outlet(unique("own"), stype=stype, closedloop_session="closedloop-x-2")]
    with pytest.raises(ConfigError) as err:
        LslSource(type=stype, resolve_timeout=5.0).open()
    msg = str(err.value)
    assert f"3 LSL streams match type={stype} (closedloop's own streams left out)" in msg
    for n in (a, b, c):  # name, host, source_id, channels, rate
        assert f"name={n!r} type={stype!r} source_id=" in msg
    assert "channels=3 rate=1000 Hz host=" in msg
    # what to type: the source_id where it is unique (encoded), else the name
    assert f"-> --source lsl:source_id=weird%3F%26%25sid-{a}\n" in msg
    assert f"-> --source lsl:name={b}" in msg and f"-> --source lsl:name={c}" in msg
    assert "closedloop-x-2" not in msg and "own-" not in msg
    # and what it says to type works
    with LslSource(source_id="weird?&%sid-" + a, resolve_timeout=5.0) as src:
        assert src.info.name == a
    del outs
