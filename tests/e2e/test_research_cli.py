"""Research outputs through the installed ``closedloop`` command, output to a pipe.

A simulated session is recorded for real (``closedloop run --record``, LabRecorder),
then scored (``evaluate`` on a folder, ``replay`` tables), exported to EMG-BIDS and read
back by MNE's own BDF reader; ``detect`` reads the project's XDF.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from closedloop.config import load_config
from closedloop.errors import ConfigError, InputError
from closedloop.io.xdf import load_session
from closedloop.runtime.devices import make_source
from tests.conftest import CONFIGS, ROOT

CONFIG = str(CONFIGS / "biceps_triceps.toml")
SHIPPED = ROOT / "recordings" / "sim_biceps_triceps.xdf"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout, whatever is installed
EXE = shutil.which("closedloop")
CL = [EXE] if EXE else [sys.executable, "-m", "closedloop"]
SEED = 3
DURATION_S = 12.5  # 25000 samples: the BDF's last 1 s record is padded


def cl(*args: object, timeout: float = 300) -> subprocess.CompletedProcess:
    """``closedloop ARGS`` as a user runs it (stdout and stderr to pipes)."""
    return subprocess.run([*CL, *map(str, args)], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def read_tsv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A simulated session recorded by LabRecorder, in a folder of its own."""
    path = tmp_path_factory.mktemp("sessions") / "sim.xdf"
    r = cl("run", "--config", CONFIG, "--record", path, "--duration", DURATION_S, "--seed", SEED,
           "--no-gui", "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    return path


def test_a_simulated_session_records_its_truth(recorded: Path) -> None:
    s = load_session(recorded)
    truth = [m for m in s.markers if m.label == "truth"]
    source = make_source(load_config(CONFIG), "sim", seed=SEED, realtime=False)
    expected = source.true_onsets_between(0, s.n)
    assert len(expected) >= 2
    assert [(m.sample, m.fields["muscle"]) for m in truth] == expected
    for m in truth:  # stamped with the time of the onset's own sample
        assert m.time == s.timestamps[m.sample]
    assert s.metadata["sim_seed"] == SEED


def test_evaluate_a_folder_of_recordings_to_csv_markdown_json(recorded: Path, tmp_path) -> None:
    out = tmp_path / "results.csv"
    r = cl("evaluate", recorded.parent, "--detector", "recorded", "--detector", "threshold",
           "--out", out)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(out.open(newline="")))
    from closedloop.analysis.evaluate import CSV_COLUMNS

    assert list(rows[0]) == CSV_COLUMNS
    assert "sensitivity_ci_low" in rows[0] and "f1" in rows[0] and "precision" in rows[0]
    live = next(r for r in rows if r["recording"] == "sim.xdf" and r["detector"] == "recorded")
    n_truth = sum(m.label == "truth" for m in load_session(recorded).markers)
    assert int(live["n_reference"]) == n_truth
    assert float(live["sensitivity"]) == 1.0  # the live detector found every attempt
    assert 0.0 <= float(live["latency_median_ms"]) < 150.0
    # never replaced without --overwrite; the file stays as it was
    before = out.read_bytes()
    r = cl("evaluate", recorded, "--detector", "recorded", "--out", out)
    assert r.returncode != 0 and "already exists" in r.stderr and "--overwrite" in r.stderr
    assert out.read_bytes() == before
    r = cl("evaluate", recorded, "--detector", "recorded", "--out", out, "--overwrite")
    assert r.returncode == 0 and out.read_bytes() != before
    md = cl("evaluate", recorded, "--detector", "recorded", "--format", "md")
    assert md.returncode == 0 and md.stdout.startswith("### files\n")
    assert "| recording | detector |" in md.stdout and "percentile bootstrap" in md.stdout
    js = json.loads(cl("evaluate", recorded, "--detector", "recorded", "--format",
                       "json").stdout)
    assert js["bootstrap"]["n"] == 2000 and js["rows"][0]["sensitivity"] == 1.0


