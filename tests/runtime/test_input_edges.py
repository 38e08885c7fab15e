"""The loop at the input's edges (issue 12, item 7): absurd stretches, impulsive
artefacts, timestamps that jitter or run at another rate, low sampling rates, and a
patient who contracts while the detector learns rest. Each ends in a session that goes
on (or stops) safely, says what happened on the status line and in the recording's
``input_issue`` markers, and decides the same in any chunking."""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import replace

import numpy as np
import pylsl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from closedloop.core.stream import Chunk
from closedloop.io.outlets import CHANNEL_RESTART
from closedloop.runtime.loop import LoopOptions, run_loop
from closedloop.sim.patient import Attempt, SimulatedPatient
from closedloop.sources.lsl import LslSource
from closedloop.sources.sim import patient_settings
from tests.faults.conftest import FaultySource, on_samples, replaced
from tests.runtime.conftest import (
    ArraySource,
    Capture,
    assert_all_off,
    sim_session,
    with_detector,
)

FS = 2000.0
CHUNK = 20  # 10 ms
NOISE = 5e-6  # the simulated patient's noise RMS (volts)
VOLUNTARY = NOISE * 10 ** (10 / 20)  # its EMG RMS at full activation, 10 dB SNR


def at(t: float) -> int:
    """Index of the chunk that starts at ``t`` seconds."""
    return int(round(t * FS / CHUNK))


def onsets(out, muscle: str = "biceps") -> list[float]:
    return [e.sample / FS for e in out.events if e.kind == "onset" and e.channel == muscle]


def said(out, words: str) -> list[str]:
    return [m for m in out.issues if re.search(words, m)]


def stimulated_session(config, script, faults, seconds):
    """A simulated session with stimulation, its status lines and published markers."""
    src, stim = sim_session(config, script, chunk=CHUNK)
    lines: list[str] = []
    outlets = Capture()
    out = run_loop(config, FaultySource(src, faults), stim, status=lines.append,
                   outlets=outlets, options=LoopOptions(duration_s=seconds, watchdog_s=2.0,
                                                        status_every_s=0.0, history=None))
    return out, stim, lines, outlets


def assert_told(out, lines, outlets, words: str, kind: str, channel: str | None) -> str:
    """The notice is in the summary, on the status line and among the published
    ``input_issue`` markers (which the recording keeps), with its kind and channel."""
    (message, *_) = said(out, words) or [None]
    assert message is not None, "\n".join(out.issues)
    assert f"input: {message}" in lines
    markers = [f for k, _, f in outlets.markers if k == "input_issue" and f["message"] == message]
    assert markers and markers[0]["kind"] == kind and markers[0]["channel"] == channel
    return message


# -- (a) absurd stretches ---------------------------------------------------------------------
@pytest.mark.parametrize("value", ["1e6 x the noise", 1e10, 1e300, np.inf])
def test_10_ms_of_absurd_values_then_an_attempt_1_s_later(config, value):
    """10 ms of values far beyond anything an amplifier gives, on the biceps at rest:
    reported (channel, sample, what to check), never a trigger, and the detector back
    with its usual thresholds in time for the attempt 1 s after the stretch (before
    the fix: 1e10 left the envelope dead for the session, 1e300 NaN, 5 V a train)."""

    def absurd(chunk):
        x = chunk.samples.copy()
        if value == "1e6 x the noise":
            x[:, 0] = 1e6 * NOISE * np.sign(np.random.default_rng(1).standard_normal(CHUNK))
        else:
            x[:, 0] = value
        return [replaced(chunk, x)]

    script = [Attempt("biceps", 5.01, 1.0, 1.0, 0.04)]
    out, stim, lines, outlets = stimulated_session(config, script, {at(4.0): absurd}, 6.5)
    clean, *_ = stimulated_session(config, script, {}, 6.5)
    assert out.exit_code == 0 and out.all_off
    assert_all_off(stim)
    # the attempt, and only it, triggers: as early as without the stretch, to within a
    # sample (the suspended blocks stay out of the detector's rest estimate, and a rest
    # estimate of fewer blocks can move the crossing by a sample)
    assert onsets(out) == pytest.approx(onsets(clean), abs=1.01 / FS)
    assert onsets(out) == pytest.approx([5.01], abs=0.06)
    assert len(on_samples(out.commands)) == len(on_samples(clean.commands)) == 1
    assert abs(on_samples(out.commands)[0] - on_samples(clean.commands)[0]) <= 1
    if value in (np.inf, 1e300):
        words, kind = r"channel biceps: (NaN/inf|values beyond ±1e\+100) .*from sample 8000", \
            "nonfinite"
    else:
        words, kind = r"channel biceps: absurd values at sample 8000, 10 ms", "absurd"
    message = assert_told(out, lines, outlets, words, kind, "biceps")
    assert "Check the amplifier" in message or "check the amplifier" in message
    (marker,) = [(t, f) for k, t, f in outlets.markers if f.get("message") == message]
    t0 = out.events[0].time  # sample 0 (the start-up suspension)
    assert marker[1]["sample"] == 8000 and marker[0] == pytest.approx(t0 + 8000 / FS, abs=1e-9)


