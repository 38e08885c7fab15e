"""Every config shipped in configs/ loads, and runs a closed loop on the simulated patient
without the guard having to intervene (a preset that needs the guard is a wrong preset)."""

from pathlib import Path

import pytest

from closedloop.config import load_config
from closedloop.runtime.devices import make_source, make_stimulator
from closedloop.runtime.loop import LoopOptions, run_loop

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").rglob("*.toml"))


def test_presets_are_shipped():
    names = {p.stem for p in CONFIGS}
    assert {"biceps_triceps", "wrist_flexor_extensor", "motor_reeducation", "strength",
            "endurance", "sensory"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_runs_a_closed_loop(path):
    config = load_config(path)
    text = path.read_text()
    if "programs" in path.parts:
        assert "Program:" in text and "(" in text  # rationale with literature in comments
    stim = make_stimulator(config, "sim")
    source = make_source(config, "sim", seed=3, realtime=False, stimulator=stim)
    with stim, source:
        stim._clock = source.now
        out = run_loop(config, source, stim, options=LoopOptions(duration_s=40.0, watchdog_s=5.0))
    assert out.exit_code == 0, out.message
    assert out.all_off and not stim.any_on
    assert sum(out.onsets.values()) >= 3
    assert any(c.is_on for c in out.commands), "the protocol never stimulated"
    assert out.n_violations == 0, out.violations[:3]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_resolved_settings_give_the_same_config_whatever_the_defaults(path, monkeypatch):
    """``Config.resolved`` holds every setting (defaults filled in) in the TOML's shape:
    through JSON (as a recording stores it) it parses back to the same config, even
    after the defaults it filled in changed."""
    import dataclasses
    import json

    from closedloop.config import parse_config
    from closedloop.config.signal import DetectorSettings, EnvelopeSettings
    from closedloop.core.blanking import ArtifactSettings

    config = load_config(path)
    resolved = json.loads(json.dumps(config.resolved))
    for cls in (DetectorSettings, EnvelopeSettings, ArtifactSettings):
        for f in dataclasses.fields(cls):
            if isinstance(f.default, float):
                monkeypatch.setattr(cls, f.name, f.default * 1.5 + 1.0)
    assert load_config(path) != config  # the text alone now reads differently
    again = parse_config(resolved, source="recorded", text=config.text)
    assert dataclasses.replace(again, path=config.path) == config
    assert again.resolved == resolved
