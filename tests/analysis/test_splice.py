"""Spliced trials (real bursts in real rest), their scoring, the offline peers, and
``closedloop evaluate --splice`` through the installed command."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from scipy import signal

from closedloop.analysis import splice
from closedloop.analysis.evaluate import (
    parse_detector_spec,
    shared_recording,
    splice_evaluate,
)
from closedloop.analysis.peers import consensus, detect_onset, run_peer
from closedloop.analysis.scoring import score_trial
from closedloop.config import loads_config, parse_config
from closedloop.errors import ConfigError


def _power(x: np.ndarray) -> float:
    sos = signal.butter(4, [20.0, 450.0], btype="bandpass", fs=1000.0, output="sos")
    return float(np.mean(signal.sosfiltfilt(sos, x) ** 2))


# -- the trials ------------------------------------------------------------------------------
def test_trials_hold_real_bursts_at_the_set_snr(shared_data):
    trials = splice.make_trials(shared_data, 10.0, seed=0)
    assert len(trials) >= 10
    for t in trials:
        assert t.n == int(splice.TRIAL_S * splice.FS) and len(t.onsets) == 2
        (a, b), (c, _) = t.onsets, t.ends
        assert 2000 <= a < 2600 and 4200 <= b < 4800 and c < b - 50  # spans never overlap
        assert all(e <= t.n for e in t.ends)
        rest_file = t.rest.split("[")[0]
        assert all(not name.startswith(rest_file) for name in t.bursts)  # other stretches
        # the trial is the raw rest plus the bursts: outside the bursts, the rest itself
        lo, hi = (int(v) for v in t.rest.split("[")[1].rstrip("]").split(":"))
        rest = splice._column(str(shared_data), rest_file, 0)[lo:hi]
        assert np.array_equal(t.samples[:1900], rest[:1900])
        # each burst's mean power from onset to end is 10 dB above the rest window's
        added = t.samples - rest
        for onset, end in zip(t.onsets, t.ends, strict=True):
            p_burst = float(np.mean(added[onset:end] ** 2))
            assert 10 * np.log10(p_burst / _power(rest)) == pytest.approx(10.0, abs=1e-6)
    # seeds decide everything; SNR only scales
    again = splice.make_trials(shared_data, 10.0, seed=0)
    assert all(np.array_equal(x.samples, y.samples) for x, y in zip(trials, again, strict=True))
    loud = splice.make_trials(shared_data, 20.0, seed=0)
    assert [t.onsets for t in loud] == [t.onsets for t in trials]
    assert [t.bursts for t in loud] == [t.bursts for t in trials]
    other = splice.make_trials(shared_data, 10.0, seed=1)
    assert [t.onsets for t in other] != [t.onsets for t in trials]
    assert not set(splice.DEV_SEEDS) & set(splice.REPORT_SEEDS)


def test_rest_stretches_are_quiet_offline(shared_data):
    """Every rest stretch: no onset from any peer, no 100 ms stretch 1.75 x its median RMS."""
    sos = signal.butter(4, [20.0, 450.0], btype="bandpass", fs=1000.0, output="sos")
    for t in splice.rest_recordings(shared_data):
        xf = signal.sosfiltfilt(sos, t.samples - t.samples.mean())
        env = np.sqrt(np.convolve(xf**2, np.ones(100) / 100, mode="same"))
        assert env[100:-100].max() < 1.75 * np.median(env), t.name
    assert sum(t.n for t in splice.rest_recordings(shared_data)) / 60000.0 > 1.8  # minutes


# -- scoring -----------------------------------------------------------------------------------
def test_score_trial_on_a_known_case():
    fs = 1000.0
    onsets, ends = (2000, 5000), (2500, 5400)
    # burst 1: hit at +30 ms and a re-trigger; burst 2: first onset at +200 ms (late, a
    # miss); a false detection at 1000
    s = score_trial(onsets, ends, [1000, 2030, 2300, 5200], fs, 7.0)
    assert (s.n_bursts, s.hits, s.misses, s.retriggers, s.late, s.false_detections) == (
        2, 1, 1, 1, 1, 1)
    assert s.latencies_s == (0.03,)
    assert s.rest_s == pytest.approx(7.0 - (0.5 + 0.2) - (0.4 + 0.2))
    assert not s.meets_criterion()  # a miss and a false detection
    good = score_trial(onsets, ends, [1990, 5040], fs, 7.0)
    assert good.hits == 2 and good.false_detections == 0 and good.meets_criterion()
    slow = score_trial(onsets, ends, [2060, 5070], fs, 7.0)
    assert slow.hits == 2 and not slow.meets_criterion()  # median latency 65 ms > 50 ms
    early = score_trial(onsets, ends, [1940], fs, 7.0)
    assert early.hits == 0 and early.false_detections == 1  # before -50 ms: false


# -- the peers ---------------------------------------------------------------------------------
def test_bmc_recipe_reproduces_the_notebook(shared_data):
    ref = json.loads((shared_data / "reference_outputs.json").read_text())
    pairs = ref["bmc_emg.csv"]["BMC_notebook_recipe"]["onset_offset_samples"]
    x = np.loadtxt(shared_data / "bmc_emg.csv", delimiter=",")[:, 1]
    assert run_peer("bmc", x, 1000.0, (0, 200)) == [a for a, _ in pairs]
    runs = detect_onset(np.array([0, 5, 5, 0, 5, 5, 5, 0, 0, 5]), 1, n_above=3, n_below=1)
    assert runs.tolist() == [[1, 6]]


def test_consensus_rule():
    marks = {"a": [100, 500], "b": [120, 900], "c": [150, 510], "d": [40]}
    # clusters start at the earliest unused mark: {d 40, a 100, b 120}, then {a 500, c 510}
    assert consensus(marks, 1000.0, tol_s=0.1, quorum=3) == [100]
    assert consensus(marks, 1000.0, tol_s=0.1, quorum=2) == [100, 505]


def test_consensus_onsets_are_what_the_peers_say(shared_data):
    pytest.importorskip("biosppy")
    pytest.importorskip("neurokit2")
    for (file, col), want in splice.CONSENSUS.items():
        if file == "bmc_emg.csv":
            x, rest = np.loadtxt(shared_data / file, delimiter=",")[:, col], (0, 200)
        elif file.startswith("uci_"):
            x, rest = np.loadtxt(shared_data / file, skiprows=7)[:, col], (0, 1000)
        else:
            x, rest = np.loadtxt(shared_data / file, comments="#"), (0, 1000)
        marks = {p: run_peer(p, x, 1000.0, rest) for p in ("bmc", "neurokit2", "hodges_bui",
                                                           "bonato")}
        assert tuple(consensus(marks, 1000.0)) == want, file
    for b in splice.BURSTS:
        assert b.onset in splice.CONSENSUS[(b.file, b.column)]


def test_shared_recordings_use_the_consensus(shared_data):
    bmc = shared_recording(shared_data, "bmc_emg.csv")
    assert [s for s, _ in bmc.reference] == list(splice.CONSENSUS[("bmc_emg.csv", 1)])
    b1 = shared_recording(shared_data, "biosppy_emg_1.txt")
    assert len(b1.reference) == 4 and b1.exclude


# -- the command -------------------------------------------------------------------------------
def test_peer_specs():
    assert parse_detector_spec("peer:bmc").name == "peer:bmc"
    with pytest.raises(ConfigError, match="unknown peer"):
        parse_detector_spec("peer:nope")


def test_splice_evaluation_figures(shared_data):
    rows = splice_evaluate(shared_data, ["cusum", "peer:bmc"], snrs=(20.0, 0.0), seeds=(0,),
                           jobs=1)
    by = {(r.detector, r.snr_db): r for r in rows}
    assert set(by) == {(d, s) for d in ("cusum", "peer:bmc") for s in (20.0, 0.0, None)}
    loud, quiet, rest = by[("cusum", 20.0)], by[("cusum", 0.0)], by[("cusum", None)]
    assert loud.bursts == quiet.bursts == 2 * loud.trials >= 20
    assert loud.sensitivity >= 0.9 and loud.latency_median_ms <= 40
    assert quiet.sensitivity < loud.sensitivity
    assert rest.bursts == 0 and rest.sensitivity is None and rest.rest_min > 1.8
    assert 0.0 <= loud.crit <= 1.0
    # the offline recipe marks onsets, often before the (consensus) onset
    assert by[("peer:bmc", 20.0)].sensitivity >= 0.9


def test_evaluate_splice_through_the_installed_command(shared_data, tmp_path):
    r = subprocess.run(
        ["closedloop", "evaluate", str(shared_data), "--splice", "20", "--seeds", "3",
         "--detector", "cusum", "--detector", "threshold", "--jobs", "1", "--json"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0].split()[:3] == ["detector", "SNR", "trials"]
    data = json.loads(lines[-1])["splice"]
    assert {(d["detector"], d["snr_db"]) for d in data} == {
        ("cusum", 20.0), ("cusum", None), ("threshold", 20.0), ("threshold", None)}
    assert all(d["seeds"] == [3] for d in data if d["snr_db"] is not None)
    r = subprocess.run(["closedloop", "evaluate", "--splice", "--detector", "cusum"],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode != 0 and "shared data folder" in r.stderr and "Traceback" not in r.stderr


def test_a_cusum_config_loads():
    text = '[detector]\nkind = "cusum"\nh_nats = 15\n[[muscles]]\nname = "a"\n'
    cfg = loads_config(text, source="c.toml")
    assert cfg.detector_kind == "cusum" and cfg.detector.h_nats == 15.0
    assert cfg.resolved["detector"]["kind"] == "cusum"
    again = parse_config(cfg.resolved, source="recording")  # what replay reads
    assert again.detector_kind == "cusum" and again.detector == cfg.detector
    with pytest.raises(ConfigError, match="unknown key"):
        loads_config(text.replace("h_nats", "k_on"), source="c.toml")
    with pytest.raises(ConfigError, match="kind"):
        loads_config(text.replace('"cusum"', '"cusm"'), source="c.toml")
    plain = loads_config('[[muscles]]\nname = "a"\n', source="p.toml")
    assert plain.detector_kind == "cusum" and plain.resolved["detector"]["kind"] == "cusum"
    # a kind-less [detector] table written for the threshold detector says what to add
    with pytest.raises(ConfigError) as err:
        loads_config('[detector]\nk_on = 5.0\n[[muscles]]\nname = "a"\n', source="o.toml")
    assert str(err.value).endswith(
        "These are keys of kind = 'threshold'; the [detector] table has no kind, so it is "
        "the default 'cusum': add kind = 'threshold' to keep that detector")
    old = loads_config('[detector]\nkind = "threshold"\nk_on = 5.0\n[[muscles]]\nname = "a"\n')
    assert old.detector_kind == "threshold" and old.detector.k_on == 5.0