# -- (b) impulsive artefacts -------------------------------------------------------------------
SHAPES = {
    "step": np.ones(CHUNK),
    "half sine": np.sin(np.pi * np.arange(CHUNK) / CHUNK),
    "noise": np.random.default_rng(2).standard_normal(CHUNK),
    "one sample": np.r_[1.0, np.zeros(CHUNK - 1)],
}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("size", "before"), [(100, False), (1000, False), (1000, True)])
def test_a_10_ms_transient_far_above_any_voluntary_level_does_not_trigger(
        config, shape, size, before):
    """A knock on the biceps electrode at rest, 100 or 1000 times the voluntary EMG's
    RMS for 10 ms (1000 times when an attempt came before it: "far above" is judged
    against the largest swing of the last minute, contractions included): before the
    fix it started a full train; now it is reported as an impulsive artefact, nothing
    is switched on for it, and the next true attempt triggers."""

    def knock(chunk):
        x = chunk.samples.copy()
        x[:, 0] += size * VOLUNTARY * SHAPES[shape]
        return [replaced(chunk, x)]

    # the first attempt (after the stream's first 2 s, where nothing starts) has its train
    # over at 6.2 s, and the biceps may be stimulated again from 11.2 s (rest_time_s = 5)
    attempts = [2.2, 11.7] if before else [11.7]
    out, stim, lines, outlets = stimulated_session(
        config, [Attempt("biceps", t, 1.0, 1.0, 0.02) for t in attempts], {at(6.5): knock},
        13.2)
    assert out.exit_code == 0 and out.all_off
    assert_all_off(stim)
    assert [s / FS for s in on_samples(out.commands)] == pytest.approx(attempts, abs=0.05)
    assert onsets(out) == pytest.approx(attempts, abs=0.05)
    message = assert_told(out, lines, outlets, r"channel biceps: impulsive artefact at sample "
                          r"130\d\d", "impulse", "biceps")
    assert "not taken as an attempt" in message and "Check the electrode" in message


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_sharp_genuine_attempts_trigger_as_without_the_gate(config, seed):
    """Sharp attempts (5-10 ms ramps) at 10 dB: the gate never holds them; the onsets
    are the samples a session without the gate decides. At 40 dB (the EMG 100 times the
    noise) the first one swings far beyond the rest seen before: the gate holds the
    channel for at most ``impulse_ms``, but an onset decided first goes on (no offset,
    no suspension) and none comes later than ``impulse_ms`` after its time without the
    gate; it is said to be taken as activity, and the next ones are not held."""
    cfg = replace(config, protocol=None)
    off = replace(cfg, artifacts=replace(cfg.artifacts, impulse_ratio=0.0))
    script = [Attempt("biceps", 1.5, 0.8, 1.0, 0.01), Attempt("triceps", 3.0, 0.8, 1.0, 0.01),
              Attempt("biceps", 4.5, 0.8, 1.0, 0.005)]
    for snr in (10.0, 40.0):
        ps = replace(patient_settings(cfg), snr_db=snr)
        x = SimulatedPatient(ps, script, seed=seed).read(int(6 * FS))
        got, _ = run_array(cfg, x)
        want, _ = run_array(off, x)
        for m in ("biceps", "triceps"):
            delay = np.subtract(onsets(got, m), onsets(want, m))
            assert len(delay) == (2 if m == "biceps" else 1), (snr, m)
            assert ((delay >= 0) & (delay <= cfg.artifacts.impulse_ms / 1000)).all(), (snr, m)
        assert not [e for e in got.events if e.kind in ("suspend", "offset")
                    and np.isnan(e.threshold) and e.sample > 0]  # never suspended
        notices = said(got, "impulsive|absurd|far outside|jumped|taken as activity")
        if snr == 10.0:
            assert got.events == want.events and not notices
        else:
            assert all("taken as activity" in m for m in notices) and len(notices) <= 2


