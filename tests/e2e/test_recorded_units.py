"""The units a recording gives the detector's statistic.

The ``Envelope`` and ``Thresholds`` streams of a session carry what its detector decides
on: an EMG envelope for the threshold detector, CUSUM's log-likelihood ratio in nats for
cusum. A session recorded with the installed command (``closedloop run --record``,
LabRecorder) labels them with that statistic's unit, read back here with plain pyxdf as
another tool would; recordings made before (every statistic labelled with the EMG's
unit) still replay exactly, and closedloop's reader gives their statistic's real unit.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import pyxdf

from closedloop.analysis.bench import bench_config_text, record_simulated_session
from closedloop.io import outlets as outlets_module
from closedloop.io.outlets import SessionOutlets
from closedloop.io.recorded import recorded_detector_kind
from closedloop.io.xdf import load_session, read_xdf, statistic_unit, stream_name
from tests.conftest import CONFIGS, ROOT

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout, whatever is installed
EXE = shutil.which("closedloop")
CL = [EXE] if EXE else [sys.executable, "-m", "closedloop"]
SHIPPED = ROOT / "recordings" / "sim_biceps_triceps.xdf"


def cl(*args: object, cwd: Path) -> subprocess.CompletedProcess:
    """``closedloop ARGS`` as a user runs it (stdout and stderr to pipes)."""
    return subprocess.run([*CL, *map(str, args)], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=300)


def config_with_detector(tmp_path: Path, kind: str) -> Path:
    """The shipped biceps/triceps config with ``[detector]`` replaced by ``kind``'s
    defaults."""
    text = (CONFIGS / "biceps_triceps.toml").read_text(encoding="utf-8")
    text, n = re.subn(r"\n\[detector\]\n.*?(?=\n\[)", f'\n[detector]\nkind = "{kind}"\n',
                      text, flags=re.S)
    assert n == 1
    path = tmp_path / f"{kind}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def channels(path: Path, suffix: str) -> list[dict[str, str]]:
    """``label``, ``type`` and ``unit`` of each channel of the stream named ``*-suffix``,
    read with plain pyxdf."""
    streams, _ = pyxdf.load_xdf(str(path), dejitter_timestamps=False,
                                synchronize_clocks=False)
    s = next(s for s in streams if s["info"]["name"][0].endswith(f"-{suffix}"))
    desc = s["info"]["desc"][0]
    out = []
    for ch in desc["channels"][0]["channel"]:
        out.append({k: (ch[k][0] or "") for k in ("label", "type", "unit")})
    return out


def statistic_desc(path: Path, suffix: str) -> dict[str, Any]:
    streams, _ = pyxdf.load_xdf(str(path), dejitter_timestamps=False,
                                synchronize_clocks=False)
    s = next(s for s in streams if s["info"]["name"][0].endswith(f"-{suffix}"))
    st = s["info"]["desc"][0]["closedloop"][0]["statistic"][0]
    return {k: st[k][0] or "" for k in ("name", "unit")}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A short simulated session of each detector, recorded by the installed command."""
    out = {}
    for kind in ("cusum", "threshold"):
        folder = tmp_path_factory.mktemp(kind)
        config = config_with_detector(folder, kind)
        r = cl("run", "--config", config, "--record", "F.xdf", "--duration", 2, "--seed", 1,
               "--no-gui", "--quiet", cwd=folder)
        assert r.returncode == 0, r.stdout + r.stderr
        out[kind] = folder / "F.xdf"
    return out


