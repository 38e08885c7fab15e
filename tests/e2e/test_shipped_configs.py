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


def _unresolved(obj, resolved, path=""):
    """Dotted keys of every setting of ``obj`` (a settings dataclass, recursively) that
    ``resolved`` does not spell out, i.e. that reading it would take from a default."""
    import dataclasses

    out = []
    for f in dataclasses.fields(obj):
        if not f.metadata.get("toml", True):
            continue  # Config.path and Config.text are not settings
        key = f"{path}.{f.name}" if path else f.name
        value = getattr(obj, f.name)
        if not isinstance(resolved, dict) or f.name not in resolved:
            out.append(key)
        elif dataclasses.is_dataclass(value):
            out += _unresolved(value, resolved[f.name], key)
        elif isinstance(value, tuple) and value and dataclasses.is_dataclass(value[0]):
            for i, v in enumerate(value):
                out += _unresolved(v, resolved[f.name][i], f"{key}[{i}]")
    return out


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_resolved_settings_give_the_same_config_whatever_the_defaults(path):
    """``Config.resolved`` holds every setting (defaults filled in) in the TOML's shape:
    through JSON (as a recording stores it) it parses back to the same config, and it
    leaves nothing to a default (so a later change of a default cannot change what a
    recording replays with)."""
    import dataclasses
    import json

    from closedloop.config import parse_config

    config = load_config(path)
    resolved = json.loads(json.dumps(config.resolved))
    assert _unresolved(config, resolved) == []
    # the check sees a setting left to its default
    trimmed = json.loads(json.dumps(resolved))
    key = {"cusum": "h_nats", "threshold": "k_on"}[config.detector_kind]
    del trimmed["detector"][key], trimmed["muscles"][0]["placement"]
    assert _unresolved(config, trimmed) == [f"detector.{key}", "muscles[0].placement"]
    again = parse_config(resolved, source="recorded", text=config.text)
    assert dataclasses.replace(again, path=config.path) == config
    assert again.resolved == resolved
