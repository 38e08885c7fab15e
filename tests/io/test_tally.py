"""The session's running totals on its LSL session stream (``tally``), and the filtered
EMG it publishes for the live view.

A view that attaches in the middle of a session must show the session's counts from its
first sample: it starts from the last tally and adds the items published after it.
"""

from __future__ import annotations

import json
import time
import uuid

import numpy as np
import pylsl
import pytest

from closedloop.config import load_config
from closedloop.core.events import Event
from closedloop.core.stream import SourceInfo
from closedloop.io import outlets as lo
from closedloop.io.outlets import SessionOutlets, SessionTally, decode_session_item
from closedloop.runtime.loop import LoopOptions, run_loop
from closedloop.sim.patient import Attempt
from closedloop.stim.commands import StimCommand
from tests.conftest import CONFIGS
from tests.runtime.conftest import sim_session

FS = 1000.0


def _cmd(muscle: str, sample: int, ma: float) -> StimCommand:
    return StimCommand(muscle, 1, ma, 250.0, 35.0, sample, sample / FS, "x")


def _items(rng: np.random.Generator, n: int) -> list[tuple[str, object]]:
    """A random session's pushes in order: events, commands (trains with ramps) and
    markers (trial labels and others)."""
    out: list[tuple[str, object]] = []
    sample = 0
    on = {"biceps": False, "triceps": False}
    for _ in range(n):
        sample += int(rng.integers(1, 50))
        kind = rng.integers(0, 3)
        if kind == 0:
            ch = str(rng.choice(["biceps", "triceps"]))
            out.append(("events", [Event(sample, sample / FS, ch, str(rng.choice(
                ["onset", "offset"])), 1.0, 0.5)]))
        elif kind == 1:
            m = str(rng.choice(["biceps", "triceps"]))
            ma = 0.0 if on[m] and rng.random() < 0.5 else float(rng.integers(1, 20))
            on[m] = ma > 0
            out.append(("commands", [_cmd(m, sample, ma)]))
        else:
            out.append(("marker", str(rng.choice(["trigger", "cue", "hit", "miss", "gated",
                                                   "input_issue", "truth"]))))
    return out


def _feed(t: SessionTally, item: tuple[str, object]) -> None:
    kind, x = item
    if kind == "events":
        t.add_events(x)
    elif kind == "commands":
        t.add_commands(x)
    else:
        t.add_marker(x)


def _seq_of(item: tuple[str, object], seqs: dict[str, int]) -> tuple[str, int]:
    role = {"events": lo.ROLE_EVENTS, "commands": lo.ROLE_STIM, "marker": lo.ROLE_MARKERS}[
        item[0]]
    return role, seqs[role]


@pytest.mark.parametrize("seed", range(5))
def test_a_reader_from_any_tally_gets_the_whole_sessions_totals(seed):
    """Start from the tally published at item k (round-tripped through JSON), add the
    items whose seq is at or after the tally's, in any order of arrival between
    streams: the totals equal those of one pass over everything."""
    rng = np.random.default_rng(seed)
    items = _items(rng, 300)
    whole = SessionTally(FS)
    for it in items:
        _feed(whole, it)
    for k in (0, 1, 57, 150, 299, 300):
        head = SessionTally(FS)
        for it in items[:k]:
            _feed(head, it)
        _, back = decode_session_item(lo.encode_tally(head, 3))
        assert back is not None and back.to_dict() == head.to_dict()
        # items after k, and some before k arriving late (another stream): skipped by seq
        seqs = {lo.ROLE_EVENTS: 0, lo.ROLE_STIM: 0, lo.ROLE_MARKERS: 0}
        tagged = []
        for it in items:
            role, q = _seq_of(it, seqs)
            n = len(it[1]) if it[0] != "marker" else 1
            seqs[role] += n
            tagged.append((role, q, it))
        reader = back.copy()
        late = [t for t in tagged[max(0, k - 20):]]
        for role, q, it in late:
            if q >= reader.seq[role]:
                _feed(reader, it)
            else:
                assert q < back.seq[role]
        assert reader.to_dict() == whole.to_dict()
    assert whole.trials.get("input_issue") is None and whole.seq[lo.ROLE_MARKERS] > 0


def test_stimulation_counts_follow_the_commands_sample_clock():
    t = SessionTally(FS)
    t.add_commands([_cmd("biceps", 100, 5.0), _cmd("biceps", 150, 10.0),
                    _cmd("triceps", 120, 4.0)])
    t.add_commands([_cmd("biceps", 600, 0.0)])
    assert t.stim["biceps"].trains == 1 and t.stim["biceps"].on_samples == 500
    assert t.stim["triceps"].on_since == 120
    assert t.stim_seconds(upto=1120) == {"biceps": 0.5, "triceps": 1.0}
    t.add_commands([_cmd("biceps", 700, 3.0), _cmd("biceps", 800, 0.0),
                    _cmd("biceps", 900, 0.0)])  # an off while off changes nothing
    assert t.stim["biceps"].trains == 2 and t.stim["biceps"].on_samples == 600


def _session_items(inlet: pylsl.StreamInlet, timeout: float = 2.0) -> list[dict]:
    got: list[dict] = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        texts, _ = inlet.pull_chunk(timeout=0.1)
        got += [json.loads(t[0]) for t in texts]
        if not texts and got:
            break
    return got


