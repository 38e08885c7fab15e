"""Bad input from the source: the session goes on, says what it saw, never stimulates
from it, and records everything.

One recorded session on the simulated patient whose sender clock runs 5 % fast (the
whole stream) and whose stream suffers, at rest, one of each: a knock on an electrode
(10 ms of 10 mV), 10 ms of absurd values (1e10), a NaN burst, an inf burst, a dropped
chunk, a duplicated chunk, a chunk stamped 50 ms in the past and a channel going flat
for a second. The patient tries at 2 s and at 12.5 s: those two
attempts, and only they, start stimulation. A channel pinned at its rail is tested
apart.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from closedloop.io.outlets import CHANNEL_RESTART
from closedloop.io.recorded import recorded_config
from closedloop.runtime.loop import LoopOptions, run_loop
from closedloop.runtime.replay import check, replay_file, replay_session
from closedloop.sim.patient import Attempt
from tests.faults.conftest import (
    FaultySource,
    Recorded,
    assert_recording_ends_off,
    on_samples,
    replaced,
    run_recorded,
)
from tests.runtime.conftest import Capture, assert_all_off, sim_session, with_detector

FS = 2000.0
CHUNK = 20  # 10 ms
SCRIPT = [Attempt("biceps", 2.0, 1.0, 1.0, 0.04), Attempt("biceps", 12.5, 1.0, 1.0, 0.04)]
SECONDS = 14.0
RATE = 1.05  # the sender's clock runs 5 % fast: its timestamps advance 1/1.05 s per second


def at(t: float) -> int:
    """Index of the chunk that starts at ``t`` seconds."""
    return int(round(t * FS / CHUNK))


def fast_clock(chunk):
    t0 = chunk.timestamps[0] - chunk.counter[0] / FS  # sample 0's time
    return t0 + (chunk.timestamps - t0) / RATE


def nan_biceps(chunk):
    x = chunk.samples.copy()
    x[:, 0] = np.nan
    return [replaced(chunk, x, fast_clock(chunk))]


def inf_triceps(chunk):
    x = chunk.samples.copy()
    x[5:, 1] = np.inf
    return [replaced(chunk, x, fast_clock(chunk))]


def flat_triceps(chunk):
    x = chunk.samples.copy()
    x[:, 1] = 1e-5
    return [replaced(chunk, x, fast_clock(chunk))]


def knock_biceps(chunk):
    x = chunk.samples.copy()
    x[:, 0] += 1e-2
    return [replaced(chunk, x, fast_clock(chunk))]


def absurd_triceps(chunk):
    x = chunk.samples.copy()
    x[:, 1] = 1e10
    return [replaced(chunk, x, fast_clock(chunk))]


def schedule() -> dict:
    faults = {k: (lambda c: [replaced(c, timestamps=fast_clock(c))]) for k in range(at(SECONDS))}
    faults[at(7.0)] = knock_biceps  # after the first train (2-6 s) and its rest
    faults[at(7.5)] = absurd_triceps
    for k in range(at(8.0), at(8.05)):  # 50 ms of NaN on the biceps
        faults[k] = nan_biceps
    faults[at(8.5)] = inf_triceps  # 7.5 ms of +inf on the triceps
    faults[at(9.0)] = lambda c: []  # a chunk lost on the way
    faults[at(9.5)] = lambda c: [replaced(c, timestamps=fast_clock(c))] * 2  # sent twice
    faults[at(10.0)] = lambda c: [replaced(c, timestamps=fast_clock(c) - 0.05)]  # clock back
    for k in range(at(10.5), at(11.5)):  # the triceps amplifier freezes for 1 s
        faults[k] = flat_triceps
    return faults


@pytest.fixture(scope="module")
def session(tmp_path_factory, config) -> tuple[Recorded, object]:
    src, stim = sim_session(config, SCRIPT, chunk=CHUNK)
    rec = run_recorded(tmp_path_factory.mktemp("input"), config, FaultySource(src, schedule()),
                       stim, options=LoopOptions(duration_s=SECONDS, watchdog_s=2.0,
                                                 history=None))
    return rec, stim


def test_the_session_goes_on_and_only_true_attempts_stimulate(session):
    rec, stim = session
    out = rec.out
    assert (out.reason, out.exit_code, out.message) == ("duration", 0, "duration reached")
    assert out.samples == int(SECONDS * FS)
    assert out.samples_lost == CHUNK  # the dropped chunk, from the source's counter
    starts = [s / FS for s in on_samples(out.commands)]
    assert starts == pytest.approx([2.0, 12.5], abs=0.1), starts
    assert_all_off(stim)
    assert out.all_off


def test_no_fault_makes_an_onset(session):
    """Every onset answers a true attempt: neither the bad values nor the jumps in the
    signal where a chunk was lost or repeated (every channel restarts and settles
    there), nor the triceps freezing (held-value check: suspended after 4 samples),
    look like activity."""
    onsets = [(e.sample / FS, e.channel) for e in session[0].out.events if e.kind == "onset"]
    true = [(t, m) for t, m in onsets if any(0 <= t - a.onset_s < 0.15 and m == a.muscle
                                               for a in SCRIPT)]
    assert len(true) == len(SCRIPT)
    assert [(t, m) for t, m in onsets if (t, m) not in true] == []


@pytest.mark.parametrize(("fault", "words"), [
    ("NaN burst", r"channel biceps: NaN/inf from sample 16000, .*channel suspended; check the "
                  r"amplifier driver and the cable"),
    ("NaN over", r"channel biceps: finite again at sample \d+ after 0\.\d+ s of NaN/inf"),
    ("inf burst", r"channel triceps: NaN/inf from sample 17005"),
    ("dropped chunk", r"20 sample\(s\) lost before sample 18000 .*check the device link"),
    ("duplicated chunk", r"counter went back from 19019 to 19000 at sample 19000; the device "
                         r"restarted or samples arrive out of order"),
    ("clock back", r"timestamp at sample \d+ is \d+\.\d+ ms before .*check the source's clock"),
    ("flat", r"channel triceps: flat \(identical values\) for 0\.50 s .*check the electrode "
             r"contact and the cable"),
    ("flat over", r"channel triceps: no longer flat"),
    ("rate 5 % off", r"effective rate 21\d\d\.\d Hz is 5\.0 % above the nominal 2000 Hz .*check "
                     r"the device's sample-rate setting"),
    ("knock", r"channel biceps: impulsive artefact at sample 14000, 10 ms .*not taken as an "
              r"attempt.*Check the electrode and its cable"),
    ("absurd", r"channel triceps: absurd values at sample 15000, 10 ms up to 1e\+10 V .*Check the "
               r"amplifier, its driver and the stream's scaling"),
])
def test_each_fault_is_reported_with_what_to_check(session, fault, words):
    issues = session[0].out.issues
    assert any(__import__("re").search(words, m) for m in issues), "\n".join(issues)


def test_the_recording_holds_every_sample_event_and_command(session):
    rec, _ = session
    assert rec.report.ok and rec.report.complete, rec.report.summary()
    s = rec.session()
    out = rec.out
    assert s.n == out.samples
    np.testing.assert_array_equal(s.counter, np.arange(out.samples))
    assert np.isfinite(s.samples).all()  # what the detectors saw: NaN/inf held
    # ... and what the amplifier sent: the NaN and inf bursts, exactly where they were
    bad = ~np.isfinite(s.raw)
    assert np.flatnonzero(bad[:, 0]).tolist() == list(range(16000, 16100))
    assert np.flatnonzero(bad[:, 1]).tolist() == list(range(17005, 17020))
    assert np.isposinf(s.raw[17005:17020, 1]).all()
    np.testing.assert_array_equal(s.raw[~bad], s.samples[~bad])
    # the source's own counter: 20 lost at pipeline sample 18000, a chunk sent twice
    source = np.arange(s.n, dtype=np.float64)
    source[18000:19000] += 20  # after the loss, before the repeated chunk
    np.testing.assert_array_equal(s.source_counter, source)
    assert not [m for m in s.markers if m.label == "source_counter"]  # not trial markers
    # what the input checks said, each at the sample it concerns
    said = [m for m in s.markers if m.label == "input_issue"]
    assert [m.fields["message"] for m in said] == out.issues
    nan = next(m for m in said if "NaN/inf from sample 16000" in m.fields["message"])
    assert nan.sample == 16000 and nan.time == s.timestamps[16000]
    assert (nan.fields["kind"], nan.fields["channel"]) == ("nonfinite", "biceps")
    inf = next(m for m in said if "NaN/inf from sample 17005" in m.fields["message"])
    assert inf.sample == 17005 and inf.time == s.timestamps[17005]  # inside its chunk
    assert [(e.sample, e.channel, e.kind) for e in s.events] == \
        [(e.sample, e.channel, e.kind) for e in out.events]
    assert [c.decision_key() for c in s.commands] == [c.decision_key() for c in out.commands]
    assert_recording_ends_off(s)


def test_replay_reproduces_the_faulty_session(session):
    rec, _ = session
    recorded, _, out = replay_file(str(rec.path))
    assert check(recorded, out) is None


def test_the_recording_and_its_replay_restart_the_same_channels_at_the_same_samples(session):
    """Where the live session restarted a channel after a bad stretch is in the
    recording (a ``channel_restart`` marker at the first sample processed after it,
    which the live view restarts its EMG level on), and a replay of the file, in chunks
    of 16384 samples where the session read 10 ms ones, marks the same channels at the
    same samples: after the knock, the absurd values, the NaN and inf bursts, the lost
    and the repeated chunk (every channel) and the flat stretch."""
    rec, _ = session
    s = rec.session()
    live = [(m.sample, m.fields["muscle"], m.time) for m in s.markers
            if m.label == CHANNEL_RESTART]
    cap = Capture()
    replay_session(s, recorded_config(s), outlets=cap)
    replayed = [(f["sample"], f["muscle"], t) for label, t, f in cap.markers
                if label == CHANNEL_RESTART]
    assert replayed == live
    for a, b, muscle in [(14000, 14400, "biceps"), (15000, 15400, "triceps"),
                         (16100, 16800, "biceps"), (17020, 17800, "triceps"),
                         (18000, 18400, "biceps"), (18000, 18400, "triceps"),
                         (19000, 19400, "biceps"), (19000, 19400, "triceps"),
                         (22000, 23400, "triceps")]:
        assert any(a <= k < b and m == muscle for k, m, _ in live), (a, b, muscle, live)
    assert all(t == s.timestamps[k] for k, _, t in live)  # stamped with their sample


def test_a_channel_pinned_at_its_rail_does_not_stimulate(config):
    """The step onto the rail passes the band-pass as a burst that would decide an onset
    after 3 ms; the held-value check recognises the pinned value after 4 samples (2 ms)
    and suspends the channel first. The monitor confirms saturation after 0.05 s. Back
    at rest, the patient's next attempt triggers as usual."""
    src, stim = sim_session(config, [Attempt("biceps", 9.0, 1.0)], chunk=CHUNK)

    def pinned(chunk):
        x = chunk.samples.copy()
        x[:, 0] = 5e-3  # the biceps amplifier at its rail, far above anything before
        return [replaced(chunk, x)]

    faulty = FaultySource(src, {k: pinned for k in range(at(6.0), at(6.5))})
    out = run_loop(config, faulty, stim, options=LoopOptions(duration_s=10.5, watchdog_s=2.0))
    fault = at(6.0) * CHUNK
    held = [m for m in out.issues if "channel biceps: the same value (0.005 V)" in m]
    assert held and f"at sample {fault + 3}" in held[0], out.issues
    assert any("pinned at the largest value" in m for m in out.issues)
    assert out.exit_code == 0 and out.all_off
    assert_all_off(stim)
    assert [s / FS for s in on_samples(out.commands)] == pytest.approx([9.0], abs=0.1)
    onsets = [e.sample / FS for e in out.events if e.kind == "onset" and e.channel == "biceps"]
    assert onsets == pytest.approx([9.0], abs=0.1)