def test_replay_compares_configs_side_by_side(recorded: Path, tmp_path) -> None:
    k3 = tmp_path / "k3.toml"
    k3.write_text(Path(CONFIG).read_text().replace("h_nats = 18.0", "h_nats = 9.0"))
    out = tmp_path / "replay.json"
    r = cl("replay", recorded, SHIPPED, "--config", "recorded", "--config", k3, "--out", out)
    assert r.returncode == 0, r.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [(Path(x["recording"]).name, x["config"]) for x in rows] == [
        ("sim.xdf", "recorded"), ("sim.xdf", "k3.toml"),
        ("sim_biceps_triceps.xdf", "recorded"), ("sim_biceps_triceps.xdf", "k3.toml"),
        ("overall", "recorded"), ("overall", "k3.toml")]
    own, other = rows[0], rows[1]
    assert own["identical"] is True and own["events_matched"] == own["events_recorded"] > 0
    assert own["commands_matched"] == own["commands_recorded"] > 0
    assert own["triggers"] >= 1 and own["stim_s"] > 0
    assert own["sensitivity"] == 1.0 and own["n_reference"] >= 2  # scored against the truth
    assert other["identical"] is False and other["onsets"] >= own["onsets"]
    assert rows[2]["n_reference"] is None  # the shipped recording predates truth markers
    pooled = rows[4]
    assert pooled["onsets"] == own["onsets"] + rows[2]["onsets"]
    assert pooled["commands"] == own["commands"] + rows[2]["commands"]
    # the text table with two configs, and CSV to a pipe
    text = cl("replay", recorded, "--config", "recorded", "--config", k3, "--quiet")
    assert "events=rec" in text.stdout and "k3.toml" in text.stdout
    csv_out = cl("replay", recorded, "--format", "csv", "--quiet")
    from closedloop.analysis.replays import CSV_COLUMNS

    assert csv_out.stdout.splitlines()[1].split(",")[0] == "recording"
    assert csv_out.stdout.splitlines()[1] == ",".join(CSV_COLUMNS)


