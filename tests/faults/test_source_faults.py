"""The LSL source stalls, disappears and comes back, or is merely late.

What the loop does (and what a clinician should expect): stimulation never runs on
without data. Data later than the watchdog (``session.watchdog_ms``, 100 ms in the
shipped configs) ends the session with exit 4; a stream that liblsl reports lost ends
it with exit 5, whichever is seen first. The session does not reconnect when a stream
of the same name comes back: electrodes and amplifier must be checked and a new session
started by a person (the same name could even be another amplifier). Data that arrives
late but within the watchdog is not a fault: liblsl buffers it and nothing is lost.

The EMG comes from a thread in this process pushing the simulated patient to a real
LSL outlet in real time (paced against the clock); the loop reads it through
:class:`~closedloop.sources.lsl.LslSource` on loopback.
"""

from __future__ import annotations

import threading
import time
import uuid

import numpy as np
import pylsl
import pytest

from closedloop.runtime.loop import LoopOptions, run_loop
from closedloop.sim.patient import Attempt, SimulatedPatient
from closedloop.sources.lsl import LslSource
from closedloop.sources.sim import patient_settings
from closedloop.stim.drivers.sim import SimStimulator
from tests.faults.conftest import assert_recording_ends_off, run_recorded

FS = 2000.0
CHUNK = 20
SCRIPT = [Attempt("biceps", 2.5, 2.0, 1.0, 0.04)]  # stimulating from ~2.53 s (not in the first 2 s)


class Pusher(threading.Thread):
    """Pushes the simulated patient (two channels and a counter) to an LSL outlet in
    real time. ``hold(s)`` delays the next ``s`` seconds of data (then sends it all),
    ``stall()`` stops sending, ``vanish()`` destroys the outlet, ``respawn()`` makes a
    new outlet of the same name that streams again."""

    def __init__(self, config, name: str) -> None:
        super().__init__(daemon=True)
        self.name_ = name
        self.patient = SimulatedPatient(patient_settings(config), SCRIPT, seed=3)
        self.outlet: pylsl.StreamOutlet | None = self._outlet()
        self.done = threading.Event()
        self.held_until = 0.0
        self.stalled = False
        self.t0 = 0.0

    def _outlet(self) -> pylsl.StreamOutlet:
        info = pylsl.StreamInfo(self.name_, "EMG", 3, FS, pylsl.cf_double64,
                                f"{self.name_}-{uuid.uuid4().hex[:4]}")
        chans = info.desc().append_child("channels")
        for label in ("biceps", "triceps", "counter"):
            chans.append_child("channel").append_child_value("label", label)
        return pylsl.StreamOutlet(info, chunk_size=CHUNK, max_buffered=60)

    def run(self) -> None:
        self.t0 = time.perf_counter()
        i = 0
        while not self.done.is_set():
            due = self.t0 + (i + CHUNK) / FS
            wait = due - time.perf_counter()
            if wait > 0 and self.done.wait(wait):
                break
            if self.stalled or time.perf_counter() < self.held_until or self.outlet is None:
                if self.stalled or self.outlet is None:
                    self.patient.read(CHUNK)  # the clock goes on; these are never sent
                    i += CHUNK
                continue
            while i + CHUNK <= (time.perf_counter() - self.t0) * FS:  # the backlog too
                x = self.patient.read(CHUNK)
                idx = np.arange(i, i + CHUNK, dtype=np.float64)
                self.outlet.push_chunk(np.column_stack((x, idx)), (1000.0 + idx / FS).tolist())
                i += CHUNK

    def hold(self, seconds: float) -> None:
        self.held_until = time.perf_counter() + seconds

    def stall(self) -> None:
        self.stalled = True

    def vanish(self) -> None:
        outlet, self.outlet = self.outlet, None
        del outlet

    def respawn(self) -> None:
        self.outlet = self._outlet()

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=5)


@pytest.fixture
def pusher(config):
    p = Pusher(config, f"fault-emg-{uuid.uuid4().hex[:8]}")
    yield p
    p.stop()


def at_seconds(src: LslSource, pusher: Pusher, seconds: float, action) -> callable:
    """A control callback running ``action`` once, ``seconds`` after the pusher started."""
    done = []

    def control() -> list[str]:
        if not done and time.perf_counter() - pusher.t0 >= seconds:
            done.append(True)
            action()
        return []

    return control


def open_source(pusher: Pusher) -> LslSource:
    src = LslSource(name=pusher.name_, resolve_timeout=5.0)
    src.open()
    pusher.start()
    return src


def test_a_stalled_stream_stops_the_session_exit_4(tmp_path, config, pusher):
    src, stim = open_source(pusher), SimStimulator()
    stim.open()
    rec = run_recorded(tmp_path, config, src, stim,
                       control=at_seconds(src, pusher, 3.5, pusher.stall),
                       options=LoopOptions(duration_s=20.0, watchdog_s=0.1))
    src.close()
    out = rec.out
    assert (out.reason, out.exit_code) == ("stall", 4)
    assert f"no EMG from {pusher.name_!r} for" in out.message
    assert "(watchdog 100 ms): check the amplifier, its cable or the LSL stream" in out.message
    assert 3.0 < out.seconds < 4.0
    assert any(c.is_on for c in stim.commands) and not stim.any_on  # was on, ends off
    assert out.all_off
    assert rec.report.ok, rec.report.summary()  # every sample processed is in the file
    s = rec.session()
    assert s.n == out.samples
    assert_recording_ends_off(s)


def test_a_stream_that_vanishes_and_comes_back_is_not_reused(tmp_path, config, pusher):
    src, stim = open_source(pusher), SimStimulator()
    stim.open()

    def vanish_and_return() -> None:
        pusher.vanish()
        threading.Timer(0.3, pusher.respawn).start()  # the amplifier app restarts

    rec = run_recorded(tmp_path, config, src, stim,
                       control=at_seconds(src, pusher, 3.5, vanish_and_return),
                       options=LoopOptions(duration_s=20.0, watchdog_s=0.1))
    src.close()
    out = rec.out
    assert (out.reason, out.exit_code) in (("stall", 4), ("device", 5))
    assert "no EMG from" in out.message or "was lost" in out.message
    assert 3.0 < out.seconds < 4.0  # nothing after the stream came back
    assert any(c.is_on for c in stim.commands) and not stim.any_on
    assert rec.report.ok, rec.report.summary()
    assert_recording_ends_off(rec.session())


def test_late_data_within_the_watchdog_is_not_a_fault(config, pusher):
    src, stim = open_source(pusher), SimStimulator()
    stim.open()
    out = run_loop(config, src, stim, control=at_seconds(src, pusher, 1.5,
                                                         lambda: pusher.hold(0.15)),
                   options=LoopOptions(duration_s=3.0, watchdog_s=0.6))
    src.close()
    assert (out.reason, out.exit_code) == ("duration", 0), out.message
    assert out.samples_lost == 0 and out.issues == []  # late, not lost
    assert not stim.any_on
