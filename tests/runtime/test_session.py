"""The session builder (:mod:`closedloop.runtime.session`): opened in order, closed in
order, and a failure while building closes what was opened, with every channel off.

The devices are the simulated ones, subclassed only to log when they open and close;
the outlets and the STOP inlet are real LSL objects on loopback (unique names).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import pytest

from closedloop.errors import ConfigError, DeviceLostError, SafetyError, StimulatorError
from closedloop.runtime.outcome import LoopOptions, Outcome
from closedloop.runtime.session import Session, SessionPlan
from closedloop.sim.patient import Attempt
from closedloop.sources.sim import SimSource, patient_settings
from closedloop.stim.base import ChannelOutput, Stimulator
from closedloop.stim.commands import StimCommand
from closedloop.stim.drivers.sim import SimStimulator
from tests.conftest import ROOT

SCRIPT = [Attempt("biceps", 2.2, 1.0, 1.0, 0.04)]  # no trial starts in the first 2 s


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class LogStim(SimStimulator):
    """The simulated stimulator, logging its lifecycle (and failing to close on demand)."""

    def __init__(self, log: list[str], *, fail_close: bool = False) -> None:
        super().__init__()
        self.events = log
        self.fail_close = fail_close

    def open(self) -> None:
        self.events.append("stimulator open")
        super().open()

    def close(self) -> None:
        self.events.append("stimulator close")
        if self.fail_close:
            self.stop_all()
            raise StimulatorError("the device did not answer the stop")
        super().close()


class LogSource(SimSource):
    """The simulated patient, logging its lifecycle (and failing to open on demand)."""

    def __init__(self, log: list[str], config, *, fail_open: bool = False,
                 stimulator: SimStimulator | None = None) -> None:
        chans = {m.stim.channel: m.name for m in config.muscles if m.stim is not None}
        super().__init__(patient_settings(config), SCRIPT, realtime=False, chunk_size=20,
                         stimulator=stimulator, stim_channels=chans)
        self.events = log
        self.fail_open = fail_open

    def open(self) -> None:
        if self.fail_open:
            self.events.append("source open failed")
            raise DeviceLostError("the amplifier is not connected")
        self.events.append("source open")
        super().open()

    def close(self) -> None:
        self.events.append("source close")
        super().close()


class RealStim(Stimulator):
    """A stimulator that is not the simulated one: the checklist is required."""

    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.events = log

    def open(self) -> None:
        self.events.append("stimulator open")
        super().open()

    def apply(self, commands: Sequence[StimCommand]) -> None:
        for c in commands:
            self._outputs[c.channel] = ChannelOutput(c.current_ma, c.pulse_width_us,
                                                     c.frequency_hz)

    def stop_all(self) -> None:
        self._outputs.clear()

    def close(self) -> None:
        self.events.append("stimulator close")
        super().close()


def logged_close(session: Session, log: list[str]) -> None:
    """Log when the session closes its STOP inlet and its outlets."""
    for name in ("control", "outlets"):
        part = getattr(session, name)
        original = part.close

        def close(original=original, name=name) -> None:
            log.append(f"{name} close")
            original()

        part.close = close


def test_a_session_opens_and_closes_in_order_and_runs_the_loop(config):
    log: list[str] = []
    stim = LogStim(log)
    source = LogSource(log, config, stimulator=stim)
    plan = SessionPlan(config, source=source, stimulator=stim, name=unique("sessiontest"))
    session = Session(plan).open()
    assert log == ["stimulator open", "source open"]
    assert session.checklist == {"required": False, "why": "simulated stimulator"}
    assert stim.clock == source.now  # the simulated pair share the stream clock
    assert session.outlets is not None and session.outlets.session_name == plan.name
    assert session.control is not None and session.control.alive
    assert session.outlets.metadata["sim_seed"] == source.seed
    logged_close(session, log)
    out = session.run(LoopOptions(duration_s=3.0))
    assert (out.reason, out.trials["trials"]) == ("duration", 1)
    assert session.outlets.counts[f"{plan.name}-EMG"] == 6000  # published as it ran
    closed = session.close(out)
    assert log[2:] == ["stimulator close", "source close", "control close", "outlets close"]
    assert closed.channels_on == [] and not stim.any_on and not stim.is_open
    assert not session.control.alive and session.outlets.roles == ()
    assert closed.recorded is None and out.exit_code == 0
    assert session.close(out) is closed and log.count("stimulator close") == 1  # idempotent


@pytest.mark.parametrize("fails", ["source", "checklist", "outlets"])
def test_a_failure_while_building_closes_what_was_opened_all_off(config, tmp_path, fails):
    log: list[str] = []
    stim = RealStim(log) if fails == "checklist" else LogStim(log)
    source = LogSource(log, config, fail_open=fails == "source")
    record = tmp_path / "session.xdf"
    name = "bad'name" if fails == "outlets" else unique("sessiontest")  # refused by the outlets
    plan = SessionPlan(config, source=source, stimulator=stim, record=record, name=name)
    session = Session(plan)
    error = {"source": DeviceLostError, "checklist": SafetyError, "outlets": ConfigError}[fails]
    with pytest.raises(error):
        session.open()
    opened = {"source": ["stimulator open", "source open failed"],
              "checklist": ["stimulator open"],
              "outlets": ["stimulator open", "source open"]}[fails]
    assert log == [*opened, "stimulator close", "source close"]
    assert not stim.is_open and not stim.any_on and not source.is_open
    assert session.outlets is None and session.control is None and session.recorder is None
    assert not record.exists()  # the claim made for it is let go, the empty file removed
    out = Outcome.failed(error("x"))
    closed = session.close(out)  # the caller's close after a failed open: nothing twice
    assert log.count("stimulator close") == 1 and closed.stimulator_error == ""


def test_a_recording_that_may_not_be_written_stops_the_session_before_any_device(config,
                                                                                 tmp_path):
    log: list[str] = []
    record = tmp_path / "yesterday.xdf"
    record.write_bytes(b"a session worth keeping")
    stim = LogStim(log)
    plan = SessionPlan(config, source=LogSource(log, config), stimulator=stim, record=record)
    with pytest.raises(ConfigError, match="already exists"):
        Session(plan).open()
    assert log == [] and record.read_bytes() == b"a session worth keeping"


def test_a_stimulator_that_fails_to_close_is_said_and_the_rest_still_closes(config):
    log: list[str] = []
    stim = LogStim(log, fail_close=True)
    plan = SessionPlan(config, source=LogSource(log, config), stimulator=stim, publish=False)
    session = Session(plan).open()
    out = session.run(LoopOptions(duration_s=0.5))
    assert out.exit_code == 0
    closed = session.close(out)
    assert "did not answer the stop" in closed.stimulator_error
    assert (out.reason, out.exit_code, out.all_off) == ("device", 5, False)
    assert "switch it off by hand" in out.message
    assert log[-2:] == ["stimulator close", "source close"]


def test_a_session_from_the_config_file_and_specs_as_closedloop_run_builds_it():
    plan = SessionPlan(ROOT / "configs" / "biceps_triceps.toml", source="sim?seed=3",
                       stimulator="sim", realtime=False, publish=False, patient=None)
    with Session(plan).open() as session:
        assert session.config is not None and session.config.name == "biceps_triceps"
        assert isinstance(session.source, SimSource) and session.source.seed == 3
        assert isinstance(session.stimulator, SimStimulator)
        assert session.stimulator.clock == session.source.now
        assert session.name.startswith("closedloop-biceps_triceps-")
        out = session.run(LoopOptions(duration_s=1.0))
    assert out.reason == "duration" and not session.stimulator.is_open