def _held5_session(config, cfg):
    """A stream that repeats every value 5 times, its biceps at its rail from 6 to 6.5 s."""
    src, stim = sim_session(config, [Attempt("triceps", 9.0, 1.0)], chunk=CHUNK)

    def held5(chunk, rail=None):
        x = chunk.samples.copy()
        x[:, 0] = x[np.arange(CHUNK) // 5 * 5, 0] if rail is None else rail
        return [replaced(chunk, x)]

    faults = {k: held5 for k in range(at(8.0))}
    faults.update({k: (lambda c: held5(c, 5e-3)) for k in range(at(6.0), at(6.5))})
    out = run_loop(cfg, FaultySource(src, faults), stim,
                   options=LoopOptions(duration_s=8.0, watchdog_s=2.0))
    return out, stim


def test_a_rail_step_the_held_check_cannot_see_in_time_stops_at_once(config):
    """A stream that repeats every value 5 times (upsampled by repetition) teaches the
    held-value check a hold of 4 repeats, so it needs 9 before it marks: without the
    impulse gate (``impulse_ratio = 0``) the threshold detector's envelope decides an
    onset on the rail step first. Whatever it triggered is switched off at the sample
    the channel is suspended, and never gets beyond the first ramp steps."""
    threshold = with_detector(config, "threshold")
    cfg = replace(threshold, artifacts=replace(config.artifacts, impulse_ratio=0.0))
    out, stim = _held5_session(config, cfg)
    assert out.exit_code == 0 and out.all_off
    assert_all_off(stim)
    fault = at(6.0) * CHUNK
    suspend = [e.sample for e in out.events
               if e.kind == "suspend" and e.channel == "biceps" and e.sample >= fault]
    assert suspend == [fault + 9], suspend  # 9 repeats: twice the hold learnt, plus one
    s0 = suspend[0]
    on = [c for c in out.commands if c.is_on and c.muscle == "biceps"]
    assert on, "the rail step is expected to trigger before the check marks it"
    assert all(c.sample < s0 for c in on)  # nothing switched on from the suspension on
    offs = [c for c in out.commands if c.muscle == "biceps" and not c.is_on and c.sample >= s0]
    assert offs and offs[0].sample == s0  # off at once, not ramped
    limits = config.muscle("biceps").limits
    assert max(c.current_ma for c in on) <= limits.max_step_ma


def test_cusum_holds_a_rail_step_itself_even_without_the_impulse_gate(config):
    """The default detector (cusum) holds an impulsive step of its raw input before its
    filters: the same rail step without the input's impulse gate starts no onset and no
    stimulation; the held-value check still suspends the channel 9 samples in."""
    assert config.detector_kind == "cusum"
    cfg = replace(config, artifacts=replace(config.artifacts, impulse_ratio=0.0))
    out, stim = _held5_session(config, cfg)
    assert out.exit_code == 0 and out.all_off and not stim.any_on
    fault = at(6.0) * CHUNK
    assert not [e for e in out.events if e.kind == "onset" and e.channel == "biceps"
                and e.sample >= fault]
    assert not [c for c in out.commands if c.is_on and c.muscle == "biceps"]
    suspend = [e.sample for e in out.events
               if e.kind == "suspend" and e.channel == "biceps" and e.sample >= fault]
    assert suspend[:1] == [fault + 9]


def test_the_impulse_gate_holds_a_rail_step_from_its_first_sample(config):
    """The same rail step with the impulse gate on (the default): 5 mV is ~90 times the
    largest swing the biceps channel had, so the channel is held from the step's first
    sample; nothing is switched on, and the gate says the level jumped (and back)."""
    out, stim = _held5_session(config, config)
    assert out.exit_code == 0 and out.all_off
    fault = at(6.0) * CHUNK
    # held from the first sample (no onset can start), suspended when the held-value
    # check sees the pinned value, 9 samples later
    assert not [e for e in out.events if e.kind == "onset" and e.channel == "biceps"]
    suspend = [e.sample for e in out.events
               if e.kind == "suspend" and e.channel == "biceps" and e.sample >= fault]
    assert suspend[:1] == [fault + 9]
    assert not [c for c in out.commands if c.is_on and c.muscle == "biceps"]
    jumps = [m for m in out.issues if "channel biceps: its level jumped by" in m]
    assert len(jumps) == 2 and "+0.005" in jumps[0] and "-0.005" in jumps[1], out.issues
    assert f"at sample {fault}" in jumps[0] and "Check the electrode contact" in jumps[0]


def test_stimulation_that_pins_the_amplifier_is_not_a_held_channel(config):
    """Each pulse drives both amplifiers to their rail for 3 ms (amplifier blocking):
    samples inside a pulse train are exempt from the held-value check, so the trains
    run exactly as they do when the amplifiers recover at once."""

    def session(blocking: bool):
        src, stim = sim_session(config, SCRIPT[:1], chunk=CHUNK)

        def block(chunk):
            x, t = chunk.samples.copy(), chunk.timestamps
            for p in stim.pulses(t[0] - 0.003, t[-1] + 1e-9)["time"]:
                x[(t >= p) & (t < p + 0.003), :] = 5e-3
            return [replaced(chunk, x)]

        faults = {k: block for k in range(at(4.0))} if blocking else {}
        return run_loop(config, FaultySource(src, faults), stim,
                        options=LoopOptions(duration_s=4.0, watchdog_s=2.0, history=None))

    clean, blocked = session(False), session(True)
    assert blocked.exit_code == 0 and blocked.all_off
    assert not [m for m in blocked.issues if "the same value" in m], blocked.issues
    assert [c.decision_key() for c in blocked.commands] == \
        [c.decision_key() for c in clean.commands]
    assert blocked.stim_seconds == clean.stim_seconds
    assert sum(blocked.stim_seconds.values()) > 0.5


def test_replay_reproduces_a_session_whose_source_has_no_counter(tmp_path, config):
    """Without a counter the live checks find gaps and jumps from the timestamps alone;
    the recording says so (a ``source_counter`` marker with no value), and the replay
    gives its checks no counter either: the same breaks, the same decisions."""
    from closedloop.core.stream import Chunk

    src, stim = sim_session(config, [Attempt("biceps", 2.2, 1.0, 1.0, 0.04),
                                     Attempt("biceps", 5.0, 0.8, 1.0, 0.04)], chunk=CHUNK)

    def bare(c, shift=0.0, nan=False):
        x = c.samples.copy()
        if nan:
            x[:, 0] = np.nan
        return [Chunk(x, c.timestamps + shift, None, c.arrival_wall)]

    faults = {k: bare for k in range(at(7.0))}
    faults[at(3.0)] = lambda c: []  # lost: the timestamps jump by 10 ms
    faults[at(3.5)] = lambda c: bare(c, -0.05)  # stamped 50 ms in the past
    faults[at(4.0)] = lambda c: bare(c, nan=True)
    rec = run_recorded(tmp_path, config, FaultySource(src, faults), stim,
                       options=LoopOptions(duration_s=6.0, watchdog_s=2.0, history=None))
    assert rec.out.exit_code == 0 and rec.report.ok
    s = rec.session()
    assert s.source_counter is not None and np.isnan(s.source_counter).all()
    assert any("timestamps jump by" in m for m in rec.out.issues)
    recorded, _, out = replay_file(str(rec.path))
    assert check(recorded, out) is None
    onsets = [e.sample / FS for e in out.events if e.kind == "onset"]
    assert onsets == pytest.approx([2.2, 5.0], abs=0.1)  # the attempts, nothing else
    assert [s / FS for s in on_samples(out.commands)] == pytest.approx([2.2], abs=0.1)


def test_the_report_lists_what_the_live_checks_said(session):
    from closedloop.analysis.report import report_html

    page = report_html(session[0].session())
    for words in ("channel biceps: NaN/inf from sample 16000", "counter went back from 19019",
                  "channel triceps: flat (identical values)", "effective rate 21"):
        assert words in page, words


def test_replay_check_compares_where_channels_were_restarted(session):
    """The recording marks its channel restarts (its Markers stream's header declares
    them), so ``replay --check`` compares them too: the faulty session replays with the
    same restarts; a recording whose restart markers say otherwise (one lost, or one at
    another sample) fails the check, naming the restart; one that does not declare them
    (recorded before sessions marked restarts) is checked on events and commands only."""
    rec, _ = session
    recorded, _, out = replay_file(str(rec.path))
    assert recorded.restarts_marked
    restarts = [(m.sample, m.fields["muscle"]) for m in recorded.markers
                if m.label == CHANNEL_RESTART]
    assert len(restarts) >= 9 and out.restarts == restarts
    assert check(recorded, out) is None
    first = next(i for i, m in enumerate(recorded.markers) if m.label == CHANNEL_RESTART)
    lost = replace(recorded, markers=recorded.markers[:first] + recorded.markers[first + 1:])
    assert check(lost, out) == (
        f"channel restart (sample, muscle) #0 differs: recorded {restarts[1]}, "
        f"replay {restarts[0]}")
    moved = list(recorded.markers)
    moved[first] = replace(moved[first], sample=moved[first].sample + 1)
    diff = check(replace(recorded, markers=moved), out)
    assert diff is not None and diff.startswith("channel restart (sample, muscle) #0 differs")
    assert check(replace(lost, restarts_marked=False), out) is None


def test_the_installed_replay_check_says_it_compared_the_restarts(session):
    """``closedloop replay FILE --check``, as a user types it: the faulty session's
    restarts are part of what the check vouches for, and it says so."""
    import shutil
    import subprocess

    rec, _ = session
    exe = shutil.which("closedloop")
    assert exe, "the closedloop command is not installed (pip install -e .)"
    r = subprocess.run([exe, "replay", str(rec.path), "--check"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    n = sum(m.label == CHANNEL_RESTART for m in rec.session().markers)
    assert f" commands and {n} channel restarts identical to the recording" in r.stdout