# -- chunking changes nothing ------------------------------------------------------------------
def run_array(cfg, x, sizes=(CHUNK,), *, timestamps=None, counter=True, fs=FS,
              outlets=None):
    lines: list[str] = []
    src = ArraySource(x, fs, cfg.muscle_names, sizes, timestamps=timestamps)
    if not counter:
        src = _NoCounter(src)
    src.open()
    out = run_loop(cfg, src, None, status=lines.append, outlets=outlets,
                   options=LoopOptions(watchdog_s=5.0, status_every_s=0.0, history=None))
    return out, lines


def restarts(cap: Capture) -> list[tuple[int, str]]:
    """``(sample, muscle)`` of the ``channel_restart`` markers the loop published."""
    return [(f["sample"], f["muscle"]) for label, _, f in cap.markers
            if label == CHANNEL_RESTART]


class _NoCounter(FaultySource):
    """The source's chunks without their counter (as from a stream that has none)."""

    def __init__(self, inner) -> None:
        super().__init__(inner, {})

    def read(self, timeout: float) -> Chunk | None:
        c = super().read(timeout)
        return None if c is None else Chunk(c.samples, c.timestamps, None, c.arrival_wall)


def _edgy_emg(config) -> np.ndarray:
    script = [Attempt("biceps", 1.0, 0.6, 1.0, 0.02), Attempt("triceps", 2.5, 0.6, 1.0, 0.02),
              Attempt("biceps", 4.2, 0.6, 1.0, 0.01)]
    x = SimulatedPatient(patient_settings(config), script, seed=9).read(int(5.5 * FS))
    n = lambda s: int(s * FS)  # noqa: E731
    x[n(2.0) : n(2.0) + 20, 0] += 1e-2  # a knock (after a contraction: well above it)
    x[n(3.0) : n(3.0) + 7, 1] = 1e10  # absurd values
    x[n(3.5) :, 1] += 4e-3  # the triceps electrode moves: a level shift
    x[n(3.9) : n(3.9) + 3, 0] = np.nan
    return x


@pytest.fixture(scope="module")
def edgy(config):
    """The edgy EMG, what the loop decides on it in 10 ms chunks and where it restarts
    a channel."""
    cfg = replace(config, protocol=None)
    x = _edgy_emg(config)
    cap = Capture()
    ref, _ = run_array(cfg, x, outlets=cap)
    assert len(onsets(ref)) == 2 and len(onsets(ref, "triceps")) == 1
    assert said(ref, "biceps: impulsive artefact") and said(ref, "triceps: absurd values")
    assert said(ref, "triceps: its level jumped") and said(ref, "biceps: NaN/inf")
    assert {m for _, m in restarts(cap)} == {"biceps", "triceps"}
    return cfg, x, ref, restarts(cap)


@settings(max_examples=6, deadline=None)
@given(sizes=st.lists(st.integers(1, 450), min_size=1, max_size=6))
def test_edges_are_chunk_invariant(edgy, sizes):
    """Impulse, absurd values, a level shift and NaN in random chunkings: the same
    events, to the sample, the same messages and the same channel restarts (the
    ``channel_restart`` markers the live view restarts its EMG level on)."""
    cfg, x, ref, ref_restarts = edgy
    cap = Capture()
    got, _ = run_array(cfg, x, sizes, outlets=cap)
    assert got.events == ref.events
    assert sorted(got.issues) == sorted(ref.issues)
    assert restarts(cap) == ref_restarts


# -- (c) timestamps: jitter and rates ----------------------------------------------------------
def _attempts(config, seconds: float) -> np.ndarray:
    script = [Attempt("biceps", 2.5, 0.8, 1.0, 0.04), Attempt("biceps", 4.5, 0.8, 1.0, 0.04)]
    return SimulatedPatient(patient_settings(config), script, seed=2).read(int(seconds * FS))