@pytest.mark.parametrize("kind, stat_unit, stat_type", [
    ("cusum", "nats", "cusum statistic"),
    ("threshold", "V", "Envelope"),
])
def test_a_recorded_session_labels_its_statistic_in_its_own_unit(recorded, kind, stat_unit,
                                                                 stat_type):
    path = recorded[kind]
    emg = channels(path, "EMG")
    assert [c["unit"] for c in emg] == ["V", "V", "samples"]  # the EMG: the source's unit
    env = channels(path, "Envelope")
    assert [(c["label"], c["type"], c["unit"]) for c in env] == [
        ("biceps", stat_type, stat_unit), ("triceps", stat_type, stat_unit),
        ("counter", "counter", "samples")]
    thr = channels(path, "Thresholds")
    assert [c["unit"] for c in thr] == [stat_unit] * 4 + ["samples", "samples"]
    assert [c["label"] for c in thr][:4] == ["biceps_on", "triceps_on", "biceps_off",
                                             "triceps_off"]
    for suffix in ("Envelope", "Thresholds"):
        assert statistic_desc(path, suffix)["unit"] == stat_unit
    # closedloop's own reader agrees, on the file and on the stream picked as "the EMG"
    envelope = next(s for s in read_xdf(path).streams
                    if stream_name(s).endswith("-Envelope"))
    assert statistic_unit(envelope, "threshold") == stat_unit  # the file says it
    assert load_session(path, emg_stream=stream_name(envelope)).units == stat_unit
    assert load_session(path).units == "V"
    r = cl("replay", "F.xdf", "--check", "--quiet", cwd=path.parent)
    assert r.returncode == 0 and "check passed" in r.stdout, r.stdout + r.stderr


def test_the_tkeo_energy_is_recorded_in_the_square_of_the_emg_unit(tmp_path):
    path = tmp_path / "tkeo.xdf"
    record_simulated_session(path, bench_config_text(2, 1000.0, detector="tkeo"), 0.02)
    unit = channels(path, "EMG")[0]["unit"]
    assert unit and [c["unit"] for c in channels(path, "Envelope")][:2] == [f"{unit}^2"] * 2
    assert statistic_desc(path, "Envelope") == {"name": "TKEO energy", "unit": f"{unit}^2"}


class _OldOutlets(SessionOutlets):
    """The outlets as they were before recordings said what their statistic is: every
    statistic labelled with the EMG's unit, no ``statistic`` in the stream headers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.pop("statistic", None)
        super().__init__(*args, **kwargs)

    def _create(self, *args: Any, statistic: Any = None, **kwargs: Any) -> None:
        super()._create(*args, **kwargs)


def test_an_older_cusum_recording_still_replays_and_reads_as_nats(tmp_path, monkeypatch):
    monkeypatch.setattr(outlets_module, "SessionOutlets", _OldOutlets)
    path = tmp_path / "old.xdf"
    record_simulated_session(path, bench_config_text(2, 1000.0, detector="cusum"), 0.05)
    monkeypatch.undo()
    emg_unit = channels(path, "EMG")[0]["unit"]
    assert channels(path, "Envelope")[0]["unit"] == emg_unit  # labelled as it was
    session = load_session(path)
    assert recorded_detector_kind(session.config_text, session.metadata) == "cusum"
    envelope = next(s for s in read_xdf(path).streams
                    if stream_name(s).endswith("-Envelope"))
    assert statistic_unit(envelope, "cusum") == "nats"
    assert load_session(path, emg_stream=stream_name(envelope)).units == "nats"
    r = cl("replay", path, "--check", "--quiet", cwd=tmp_path)
    assert r.returncode == 0 and "check passed" in r.stdout, r.stdout + r.stderr


def test_the_shipped_recording_made_before_still_replays_with_check(tmp_path):
    s = load_session(SHIPPED)
    envelope = next(st for st in read_xdf(SHIPPED).streams
                    if stream_name(st).endswith("-Envelope"))
    kind = recorded_detector_kind(s.config_text, s.metadata)
    assert kind == "threshold" and statistic_unit(envelope, kind) == s.units == "V"
    r = cl("replay", SHIPPED, "--check", "--quiet", cwd=tmp_path)
    assert r.returncode == 0 and "check passed" in r.stdout, r.stdout + r.stderr
