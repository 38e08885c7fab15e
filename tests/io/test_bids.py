"""EMG-BIDS export checked against the BIDS schema itself (bidsschematools), and its
edge cases: units, labels, padding, events of every kind, nothing overwritten."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from closedloop.errors import ConfigError, InputError
from closedloop.io.bids import (
    BidsTarget,
    ExportTask,
    check_label,
    export_recording,
    export_session,
    microvolts_per_unit,
    prepare_dataset,
    session_events,
)
from closedloop.io.xdf import load_session
from tests.conftest import ROOT

SHIPPED = ROOT / "recordings" / "sim_biceps_triceps.xdf"
pytest.importorskip("edfio")


def read_tsv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, BidsTarget]:
    root = tmp_path_factory.mktemp("bids")
    target = BidsTarget(str(root), "01", "bicepstriceps", "1")
    prepare_dataset(root, "01")
    export_recording(ExportTask(str(SHIPPED), target))
    return root, target


def test_the_files_follow_the_bids_schema(dataset) -> None:
    """File names, the REQUIRED sidecar fields and the channels table's columns and
    values, as the BIDS schema (1.11, EMG) defines them."""
    bst = pytest.importorskip("bidsschematools")
    from bidsschematools import schema, validator

    root, target = dataset
    report = validator.validate_bids(str(root))
    assert report["path_tracking"] == []  # every file matched a rule of the schema
    assert bst and len(report["match_listing"]) == 8
    s = schema.load_schema()
    sidecar = json.loads(target.path("emg.json").read_text())
    required = [k for k, v in s.rules.sidecars.emg.EMGRequired.fields.items()
                if (v if isinstance(v, str) else v.level) == "required"]
    assert set(required) <= set(sidecar), set(required) - set(sidecar)
    assert sidecar["EMGPlacementScheme"] in s.objects.metadata.EMGPlacementScheme.enum
    assert sidecar["RecordingType"] == "continuous"
    rule = s.rules.tabular_data.emg.EMGChannels
    with open(target.path("channels.tsv"), encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
    names = {k: s.objects.columns[k].name for k in rule.columns}
    assert header[:3] == [names[k] for k in rule.initial_columns]
    assert set(header) <= set(names.values())  # only columns the schema defines
    rows = read_tsv(target.path("channels.tsv"))
    assert {r["type"] for r in rows} == {"EMG"}
    assert {r["placement_scheme"] for r in rows} <= set(s.objects.columns.placement_scheme.enum)
    events = read_tsv(target.path("events.tsv"))
    assert list(events[0])[:2] == ["onset", "duration"]
    described = json.loads(target.path("events.json").read_text())
    assert set(events[0]) - {"onset", "duration"} <= set(described)  # every column defined
    assert {e["trial_type"] for e in events} <= set(described["trial_type"]["Levels"])
    desc = json.loads((root / "dataset_description.json").read_text())
    assert {"Name", "BIDSVersion"} <= set(desc)


def test_events_of_every_kind(dataset) -> None:
    root, target = dataset
    s = load_session(SHIPPED)
    events = session_events(s, 0, s.n, s.fs)
    on = [e for e in events if e["trial_type"] == "stim_on"]
    off = [e for e in events if e["trial_type"] == "stim_off"]
    assert len(on) == len(off) >= 1
    for a, b in zip(on, off, strict=True):  # a stim_on lasts until its stim_off
        assert a["duration"] == pytest.approx((b["sample"] - a["sample"]) / s.fs)
        assert a["muscle"] == b["muscle"] and a["current_ma"] > 0 and b["current_ma"] == 0
    first = s.commands[0]
    assert on[0]["sample"] == first.effective_sample
    assert on[0]["decision_sample"] == first.sample
    assert [e for e in events if e["trial_type"] == "trigger"]
    # a recording whose counter does not start at 0: indices count from the file's start
    shifted = replace(s, counter=s.counter + 500,
                      events=[replace(e, sample=e.sample + 500) for e in s.events])
    moved = session_events(shifted, 500, s.n, s.fs)
    assert [e["sample"] for e in moved if e["trial_type"].startswith("emg_")] == \
        [e["sample"] for e in events if e["trial_type"].startswith("emg_")]


def test_units_labels_and_padding(tmp_path) -> None:
    assert microvolts_per_unit("V", "f") == 1e6
    assert microvolts_per_unit("mV", "f") == 1e3
    assert microvolts_per_unit("µV", "f") == 1.0
    with pytest.raises(InputError, match="--emg-units"):
        microvolts_per_unit("counts", "f.xdf")
    assert microvolts_per_unit("counts", "f", "uV") == 1.0
    assert check_label("subject", "P07") == "P07"
    for bad in ("P-07", "a_b", "", "x y"):
        with pytest.raises(ConfigError, match="letters and"):
            check_label("subject", bad)
    mne = pytest.importorskip("mne")
    s = load_session(SHIPPED)
    cut = 40000 - 777  # not a whole number of 1 s records
    short = replace(s, samples=s.samples[:cut], timestamps=s.timestamps[:cut],
                    counter=s.counter[:cut], units="mV")
    target = BidsTarget(str(tmp_path), "02", "short")
    out = export_session(short, ExportTask("short.xdf", target))
    assert out.padded == 777 and out.samples == cut
    raw = mne.io.read_raw_bdf(target.path("emg.bdf"), preload=True, verbose="error")
    assert raw.n_times == 40000
    got = raw.get_data().T * 1e6
    want = short.samples * 1e3  # "mV" -> uV
    res = 2 * np.abs(want).max(axis=0) / (2**24 - 1)
    assert np.all(np.abs(got[:cut] - want) <= res / 2 * (1 + 1e-6))
    assert np.all(got[cut:] == got[cut - 1])  # padded with the last values
    pad = [a for a in raw.annotations if a["description"] == "BAD_ACQ_SKIP"]
    assert len(pad) == 1 and pad[0]["onset"] == pytest.approx(cut / s.fs)
    assert pad[0]["duration"] == pytest.approx(777 / s.fs)
    sidecar = json.loads(target.path("emg.json").read_text())
    assert sidecar["RecordingDuration"] == cut / s.fs
    # the same target again: refused, nothing touched
    before = target.path("emg.bdf").read_bytes()
    with pytest.raises(InputError, match="never overwrites"):
        export_session(short, ExportTask("short.xdf", target))
    assert target.path("emg.bdf").read_bytes() == before


def test_an_existing_foreign_description_is_refused(tmp_path) -> None:
    (tmp_path / "dataset_description.json").write_text('{"Name": "not bids"}')
    with pytest.raises(InputError, match="not a BIDS dataset description"):
        prepare_dataset(tmp_path, "01")
    assert (tmp_path / "dataset_description.json").read_text() == '{"Name": "not bids"}'


def test_a_cut_short_recording_is_exported_saying_what_is_damaged(tmp_path) -> None:
    cut = tmp_path / "cut.xdf"
    whole = SHIPPED.read_bytes()
    cut.write_bytes(whole[:len(whole) // 3])
    out = export_recording(ExportTask(str(cut), BidsTarget(str(tmp_path / "bids"), "01", "t")))
    assert "TRUNCATED" in out.damage and "intact" in out.damage
    whole_out = export_recording(ExportTask(str(SHIPPED), BidsTarget(str(tmp_path / "b2"), "01",
                                                                     "t")))
    assert whole_out.damage == "" and out.samples < whole_out.samples


def test_plausible_samples() -> None:
    """What the BDF's range is made of: real EMG, a stimulation artifact of 50 mV and a
    DC offset of 200 mV are plausible; a 1e10 is not, wherever it is, even on a channel
    that is flat otherwise; a stream whose values are mostly beyond any BDF is refused
    naming the channel and --emg-units."""
    from closedloop.io.bids import plausible

    rng = np.random.default_rng(1)
    x = rng.normal(0.0, 3.0, (20000, 3))  # uV
    x[5000, 0] = 5e4  # a stimulation artifact
    x[:, 1] += 2e5 + np.linspace(0.0, 1e4, 20000)  # a DC offset, drifting
    x[:, 2] = 0.0  # a flat channel with one blip
    x[7000, 2] = 5.0
    assert plausible(x).all()
    y = x.copy()
    y[[0, 9000], 0] = [1e16, -1e16]
    y[10, 1] = 1e10
    y[3, 2] = 1e16
    y[4, 2] = np.nan
    ok = plausible(y)
    assert sorted(zip(*np.nonzero(~ok), strict=True)) == [(0, 0), (3, 2), (4, 2), (10, 1),
                                                          (9000, 0)]
    with pytest.raises(InputError, match=r"f\.xdf: channel b: .*--emg-units"):
        plausible(x * 1e3, "f.xdf", ("a", "b", "c"))  # microvolts declared as millivolts


def test_absurd_and_nonfinite_samples_anywhere(tmp_path) -> None:
    """A 1e10 at the very first sample (before the session's checks had learnt
    anything), NaN before a channel's first finite value and -inf at the last sample:
    exported, the range set by the rest, the 1e10 clipped, the NaN written as 0, the
    -inf held (and the padding after it), each marked BAD_ at its samples."""
    mne = pytest.importorskip("mne")
    from closedloop.core.checks import hold_nonfinite

    s = load_session(SHIPPED)
    clean = s.samples.astype(np.float64)
    raw = clean.copy()
    raw[0, 0] = 1e10
    raw[100:103, 0] = np.nan
    raw[:5, 1] = np.nan
    raw[-1, 1] = -np.inf
    faulty = replace(s, samples=hold_nonfinite(raw), raw=raw)
    target = BidsTarget(str(tmp_path), "01", "t")
    out = export_session(faulty, ExportTask("f.xdf", target))
    assert [(r.label, r.clipped, r.filled) for r in out.replaced] == [
        ("EMG biceps", 1, 3), ("EMG triceps", 0, 6)]
    bdf = mne.io.read_raw_bdf(target.path("emg.bdf"), preload=True, verbose="error")
    got = bdf.get_data().T * 1e6
    want = clean * 1e6
    top = np.abs(want[1:]).max(axis=0)
    good = np.isfinite(raw) & (np.abs(raw) < 1)
    res = 2 * top / (2**24 - 1)
    assert np.all(np.abs(got[: s.n] - want)[good] <= np.broadcast_to(res / 2 * (1 + 1e-6),
                                                                    want.shape)[good])
    assert got[0, 0] == pytest.approx(top[0], rel=1e-6)
    assert np.all(got[100:103, 0] == got[99, 0])
    assert np.all(np.abs(got[:5, 1]) <= res[1] / 2 * (1 + 1e-6))  # 0 before the first finite
    assert np.all(got[s.n - 1:, 1] == got[s.n - 2, 1])
    bad = [(a["description"], round(a["onset"] * s.fs), round(a["duration"] * s.fs))
           for a in bdf.annotations if a["description"].startswith("BAD_")]
    assert bad == [("BAD_clipped/biceps", 0, 1), ("BAD_nonfinite/triceps", 0, 5),
                   ("BAD_nonfinite/biceps", 100, 3), ("BAD_nonfinite/triceps", s.n - 1, 1)]


def test_a_recording_without_faults_exports_as_before(dataset) -> None:
    """Every sample plausible: each channel's range is ±max|x| (rounded up to what the
    header holds) as it always was, and no BAD_ stretch, status_description or
    ReplacedSamples appears."""
    edfio = pytest.importorskip("edfio")
    from closedloop.io.bids import _header_ceil

    _, target = dataset
    s = load_session(SHIPPED)
    bdf = edfio.read_bdf(target.path("emg.bdf"))
    for k, sig in enumerate(bdf.signals):
        x = s.samples[:, k] * 1e6
        top = _header_ceil(float(np.abs(x).max()) * (1 + 1e-9))
        same = edfio.BdfSignal(x, s.fs, physical_range=(-top, top),
                               digital_range=(-(2**23), 2**23 - 1))
        assert (sig.physical_min, sig.physical_max) == (same.physical_min, same.physical_max)
        assert top - float(np.abs(x).max()) < 0.01
    kinds = {e["trial_type"] for e in read_tsv(target.path("events.tsv"))}
    assert not {"BAD_clipped", "BAD_nonfinite"} & kinds
    assert "status_description" not in read_tsv(target.path("channels.tsv"))[0]
    assert "ReplacedSamples" not in json.loads(target.path("emg.json").read_text())
