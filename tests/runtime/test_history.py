"""A bounded Outcome history (LoopOptions.history) keeps the latest items; the counts,
onsets, trials and stimulation seconds still cover the whole session."""

from __future__ import annotations

from closedloop.runtime.loop import LoopOptions, run_loop
from tests.runtime.conftest import sim_session


def test_bounded_history_keeps_the_latest_and_counts_everything(config):
    runs = {}
    for keep in (None, 5):
        src, stim = sim_session(config)
        runs[keep] = run_loop(config, src, stim,
                              options=LoopOptions(duration_s=40.0, history=keep))
    full, short = runs[None], runs[5]
    assert full.n_commands == len(full.commands) > 10
    assert short.n_commands == full.n_commands and short.n_events == full.n_events
    key = lambda items: [c.decision_key() for c in items]  # noqa: E731 - not the wall times
    assert key(short.commands) == key(full.commands[-5:])
    assert [(e.sample, e.channel, e.kind) for e in short.events] == \
        [(e.sample, e.channel, e.kind) for e in full.events[-5:]]
    assert len(short.arrival_to_command_ms) == 5
    assert short.stim_seconds == full.stim_seconds and short.onsets == full.onsets
    assert short.trials == full.trials
