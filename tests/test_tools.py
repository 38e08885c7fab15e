"""The measuring tools whose figures the docs quote still run on this checkout.

Their full runs take minutes (they are benchmarks: ``docs/safety.md`` quotes
``tools/bench_input_edges.py``); here each one's loop runs on a few seconds of signal, so a
change to the interfaces they use (a new abstract method of ``Source`` once left
``bench_input_edges`` unable to start) fails here and not first in a user's hands.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from closedloop.config import load_config
from closedloop.sim.patient import Attempt, PatientSettings, SimulatedPatient

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", ROOT / "tools" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_input_edges_runs_the_live_input_stage_and_core():
    """Its loop (the live loop's input stage and core over an array) finds an attempt
    with the impulse gate on and off, and a 10 ms knock of 300 x the voluntary EMG's RMS
    at rest starts nothing either way (the tool's table 3)."""
    tool = _tool("bench_input_edges")
    cfg = load_config(ROOT / "configs" / "biceps_triceps.toml")
    fs, names = 2000.0, cfg.muscle_names
    ps = PatientSettings(fs=fs, muscles=names, snr_db=10.0)
    x = SimulatedPatient(ps, [Attempt(names[0], 2.0, 1.0)], seed=4).read(int(6.0 * fs))
    k = int(4.5 * fs)
    x[k : k + int(0.01 * fs), 0] += 300 * ps.noise_rms * 10 ** (ps.snr_db / 20.0)
    for gate in (True, False):
        onsets = tool._onsets(tool._run(cfg, x, fs, gate))
        assert [s for s in onsets.get(names[0], []) if s >= k] == []
        assert any(0 <= s - 2.0 * fs < 0.3 * fs for s in onsets.get(names[0], []))
