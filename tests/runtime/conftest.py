"""Shared parts of the runtime tests: the simulated patient and stimulator wired as
``closedloop run`` wires them (pulses start at the next sample), fast, not real time."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from closedloop.config import Config, load_config
from closedloop.sim.patient import Attempt
from closedloop.sources.sim import SimSource, patient_settings
from closedloop.stim.drivers.sim import SimStimulator
from tests.conftest import CONFIGS
from tests.helpers import ArraySource  # noqa: F401 - re-exported for the runtime tests


@pytest.fixture(scope="session")
def config() -> Config:
    return load_config(CONFIGS / "biceps_triceps.toml")


def sim_session(config: Config, script: Sequence[Attempt] | None = None, *, chunk: int = 20,
                artifacts: bool = True, settings=None, rates=None,
                ) -> tuple[SimSource, SimStimulator]:
    """An opened SimSource (not real time) and SimStimulator whose pulses it adds
    (``rates``: the stimulator's delivered pulse rates, see SimStimulator)."""
    holder: dict[str, SimSource] = {}
    stim = SimStimulator(clock=lambda: holder["src"].now(), rates=rates)
    chans = {m.stim.channel: m.name for m in config.muscles if m.stim is not None}
    src = SimSource(settings or patient_settings(config), script, realtime=False,
                    chunk_size=chunk, stimulator=stim if artifacts else None,
                    stim_channels=chans)
    holder["src"] = src
    src.open()
    stim.open()
    return src, stim


def assert_all_off(stim: SimStimulator) -> None:
    """Every channel the stimulator ever drove is off, and no pulse follows."""
    assert not stim.any_on
    last: dict[int, float] = {}
    for a in stim.log:
        last[a.command.channel] = a.command.current_ma
    assert last and all(v == 0.0 for v in last.values()), last
    end = max(a.stream_time for a in stim.log)
    assert stim.pulses(end, end + 3600.0).size == 0


class Capture:
    """Stands in for :class:`~closedloop.io.outlets.SessionOutlets`: keeps what the loop
    publishes (the tests that need LSL and LabRecorder use the real ones)."""

    def __init__(self) -> None:
        self.tallies: list[int] = []
        self.mwaves: list = []
        self.emg: list[np.ndarray] = []
        self.envelope: list[np.ndarray] = []
        self.commands: list = []
        self.markers: list = []

    def push_emg(self, samples, timestamps, *, start=None, source_counter=False) -> None:
        self.emg.append(np.array(samples, copy=True))

    def push_block(self, block) -> None:
        self.envelope.append(block.envelope.copy())

    def push_commands(self, commands) -> None:
        self.commands += list(commands)

    def push_marker(self, label, time, **fields) -> None:
        # ``label`` as in SessionOutlets: input_issue markers carry a ``kind`` field
        self.markers.append((label, time, fields))

    def push_mwaves(self, records) -> None:
        self.mwaves += list(records)

    def push_tally(self, position, time, *, duration_s=None, force=False) -> bool:
        self.tallies.append(position)
        return True


def with_detector(config, kind: str):
    """``config`` with another ``[detector] kind`` (its defaults)."""
    from closedloop.config import loads_config

    text = config.text
    a, b = text.index("[detector]"), text.index("[[muscles]]")
    return loads_config(text[:a] + f'[detector]\nkind = "{kind}"\n\n' + text[b:],
                        source=f"{config.name} ({kind})")
