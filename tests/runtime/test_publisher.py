"""The loop publishes through one small interface (:class:`Publisher`); without outlets it
publishes to :class:`NullPublisher`, which does nothing and changes nothing the loop
decides."""

from __future__ import annotations

import uuid

from closedloop.io.outlets import SessionOutlets
from closedloop.runtime.loop import LoopOptions, run_loop
from closedloop.runtime.publisher import NullPublisher, Publisher
from closedloop.sim.patient import Attempt
from tests.runtime.conftest import Capture, sim_session

#: From 2.2 s: no trial starts in the stream's first 2 s (``[safety] wait_for_rate``).
SCRIPT = [Attempt("biceps", 2.2, 1.0, 1.0, 0.04), Attempt("triceps", 4.2, 1.0, 1.0, 0.04)]


def test_the_session_outlets_the_default_and_a_test_capture_are_publishers(config):
    assert isinstance(NullPublisher(), Publisher) and isinstance(Capture(), Publisher)
    src, _ = sim_session(config, [])
    with SessionOutlets(f"pubtest-{uuid.uuid4().hex[:8]}", src.info) as outlets:
        assert isinstance(outlets, Publisher)
    assert not isinstance(object(), Publisher)


def test_without_outlets_the_loop_decides_exactly_what_it_publishes_with_them(config):
    runs = {}
    for how in ("none", "null", "capture"):
        src, stim = sim_session(config, SCRIPT)
        cap = Capture()
        outlets = {"none": None, "null": NullPublisher(), "capture": cap}[how]
        out = run_loop(config, src, stim, outlets=outlets,
                       options=LoopOptions(duration_s=6.2, history=None))
        runs[how] = (out, cap)
    base, cap = runs["capture"]
    assert base.reason == "duration" and base.trials["trials"] == 1 and base.n_commands > 2
    for how in ("none", "null"):
        out, _ = runs[how]
        assert [(e.sample, e.channel, e.kind) for e in out.events] == \
            [(e.sample, e.channel, e.kind) for e in base.events]
        assert [c.decision_key() for c in out.commands] == \
            [c.decision_key() for c in base.commands]
        assert out.stim_seconds == base.stim_seconds and out.samples == base.samples
    # what was published with outlets: every sample, every command (the offs included)
    assert sum(x.shape[0] for x in cap.emg) == base.samples
    assert [c.decision_key() for c in cap.commands] == [c.decision_key() for c in base.commands]
    assert any(label == "trigger" for label, _, _ in cap.markers)
