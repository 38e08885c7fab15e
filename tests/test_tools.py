"""The measuring tools under ``tools/`` still run on this checkout.

Their full runs take minutes (they are benchmarks: ``docs/safety.md`` quotes
``tools/bench_input_edges.py``); here each one runs on little data (or its loop on a few
seconds of signal), so a change to the interfaces they use (a new abstract method of
``Source`` once left ``bench_input_edges`` unable to start) fails here and not first in a
user's hands. Every tool has a test: a new one without fails
:func:`test_every_tool_is_run_by_a_test`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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


def _json_last(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def _png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


#: Each tool as its docstring says to run it (``PYTHONPATH=. python tools/NAME.py``), on
#: little data, and what proves it measured something: (name, arguments, check of
#: (stdout, the run's folder)). ``{tmp}`` is the run's folder.
TOOLS = {
    "bench_checks": (["--seconds", "2", "--channels", "2"],
                     lambda out, tmp: "2000 x 2, counter, quantized" in out),
    "bench_p24": (["--n", "20", "--json"],
                  lambda out, tmp: _json_last(out)["driver_ack"]["n"] == 20
                  and _json_last(out)["driver_apply"]["p50_ms"] > 0),
    "bench_records": (["--sessions", "5", "--history", "10", "--dir", "{tmp}"],
                      lambda out, tmp: "5 sessions" in out and "database size" in out),
    "rest_false_detections": (["--data", str(ROOT.parent / "shared" / "data"),
                               "--out", "{tmp}/rest.png"],
                              lambda out, tmp: _png(tmp / "rest.png")
                              and "rest-only recording" in out),
}
SLOW_TOOLS = {
    "bench_report": (["--minutes", "0.2"],
                     lambda out, tmp: _json_last(out)["commands"] > 0
                     and _json_last(out)["samples"] == 2000 * _json_last(out)["session_s"]),
    "bench_research": (["--minutes", "0.5", "--channels", "2", "--files", "2", "--json"],
                       lambda out, tmp: _json_last(out)["batch_files"] == 2
                       and _json_last(out)["export_events"] > 0),
    "bench_view": (["--seconds", "2", "--warmup", "1", "--json"],
                   lambda out, tmp: _json_last(out)["frames_per_s"] > 0
                   and _json_last(out)["view_errors"] == 0),
    "bench_receiver_off": (["--rounds", "1", "--json"],
                           lambda out, tmp: len(_json_last(out)["SIGKILL"]) == 1
                           and len(_json_last(out)["SIGSTOP"]) == 1),
    "bench_effort_evoked": (["--seconds", "5"], lambda out, tmp: "present" in out),
    "history_page": (["--duration", "3", "--out", "{tmp}/history.png"],
                     lambda out, tmp: _png(tmp / "history.png")),
}


def _run_tool(name: str, args: list[str], check, tmp_path: Path) -> None:
    argv = [sys.executable, str(ROOT / "tools" / f"{name}.py"),
            *(a.replace("{tmp}", str(tmp_path)) for a in args)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
        "QT_QPA_PLATFORM": "offscreen"}
    r = subprocess.run(argv, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=400)
    said = f"{' '.join(argv)}: exit {r.returncode}\n--- stdout\n{r.stdout[-3000:]}\n" \
           f"--- stderr\n{r.stderr[-3000:]}"
    assert r.returncode == 0, said
    assert "Traceback" not in r.stdout + r.stderr, said
    assert check(r.stdout, tmp_path), said


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", sorted(TOOLS))
def test_a_measuring_tool_runs_as_documented(name, tmp_path):
    """The quick tools run from a fresh folder as their docstrings say, and print what
    they measured (a change to an interface they use fails here, not at the next
    benchmark)."""
    _run_tool(name, *TOOLS[name], tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(500)
@pytest.mark.parametrize("name", sorted(SLOW_TOOLS))
def test_a_long_measuring_tool_runs_as_documented(name, tmp_path):
    """As above, for the tools that start sessions, windows or a browser."""
    _run_tool(name, *SLOW_TOOLS[name], tmp_path)


def test_every_tool_is_run_by_a_test():
    """A new tool gets a row here (or a test of its own), so it cannot break unnoticed."""
    texts = [p.read_text(encoding="utf-8") for p in (ROOT / "tests").rglob("test_*.py")]
    untested = [p.name for p in sorted((ROOT / "tools").glob("*.py"))
                if p.stem not in TOOLS and p.stem not in SLOW_TOOLS
                and not any(f"tools/{p.name}" in t or f'_tool("{p.stem}")' in t for t in texts)]
    assert untested == [], f"no test runs {untested}: add a row to TOOLS or SLOW_TOOLS"