def _inlet(out: SessionOutlets, role: str) -> pylsl.StreamInlet:
    (info,) = pylsl.resolve_bypred(f"source_id='{out.source_ids[role]}'", 1, 5.0)
    inlet = pylsl.StreamInlet(info)
    inlet.open_stream(timeout=5.0)
    return inlet


def test_push_tally_when_a_count_changes_and_once_a_second():
    info = SourceInfo("amp", FS, ("biceps", "triceps"), "V", "sim")
    with SessionOutlets(f"tally-{uuid.uuid4().hex[:8]}", info) as out:
        inlet = _inlet(out, lo.ROLE_SESSION)
        time.sleep(0.3)
        pushed = []
        for k in range(40):  # 40 chunks of 100 samples: 4 s of samples
            pos = (k + 1) * 100
            if k == 12:
                out.push_marker("trigger", pos / FS, sample=pos - 1)
                out.push_commands([_cmd("biceps", pos - 1, 5.0)])
            if k == 20:
                out.push_commands([_cmd("biceps", pos - 1, 0.0)])
            pushed.append(out.push_tally(pos, pos / FS, duration_s=60.0))
        items = _session_items(inlet)
        inlet.close_stream()
    # the first chunk, the two chunks where a count changed, and 1000 samples after the
    # last one pushed
    assert [k for k, p in enumerate(pushed) if p] == [0, 10, 12, 20, 30]
    tallies = [SessionTally.from_dict(d["tally"]) for d in items if "tally" in d]
    assert [d["seq"] for d in items] == list(range(5))  # the session stream's own seq
    last = tallies[-1]
    assert last.sample == 3100 and last.duration_s == 60.0
    assert last.trials == {"trigger": 1} and last.stim["biceps"].on_samples == 800
    assert last.seq == {lo.ROLE_EVENTS: 0, lo.ROLE_STIM: 2, lo.ROLE_MARKERS: 1}


def test_the_filtered_stream_is_published_for_the_view_and_not_recorded():
    info = SourceInfo("amp", FS, ("biceps", "triceps"), "uV", "sim")
    with SessionOutlets(f"filt-{uuid.uuid4().hex[:8]}", info) as out:
        assert lo.ROLE_FILTERED in out.roles
        assert out.source_ids[lo.ROLE_FILTERED] not in {
            p["source_id"] for p in out.recorder_predicates()}
        assert out.names[lo.ROLE_FILTERED] not in out.counts
    with SessionOutlets(f"nofilt-{uuid.uuid4().hex[:8]}", info, with_filtered=False) as out:
        assert lo.ROLE_FILTERED not in out.roles


@pytest.mark.timeout(60)
def test_the_loop_publishes_its_totals_equal_to_its_outcome():
    """A simulated triggered-assist session: its last tally plus what followed equals
    the loop's own counts (triggers, onsets, stimulation seconds)."""
    config = load_config(CONFIGS / "biceps_triceps.toml")
    script = [Attempt("biceps", t, 1.5, 0.9, 0.05) for t in (3.0, 12.0, 21.0)]
    src, stim = sim_session(config, script, chunk=20)
    from dataclasses import replace

    out = SessionOutlets(f"looptally-{uuid.uuid4().hex[:8]}",
                         replace(src.info, channels=config.muscle_names),
                         config_text=config.text)
    inlets = {r: _inlet(out, r) for r in (lo.ROLE_SESSION, lo.ROLE_STIM, lo.ROLE_MARKERS,
                                          lo.ROLE_EVENTS)}
    time.sleep(0.3)
    try:
        res = run_loop(config, src, stim, outlets=out,
                       options=LoopOptions(duration_s=25.0, watchdog_s=5.0, history=None))
        got = {r: _session_items(i, 3.0) for r, i in inlets.items()}
    finally:
        out.close()
    assert res.exit_code == 0 and res.trials["trials"] >= 2
    tallies = [d["tally"] for d in got[lo.ROLE_SESSION] if "tally" in d]
    assert len(tallies) >= 25  # at least once per second of samples
    # a reader that only saw the middle tally and what came after
    mid = SessionTally.from_dict(tallies[len(tallies) // 2])
    reader = mid.copy()
    for d in got[lo.ROLE_EVENTS]:
        if d["seq"] >= mid.seq[lo.ROLE_EVENTS]:
            reader.add_events([lo.decode_event(json.dumps(d))[1]])
    for d in got[lo.ROLE_STIM]:
        if d["seq"] >= mid.seq[lo.ROLE_STIM]:
            reader.add_commands([lo.decode_command(json.dumps(d))[1]])
    for d in got[lo.ROLE_MARKERS]:
        if d["seq"] >= mid.seq[lo.ROLE_MARKERS]:
            reader.add_marker(d["label"])
    assert reader.trials.get("trigger", 0) == res.trials["trials"]
    assert reader.onsets == {m: n for m, n in res.onsets.items() if n}
    assert reader.stim_seconds() == pytest.approx(res.stim_seconds, abs=1e-12)
    assert tallies[-1]["duration_s"] == 25.0