def _chunk_stamped(n: int, jitter_s: float, seed: int = 0) -> np.ndarray:
    """Timestamps as a sender that stamps each 10 ms chunk when it sends it: the chunk's
    samples spaced 1/fs back from its stamp, the stamp late by up to ``jitter_s``."""
    late = np.repeat(np.random.default_rng(seed).uniform(0.0, jitter_s, n // CHUNK + 1), CHUNK)
    return 100.0 + np.arange(n) / FS + late[:n]


@pytest.mark.parametrize("jitter", ["3 periods per sample", "3 ms per chunk"])
def test_jittering_timestamps_are_not_gaps(config, jitter):
    """Before the fix, every late stamp was a gap: every channel restarted and settled
    at each, and no attempt was ever detected. Now the attempts are detected as with
    exact stamps and no gap is reported; a real gap is still found."""
    cfg = replace(config, protocol=None)
    x = _attempts(config, 6.0)
    n = x.shape[0]
    if jitter == "3 periods per sample":
        ts = 100.0 + (np.arange(n) + np.random.default_rng(1).uniform(0, 3, n)) / FS
    else:
        ts = _chunk_stamped(n, 0.003)
    exact, _ = run_array(cfg, x, counter=False)
    out, _ = run_array(cfg, x, timestamps=ts, counter=False)
    assert onsets(out) == onsets(exact) and len(onsets(out)) == 2
    assert not said(out, "jump|lost"), out.issues
    # a chunk lost at 3.5 s: 10 ms of samples missing, the stamps jump by that
    keep = np.r_[0 : at(3.5) * CHUNK, (at(3.5) + 1) * CHUNK : n]
    out, _ = run_array(cfg, x[keep], timestamps=ts[keep], counter=False)
    (gap,) = said(out, "timestamps jump by")
    assert f"before sample {at(3.5) * CHUNK} " in gap
    assert re.search(r"~(1[4-9]|2[0-6]) sample\(s\)", gap)  # 20, give or take the jitter


@pytest.mark.parametrize("rate", [0.9, 1.1])
def test_a_stream_10_percent_off_its_declared_rate_is_stopped_naming_both(config, rate):
    """Timestamps that advance at 1800 or 2200 samples per second on a stream that
    declares 2000 Hz: stopped after its first 2 s (exit 7, all off), naming both rates."""
    x = _attempts(config, 5.0)
    ts = 100.0 + np.arange(x.shape[0]) / (FS * rate)
    src, stim = sim_session(config, [], chunk=CHUNK)  # only for its stimulator
    arr = ArraySource(x, FS, config.muscle_names, (CHUNK,), timestamps=ts)
    arr.open()
    out = run_loop(config, _NoCounter(arr), stim, options=LoopOptions(watchdog_s=0.1))
    assert (out.reason, out.exit_code, out.all_off) == ("input", 7, True)
    assert f"advance at {FS * rate:.1f} samples per second" in out.message
    assert "declares 2000 Hz (10.0% " in out.message and "nominal_srate" in out.message
    assert out.samples < 2 * FS + CHUNK


@pytest.mark.parametrize("rate", [1.1, 2.0])
def test_a_stream_off_its_declared_rate_never_stimulates(config, rate):
    """The patient tries at 1 s on a stream that declares 2000 Hz but delivers 2200 or
    4000 samples per second (so ramps, on-times and rests on the sample clock last 1.1 x
    or 2 x longer than set): no trial starts and the guard lets nothing on before the
    stream's first 2 s are checked (``[safety] wait_for_rate``), and the check stops the
    session there. With the wait switched off, the same stream stimulates until that
    stop. (A stream more than 6 % slower than it declares shows as gaps from the start:
    its channels are suspended and nothing is detected.)"""
    script = [Attempt("biceps", 1.0, 2.0, 1.0, 0.04)]
    x = SimulatedPatient(patient_settings(config), script, seed=2).read(int(4.0 * FS))
    ts = 100.0 + np.arange(x.shape[0]) / (FS * rate)
    ran = {}
    for wait in (True, False):
        cfg = replace(config, safety=replace(config.safety, wait_for_rate=wait))
        _, stim = sim_session(cfg, [], chunk=CHUNK)  # only for its stimulator
        arr = ArraySource(x, FS, cfg.muscle_names, (CHUNK,), timestamps=ts)
        arr.open()
        out = run_loop(cfg, _NoCounter(arr), stim, options=LoopOptions(watchdog_s=0.1))
        assert (out.reason, out.exit_code, out.all_off) == ("input", 7, True)
        assert out.samples < 2 * FS + CHUNK and "declares 2000 Hz" in out.message
        assert onsets(out) == pytest.approx([1.0], abs=0.1)  # the attempt was seen
        ran[wait] = ([a.command for a in stim.log if a.command.is_on], out)
    on, out = ran[True]
    assert on == [] and out.trials["trials"] == 0 and out.n_violations == 0
    on, out = ran[False]
    assert on and on[0].sample < 1.1 * FS and out.trials["trials"] == 1


def _send(name: str, x: np.ndarray, declared: float, true_rate: float, jitter_s: float,
          per_sample: bool, seconds: float) -> None:
    """An LSL outlet (no counter channel) fed in real time from its own process (so the
    loop under test cannot starve it), 10 ms chunks stamped late by up to ``jitter_s``
    (each chunk, or each sample): what a sender that does not dejitter gives."""
    info = pylsl.StreamInfo(name, "EMG", x.shape[1], declared, pylsl.cf_double64, name)
    chans = info.desc().append_child("channels")
    for label in ("biceps", "triceps"):
        chans.append_child("channel").append_child_value("label", label)
    outlet = pylsl.StreamOutlet(info)
    if not outlet.wait_for_consumers(10.0):
        return
    rng = np.random.default_rng(3)
    t0 = pylsl.local_clock()
    start, sent = time.perf_counter(), 0
    while sent < min(x.shape[0], int(seconds * true_rate)):
        due = min(x.shape[0], int((time.perf_counter() - start) * true_rate))
        while sent + CHUNK <= due:
            late = rng.uniform(0.0, jitter_s, CHUNK if per_sample else 1)
            ts = t0 + np.arange(sent, sent + CHUNK) / true_rate + late
            outlet.push_chunk(x[sent : sent + CHUNK], ts.tolist())
            sent += CHUNK
        time.sleep(0.002)
    time.sleep(1.0)


def _lsl_session(config, declared, true_rate, jitter_s, seconds, per_sample=False):
    import multiprocessing

    x = _attempts(config, seconds + 1.0)
    name = f"edges-{uuid.uuid4().hex[:10]}"
    sender = multiprocessing.get_context("spawn").Process(
        target=_send, args=(name, x, declared, true_rate, jitter_s, per_sample, seconds + 1.0),
        daemon=True)
    sender.start()
    src = LslSource(name=name, resolve_timeout=20.0)
    try:
        src.open()
        cfg = replace(config, protocol=None)
        return run_loop(cfg, src, None, options=LoopOptions(
            duration_s=seconds, watchdog_s=config.session.watchdog_ms / 1000.0))
    finally:
        src.close()
        sender.terminate()
        sender.join(5.0)


@pytest.mark.parametrize("per_sample", [False, True], ids=["chunk stamps", "sample stamps"])
def test_a_real_time_lsl_stream_with_jittering_stamps_runs_to_its_end(config, per_sample):
    """A live LSL stream without counter whose stamps jitter by up to 4 ms (each chunk's,
    or each sample's), with the shipped watchdog (100 ms): the session runs to its
    duration and detects the attempts. Before the fix every late stamp was a gap: every
    channel restarted and settled there, no attempt was detected, and with jittering
    sample stamps (a gap at nearly every sample, each restart recomputing the filter's
    steady state) the loop fell behind until the watchdog stopped it."""
    out = _lsl_session(config, FS, FS, 0.004, 5.5, per_sample)
    assert out.reason == "duration", out.message
    assert not said(out, "jump|lost"), out.issues
    assert onsets(out) == pytest.approx([2.5, 4.5], abs=0.1)


def test_a_real_time_lsl_stream_10_percent_slow_is_stopped(config):
    out = _lsl_session(config, FS, 0.9 * FS, 0.002, 4.0)
    assert (out.reason, out.exit_code) == ("input", 7), out.message
    assert "declares 2000 Hz" in out.message and "slower" in out.message
    assert re.search(r"advance at 1[78]\d\d\.\d samples per second", out.message)


# -- (d) low sampling rates --------------------------------------------------------------------
@pytest.mark.parametrize(("fs", "band"), [(250.0, "20-112.5 Hz"), (500.0, "20-225 Hz")])
def test_a_low_rate_source_says_which_band_is_left(config, fs, band):
    cfg = replace(config, protocol=None)
    x = np.random.default_rng(0).normal(0.0, NOISE, (int(3 * fs), 2))
    outlets = Capture()
    lines: list[str] = []
    src = ArraySource(x, fs, cfg.muscle_names, (max(1, int(fs / 100)),))
    src.open()
    out = run_loop(cfg, src, None, status=lines.append, outlets=outlets,
                   options=LoopOptions(watchdog_s=5.0, status_every_s=0.0))
    assert out.exit_code == 0
    message = assert_told(out, lines, outlets, f"sampled at {fs:g} Hz, so only {band} of the "
                          "configured 20-450 Hz band", "band", None)
    assert "Use 1 kHz or more" in message
    assert [f["sample"] for k, _, f in outlets.markers if f.get("message") == message] == [0]


def test_a_source_at_1_khz_or_more_says_nothing_about_its_band(config):
    cfg = replace(config, protocol=None)
    x = np.random.default_rng(0).normal(0.0, NOISE, (3000, 2))
    out, _ = run_array(cfg, x, (10,), fs=1000.0)
    assert not said(out, "band")


@pytest.mark.parametrize("fs", [100.0, 150.0])
def test_a_source_below_200_hz_is_refused(config, fs):
    """At 100 Hz the band left would be 20-45 Hz, under the mains frequency: refused
    before anything runs (exit 7), with what to do; nothing is ever switched on."""
    src, stim = sim_session(config, [], chunk=CHUNK)
    arr = ArraySource(np.zeros((int(2 * fs), 2)), fs, config.muscle_names, (5,))
    arr.open()
    out = run_loop(config, arr, stim, options=LoopOptions(watchdog_s=2.0))
    assert (out.reason, out.exit_code, out.all_off) == ("input", 7, True)
    assert f"delivers {fs:g} Hz; closedloop needs 200-20000 Hz" in out.message
    assert "Set the amplifier's sampling rate" in out.message
    assert out.samples == 0 and not out.commands and not stim.log


# -- (e) contracting while rest is learnt -------------------------------------------------------
@pytest.mark.parametrize("detector", ["cusum", "threshold"])
@pytest.mark.parametrize(("level", "ramp"), [(1.0, 0.3), (1.0, 0.02), (0.6, 0.3)])
def test_contracting_while_rest_is_learnt_gives_a_warning_not_a_blind_session(
        config, level, ramp, detector):
    """The patient holds the biceps from the very start for 3 s, then relaxes: before
    the fix that contraction was learnt as rest and the next attempts went unnoticed,
    silently. Now the channel says what it learnt was not quiet, learns rest again,
    and the attempts 1.5 s and 4 s after relaxing trigger. The threshold detector
    waits for quiet rest and says when it is ready; cusum learns again at once from the
    quiet blocks that showed it, and says so in the same notice."""
    config = with_detector(config, detector)
    script = [Attempt("biceps", 0.0, 3.0, level, ramp), Attempt("biceps", 4.5, 1.0, 1.0, 0.04),
              Attempt("biceps", 7.0, 1.0, 1.0, 0.04)]
    out, stim, lines, outlets = stimulated_session(config, script, {}, 8.5)
    assert out.exit_code == 0 and out.all_off
    assert_all_off(stim)
    assert onsets(out) == pytest.approx([4.5, 7.0], abs=0.1)
    if detector == "cusum":
        message = assert_told(out, lines, outlets, r"channel biceps: rest was not quiet",
                              "rest", "biceps")
        assert "(the muscle was active then)" in message
        assert "rest learnt again from the quiet signal" in message
        return
    message = assert_told(out, lines, outlets, r"channel biceps: what it learnt as rest at "
                          r"sample \d+ was not quiet", "rest", "biceps")
    assert "the patient was contracting" in message and "Learning rest again" in message
    assert_told(out, lines, outlets, r"channel biceps: rest learnt at sample \d+; detector "
                "ready", "recovered", "biceps")