def test_export_to_emg_bids_reads_back_in_mne(recorded: Path, tmp_path) -> None:
    mne = pytest.importorskip("mne")
    root = tmp_path / "bids"
    r = cl("export", recorded, SHIPPED, "--bids", root, "--subject", "01", "--session", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    emg = root / "sub-01" / "ses-1" / "emg"
    names = sorted(p.name for p in emg.iterdir())
    stem = "sub-01_ses-1_task-bicepstriceps_run-"
    assert names == sorted(f"{stem}{k}_{s}" for k in (1, 2) for s in
                           ("emg.bdf", "emg.json", "channels.tsv", "events.tsv", "events.json"))
    desc = json.loads((root / "dataset_description.json").read_text())
    assert desc["BIDSVersion"] and desc["DatasetType"] == "raw"
    assert (root / "participants.tsv").read_text() == "participant_id\nsub-01\n"
    for k, path in ((1, recorded), (2, SHIPPED)):
        s = load_session(path)
        sidecar = json.loads((emg / f"{stem}{k}_emg.json").read_text())
        for key in ("EMGPlacementScheme", "EMGReference", "SamplingFrequency",
                    "PowerLineFrequency", "SoftwareFilters", "TaskName"):
            assert key in sidecar  # the REQUIRED fields of BIDS EMG
        assert sidecar["SamplingFrequency"] == s.fs
        assert sidecar["RecordingDuration"] == s.n / s.fs
        chans = read_tsv(emg / f"{stem}{k}_channels.tsv")
        config = load_config(CONFIG)
        assert [c["target_muscle"] for c in chans] == list(s.channels)
        assert [c["placement_description"] for c in chans] == [m.placement for m in
                                                               config.muscles]
        raw = mne.io.read_raw_bdf(emg / f"{stem}{k}_emg.bdf", preload=True, verbose="error")
        assert raw.ch_names == [c["name"] for c in chans] and raw.info["sfreq"] == s.fs
        got = raw.get_data().T[: s.n] * 1e6  # MNE gives volts; the file holds microvolts
        want = s.samples.astype(np.float64) * 1e6  # the recording is in volts (float32)
        resolution = 2 * np.abs(want).max(axis=0) / (2**24 - 1)
        assert np.all(np.abs(got - want) <= resolution / 2 * (1 + 1e-6))
        pad = raw.n_times - s.n
        assert pad == (-s.n) % int(s.fs)
        events = read_tsv(emg / f"{stem}{k}_events.tsv")
        ann = raw.annotations
        assert list(ann.description) == [e["value"] for e in events]
        assert np.allclose(ann.onset, [float(e["onset"]) for e in events], atol=1e-6)
        assert np.allclose(ann.duration, [float(e["duration"]) for e in events], atol=1e-6)
        for e in events:
            assert float(e["onset"]) == pytest.approx(int(e["sample"]) / s.fs, abs=1e-9)
        kinds = [e["trial_type"] for e in events]
        assert kinds.count("emg_onset") == sum(e.kind == "onset" for e in s.events)
        stim = [e for e in events if e["trial_type"].startswith("stim_")]
        on = [c for c in s.commands if c.is_on]
        assert len(stim) >= len(on) and {"stim_on", "stim_off"} <= set(kinds)
        assert max(float(e["current_ma"]) for e in stim) == max(c.current_ma for c in on)
        assert kinds.count("truth") == sum(m.label == "truth" for m in s.markers)
        assert ("BAD_ACQ_SKIP" in kinds) == (pad > 0)
    # nothing is ever replaced: the same export again refuses before writing anything
    before = digest(root)
    r = cl("export", recorded, "--bids", root, "--subject", "01", "--session", "1", "--run", "2")
    assert r.returncode != 0 and "already exists" in r.stderr and "never overwrites" in r.stderr
    assert digest(root) == before
    # another subject joins the dataset: participants.tsv gains its row, nothing else changes
    r = cl("export", SHIPPED, "--bids", root, "--subject", "02")
    assert r.returncode == 0, r.stderr
    assert (root / "participants.tsv").read_text() == "participant_id\nsub-01\nsub-02\n"
    assert {k: v for k, v in digest(root).items() if k in before and
            k != "participants.tsv"} == {k: v for k, v in before.items()
                                         if k != "participants.tsv"}
    r = cl("export", SHIPPED, "--bids", root, "--subject", "0-3")
    assert r.returncode != 0 and "letters and digits" in r.stderr


def test_an_exported_dataset_is_detected_and_scored_as_its_recording(recorded: Path,
                                                                     tmp_path) -> None:
    """The recorded session exported to EMG-BIDS: ``detect`` on its BDF writes the events
    file ``detect`` writes from the XDF, byte for byte (its last data record is padded:
    the trailing BAD_ACQ_SKIP is left out, as the summary line says), and ``evaluate``
    on the dataset folder scores it as it scores the XDF: references from the truth
    rows of its events.tsv, the live decisions (``recorded``) from its emg_onset rows,
    every figure equal."""
    pytest.importorskip("edfio")
    root = tmp_path / "bids"
    assert cl("export", recorded, "--bids", root, "--subject", "01").returncode == 0
    bdf = root / "sub-01" / "emg" / "sub-01_task-bicepstriceps_emg.bdf"
    a, b = tmp_path / "xdf.csv", tmp_path / "bdf.csv"
    assert cl("detect", recorded, "--out", a).returncode == 0
    r = cl("detect", bdf, "--out", b)
    assert r.returncode == 0, r.stderr
    assert f"{DURATION_S:.1f} s at 2000 Hz" in r.stderr and "1000 padding sample(s)" in r.stderr
    assert sum(row["kind"] == "onset" for row in csv.DictReader(a.open(newline=""))) >= 2
    assert b.read_bytes() == a.read_bytes()
    scored = {}
    for name, where in (("xdf", recorded), ("bids", root)):
        r = cl("evaluate", where, "--detector", "recorded", "--detector", "cusum",
               "--format", "json")
        assert r.returncode == 0, r.stderr
        scored[name] = [{k: v for k, v in row.items() if k not in ("recording", "note")}
                        for row in json.loads(r.stdout)["rows"]]
    n_truth = sum(m.label == "truth" for m in load_session(recorded).markers)
    live = scored["bids"][0]
    assert live["detector"] == "recorded" and live["n_reference"] == n_truth >= 2
    assert live["sensitivity"] == 1.0 and live["n_detected"] >= n_truth
    assert scored["bids"] == scored["xdf"]


def test_detect_on_xdf_equals_detect_on_the_same_samples_as_npz(tmp_path) -> None:
    s = load_session(SHIPPED)
    npz = tmp_path / "same.npz"
    np.savez(npz, emg=s.samples, fs=s.fs, channels=np.array(s.channels))
    a, b = tmp_path / "xdf.csv", tmp_path / "npz.csv"
    r = cl("detect", SHIPPED, "--config", CONFIG, "--out", a)
    assert r.returncode == 0, r.stderr
    assert cl("detect", npz, "--config", CONFIG, "--out", b).returncode == 0
    assert a.read_bytes() == b.read_bytes()
    rows = list(csv.DictReader(a.open(newline="")))
    assert sum(r["kind"] == "onset" for r in rows) >= 2
    # the EMG stream picked by name, as for another LSL tool's recording
    c = tmp_path / "named.csv"
    emg_name = next(n for n in s.stream_names if n.endswith("-EMG"))
    assert cl("detect", SHIPPED, "--config", CONFIG, "--stream", emg_name,
              "--out", c).returncode == 0
    assert c.read_bytes() == a.read_bytes()
    r = cl("detect", SHIPPED, "--stream", "NoSuchAmp", "--out", tmp_path / "x.csv")
    assert r.returncode == InputError.exit_code  # a recording that cannot be used: 7
    assert "NoSuchAmp" in r.stderr and "Streams in the file" in r.stderr
    # never replaced without --overwrite
    r = cl("detect", SHIPPED, "--config", CONFIG, "--out", a)
    assert r.returncode == ConfigError.exit_code and "already exists" in r.stderr  # as run


#: Where the amplifier of :func:`faulty` misbehaves: (channel, first sample, samples,
#: what it sent, what the export calls it)
FAULTS = [(0, 14000, 10, "knock", "BAD_clipped"),  # +-1e10 alternating, 5 ms
          (1, 12000, 1, "absurd", "BAD_clipped"),  # one sample of 1e10
          (0, 16000, 100, "nan", "BAD_nonfinite"),
          (1, 17005, 15, "+inf", "BAD_nonfinite"),
          (1, 18000, 3, "-inf", "BAD_nonfinite")]


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A session recorded by the installed command (``closedloop run --source
    replay:amp.xdf --record``) from another tool's amplifier recording whose stream
    holds a +-1e10 knock, a single 1e10, and NaN, +inf and -inf bursts (the first 10 s
    of the shipped recording's EMG otherwise). Returns the recording and the clean EMG
    (volts)."""
    from closedloop.io.xdfwrite import XdfWriter, channels_desc, stream_header_xml

    d = tmp_path_factory.mktemp("faulty")
    clean = load_session(SHIPPED).samples[:20000].astype(np.float32)
    x = clean.copy()
    bad = {"knock": 1e10 * np.where(np.arange(10) % 2, 1.0, -1.0), "absurd": 1e10,
           "nan": np.nan, "+inf": np.inf, "-inf": -np.inf}
    for ch, at, n, what, _ in FAULTS:
        x[at:at + n, ch] = bad[what]
    stamps = 1000.0 + np.arange(len(x)) / 2000.0
    with XdfWriter(d / "amp.xdf") as w:
        w.add_stream(1, stream_header_xml("amp", "EMG", 2, 2000.0, "float32", desc=channels_desc(
            ("biceps", "triceps"), "EMG", "V")))
        for k in range(0, len(x), 1000):  # what LabRecorder's 0.5 s pulls would hold
            w.samples(1, x[k:k + 1000], stamps[k:k + 1000])
    path = d / "session.xdf"
    r = cl("run", "--config", CONFIG, "--source", f"replay:{d / 'amp.xdf'}?speed=fast",
           "--record", path, "--no-gui", "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    return path, clean.astype(np.float64)


def test_export_of_a_session_with_absurd_and_nonfinite_values(faulty, tmp_path) -> None:
    """The session's amplifier sent a +-1e10 knock, a single 1e10, NaN and +-inf: the
    export works; every other sample keeps its value to the resolution of the real EMG
    (the absurd values do not set the BDF's range); the absurd ones are written clipped
    to the range, the NaN/inf as the last finite value, and each stretch is a BAD_ event
    (BDF+ annotation and events.tsv) at its samples that MNE leaves out; the sidecars
    and the printed output say how many samples of which channel."""
    mne = pytest.importorskip("mne")
    path, clean = faulty
    s = load_session(path)
    assert np.isnan(s.received[16000, 0]) and s.received[12000, 1] == np.float32(1e10)
    root = tmp_path / "bids"
    r = cl("export", path, "--bids", root, "--subject", "01")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    emg = root / "sub-01" / "emg"
    stem = "sub-01_task-bicepstriceps_"
    raw = mne.io.read_raw_bdf(emg / f"{stem}emg.bdf", preload=True, verbose="error")
    got = raw.get_data().T[: s.n] * 1e6
    want = clean * 1e6
    bad = np.zeros(want.shape, dtype=bool)
    for ch, at, n, _, _ in FAULTS:
        bad[at:at + n, ch] = True
    top = np.abs(want).max(axis=0)  # the real EMG's peak sets the range
    resolution = 2 * top / (2**24 - 1)
    for ch in range(2):
        good = ~bad[:, ch]
        assert np.all(np.abs(got[good, ch] - want[good, ch]) <= resolution[ch] / 2 * (1 + 1e-6))
    # absurd values clipped to the range, NaN/inf written as the last finite value
    knock = np.where(np.arange(10) % 2, 1.0, -1.0)
    assert np.allclose(got[14000:14010, 0], knock * top[0], rtol=1e-6)
    assert got[12000, 1] == pytest.approx(top[1], rel=1e-6)
    assert np.all(got[16000:16100, 0] == got[15999, 0])
    assert np.all(got[17005:17020, 1] == got[17004, 1])
    assert np.all(got[18000:18003, 1] == got[17999, 1])
    # BAD_ stretches, in events.tsv and as annotations, at their samples
    events = read_tsv(emg / f"{stem}events.tsv")
    marked = [(e["trial_type"], e["muscle"], int(e["sample"]),
               round(float(e["duration"]) * s.fs)) for e in events
              if e["trial_type"].startswith("BAD_") and e["trial_type"] != "BAD_ACQ_SKIP"]
    assert sorted(marked) == sorted((kind, s.channels[ch], at, n)
                                    for ch, at, n, _, kind in FAULTS)
    details = {(e["muscle"], int(e["sample"])): json.loads(e["details"]) for e in events
               if e["trial_type"] in ("BAD_clipped", "BAD_nonfinite")}
    assert details[("biceps", 14000)]["min_uv"] == -1e16  # what was there, in uV
    assert details[("biceps", 14000)]["max_uv"] == 1e16
    assert details[("biceps", 16000)]["nan"] == 100
    assert details[("triceps", 17005)]["+inf"] == 15
    assert details[("triceps", 18000)]["-inf"] == 3
    ann = raw.annotations
    assert list(ann.description) == [e["value"] for e in events]
    assert np.allclose(ann.onset, [float(e["onset"]) for e in events], atol=1e-6)
    assert np.allclose(ann.duration, [float(e["duration"]) for e in events], atol=1e-6)
    assert "BAD_clipped/biceps" in ann.description
    kept = raw.get_data(reject_by_annotation="omit").shape[1]  # MNE leaves them out
    skipped = raw.n_times - s.n
    assert kept == raw.n_times - skipped - int(np.count_nonzero(bad.any(axis=1)))
    # the events of the session are still right
    kinds = [e["trial_type"] for e in events]
    assert [int(e["sample"]) for e in events if e["trial_type"] == "emg_onset"] == \
        [e.sample for e in s.events if e.kind == "onset"]
    assert kinds.count("input_issue") == sum(m.label == "input_issue" for m in s.markers) >= 4
    assert "stim_on" in kinds
    # how many samples, of which channel: the sidecar, channels.tsv and the printed line
    sidecar = json.loads((emg / f"{stem}emg.json").read_text())
    assert sidecar["ReplacedSamples"] == {"EMG biceps": {"clipped": 10, "filled": 100},
                                          "EMG triceps": {"clipped": 1, "filled": 18}}
    chans = {c["name"]: c for c in read_tsv(emg / f"{stem}channels.tsv")}
    assert "10 sample(s)" in chans["EMG biceps"]["status_description"]
    assert "100 NaN/inf" in chans["EMG biceps"]["status_description"]
    assert "18 NaN/inf" in chans["EMG triceps"]["status_description"]
    out = r.stdout
    assert "EMG biceps: 10 sample(s) beyond" in out and "100 NaN/inf" in out, out
    assert "EMG triceps: 1 sample(s) beyond" in out and "18 NaN/inf" in out, out
