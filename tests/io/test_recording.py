"""Real LabRecorderCLI records SessionOutlets; pyxdf and load_session read it back."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import time
import uuid
from pathlib import Path

import numpy as np
import pylsl
import pytest
import pyxdf

from closedloop.core.events import Block, Event
from closedloop.core.stream import SourceInfo
from closedloop.errors import ConfigError, DeviceLostError, InputError
from closedloop.io.outlets import SessionOutlets
from closedloop.io.recorder import XdfRecorder, check_sequence, verify_recording
from closedloop.io.xdf import load_session, read_xdf
from closedloop.stim.commands import StimCommand

FS = 500.0
INFO = SourceInfo("synthetic amp", FS, ("biceps", "triceps"), "uV", "brainflow")
CONFIG = '[session]\nname = "P07 <left> & right"\n\n[detector]\nk_on = 3.0\n'


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def emg(start: int, n: int) -> np.ndarray:
    k = np.arange(start, start + n, dtype=np.float64)
    return np.column_stack([np.sin(k / 5.0) * 100.0, np.cos(k / 9.0) * 30.0 + 0.125])


def foreign_outlet(name: str, labels: tuple[str, ...] | None) -> pylsl.StreamOutlet:
    info = pylsl.StreamInfo(name, "EMG", 2, FS, pylsl.cf_float32, name)
    if labels:
        chans = info.desc().append_child("channels")
        for lab in labels:
            chans.append_child("channel").append_child_value("label", lab)
    return pylsl.StreamOutlet(info)


@dataclasses.dataclass
class Recorded:
    path: Path
    counts: dict[str, int]
    names: dict[str, str]
    samples: np.ndarray
    timestamps: np.ndarray
    events: list[Event]
    commands: list[StimCommand]
    foreign: tuple[str, str]
    session_uid: str


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    path = tmp_path_factory.mktemp("rec") / "session.xdf"
    f1, f2 = unique("foreignA"), unique("foreignB")
    out1, out2 = foreign_outlet(f1, ("ext1", "ext2")), foreign_outlet(f2, None)
    events: list[Event] = []
    commands: list[StimCommand] = []
    with SessionOutlets(unique("T"), INFO, config_text=CONFIG, metadata={"patient": "P07"}) as out:
        out.announce()  # before any recorder: this marker is lost, the header is not
        preds = [*out.recorder_predicates(), {"name": f1}, {"name": f2}]
        with XdfRecorder(path, preds) as rec:
            assert rec.alive and len(rec.streams) == 10  # 8 recorded roles + 2 foreign
            out.announce(time=0.0)
            k, chunk = 0, 13
            for i in range(40):
                ts = np.arange(k, k + chunk) / FS  # starts at exactly 0.0
                out.push_emg(emg(k, chunk), ts)
                if i % 2 == 0:
                    env = np.abs(emg(k, chunk))
                    ev = [Event(k + 3, ts[3], "biceps", "onset", float(env[3, 0]), 1.5)]
                    on = np.array([1.5, np.nan])
                    out.push_block(
                        Block(k, ts, emg(k, chunk), env, env > 1.5, on, on / 2, ev, INFO.channels)
                    )
                else:
                    out.push_envelope(np.abs(emg(k, chunk)), ts)
                    ev = [Event(k, ts[0], "triceps", "offset")]  # NaN envelope/threshold
                    out.push_events(ev)
                events += ev
                cmd = StimCommand(
                    "biceps",
                    1,
                    12.5 if i % 2 else 0.0,
                    300.0,
                    35.0,
                    k,
                    float(ts[0]),
                    "plateau" if i % 2 else "off",
                    arrival_wall=100.0 + i if i % 3 else math.nan,
                )
                out.push_commands([cmd])
                commands.append(cmd)
                out.push_marker("cue", ts[0], sample=k, trial=i, muscle="biceps")
                out1.push_chunk(emg(k, chunk).astype(np.float32))
                out2.push_chunk(emg(k, chunk).astype(np.float32))
                k += chunk
                time.sleep(0.01)
        counts = out.counts
        names = dict(out.names)
        uid = out.session_uid
    samples = emg(0, counts[names["emg"]])
    timestamps = np.arange(samples.shape[0]) / FS
    return Recorded(path, counts, names, samples, timestamps, events, commands, (f1, f2), uid)


def test_every_sample_and_marker_is_in_the_file(recorded: Recorded) -> None:
    report = verify_recording(recorded.path, recorded.counts)
    session = recorded.names["session"]
    # the announce() pushed before LabRecorder subscribed is lost (seq 0); all else is there
    assert report.streams[session].missing_ranges == ((0, 0),)
    others = {k: v for k, v in recorded.counts.items() if k != session}
    report = verify_recording(recorded.path, others)
    assert report.ok, report.summary()
    assert report.complete and not report.truncated
    assert report.streams[recorded.names["emg"]].found == 520
    assert report.streams[recorded.names["stim"]].found == 40


def test_plain_pyxdf_reads_it_with_exact_timestamps(recorded: Recorded) -> None:
    streams, _ = pyxdf.load_xdf(
        str(recorded.path), dejitter_timestamps=False, synchronize_clocks=False
    )
    emg_stream = next(s for s in streams if s["info"]["name"][0] == recorded.names["emg"])
    data = emg_stream["time_series"]
    np.testing.assert_array_equal(data[:, :2], recorded.samples)
    np.testing.assert_array_equal(data[:, 2], np.arange(recorded.samples.shape[0]))
    # 0.0 is stored as the next double up (liblsl and XDF cannot keep an exact 0.0)
    assert emg_stream["time_stamps"][0] == np.nextafter(0.0, 1.0)
    np.testing.assert_array_equal(emg_stream["time_stamps"][1:], recorded.timestamps[1:])
    desc = emg_stream["info"]["desc"][0]
    labels = [c["label"][0] for c in desc["channels"][0]["channel"]]
    assert labels == ["biceps", "triceps", "counter"]
    assert desc["channels"][0]["channel"][0]["unit"] == ["uV"]
    assert desc["closedloop"][0]["role"] == ["emg"]


def test_load_session_round_trip(recorded: Recorded) -> None:
    s = load_session(recorded.path)
    assert s.name == recorded.names["emg"] and s.fs == FS
    assert s.channels == ("biceps", "triceps") and s.units == "uV"
    np.testing.assert_array_equal(s.samples, recorded.samples)
    np.testing.assert_array_equal(s.timestamps, recorded.timestamps)  # exactly, 0.0 included
    np.testing.assert_array_equal(s.counter, np.arange(s.n))
    for got, want in zip(s.events, recorded.events, strict=True):
        assert (got.sample, got.time, got.channel, got.kind) == (
            want.sample,
            want.time,
            want.channel,
            want.kind,
        )
        for a, b in ((got.envelope, want.envelope), (got.threshold, want.threshold)):
            assert a == b or (math.isnan(a) and math.isnan(b))
    assert len(s.commands) == len(recorded.commands)
    for got, want in zip(s.commands, recorded.commands, strict=True):
        g, w = dataclasses.asdict(got), dataclasses.asdict(want)
        for key in w:
            assert g[key] == w[key] or (math.isnan(g[key]) and math.isnan(w[key])), key
        assert got.decision_key() == want.decision_key()
    assert [(m.label, m.sample, m.fields["trial"]) for m in s.markers] == [
        ("cue", 13 * i, i) for i in range(40)
    ]
    assert s.config_text == CONFIG
    assert s.metadata["patient"] == "P07" and s.metadata["session_uid"] == recorded.session_uid
    assert s.complete and not s.truncated
    assert set(recorded.foreign) <= set(s.stream_names)


def test_session_info_marker_and_thresholds(recorded: Recorded) -> None:
    xdf = read_xdf(recorded.path)
    by_name = {s["info"]["name"][0]: s for s in xdf.streams}
    info_stream = by_name[recorded.names["session"]]
    (text,) = [row[0] for row in info_stream["time_series"]]  # only the announce after start
    payload = json.loads(text)
    assert payload["seq"] == 1 and payload["config"] == CONFIG
    thr = by_name[recorded.names["thresholds"]]
    assert thr["time_series"].shape == (20, 6)
    np.testing.assert_array_equal(thr["time_series"][:, 0], 1.5)
    assert np.isnan(thr["time_series"][:, 1]).all()
    np.testing.assert_array_equal(thr["time_series"][:, 4], 26 * np.arange(20) + 12)


def test_other_tools_streams_by_name_or_type(recorded: Recorded) -> None:
    f1, f2 = recorded.foreign
    s = load_session(recorded.path, emg_stream=f1)
    assert s.name == f1 and s.channels == ("ext1", "ext2") and s.counter is None
    assert s.events == [] and s.config_text is None
    np.testing.assert_allclose(s.samples, recorded.samples.astype(np.float32), rtol=0, atol=0)
    s2 = load_session(recorded.path, emg_stream=f2)
    assert s2.channels == ("EMG1", "EMG2")
    with pytest.raises(InputError,
                       match=f"(?s)3 streams named or typed 'EMG'.*{f1}.*pick one.*--stream NAME"):
        load_session(recorded.path, emg_stream="EMG")
    with pytest.raises(InputError, match="(?s)no numeric stream named or typed 'ECG'.*samples="):
        load_session(recorded.path, emg_stream="ECG")


def test_truncated_files_still_load(recorded: Recorded, tmp_path: Path) -> None:
    data = recorded.path.read_bytes()
    emg_name = recorded.names["emg"]
    pyxdf_failures = 0
    cut_path = tmp_path / "cut.xdf"
    for cut in np.linspace(200, len(data) - 1, 60).astype(int):
        cut_path.write_bytes(data[:cut])
        xdf = read_xdf(cut_path)  # never raises
        assert not xdf.complete  # a cut always loses the last footer
        assert xdf.truncated and not xdf.corrupt and xdf.state == "truncated"
        try:
            pyxdf.load_xdf(str(cut_path), dejitter_timestamps=False, verbose=False)
        except Exception:  # noqa: BLE001 - counting pyxdf's failures
            pyxdf_failures += 1
        report = verify_recording(cut_path, {emg_name: 520})
        check = report.streams.get(emg_name)
        if check is not None:  # what is there is a gap-free prefix 0..k-1
            assert check.duplicates == 0 and check.out_of_order == 0
            assert check.missing_ranges in ((), ((check.found, 519),))
    print(f"pyxdf alone failed on {pyxdf_failures} of 60 cuts; read_xdf on none")


def test_sigkill_mid_recording_leaves_a_loadable_file(tmp_path: Path) -> None:
    path = tmp_path / "killed.xdf"
    with SessionOutlets(unique("K"), INFO, with_envelope=False) as out:
        rec = XdfRecorder(path, out.recorder_predicates())
        rec.start()
        k = 0
        # LabRecorderCLI writes through a C++ stream buffer: give it more than a buffer's
        # worth of data (and more than one 0.5 s pull) before the kill
        for i in range(150):
            out.push_emg(emg(k, 10), 1000.0 + np.arange(k, k + 10) / FS)
            k += 10
            if i == 120:
                os.kill(rec.pid, signal.SIGKILL)
            time.sleep(0.01)
        deadline = time.monotonic() + 5
        while rec.alive and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not rec.alive
        with pytest.raises(DeviceLostError, match="died .*exit code -9"):
            rec.check()
        with pytest.raises(DeviceLostError, match="had died .*read_xdf"):
            rec.stop()
        counts = out.counts
    report = verify_recording(path, counts)
    check = report.streams[out.names["emg"]]
    assert not report.complete  # no footers
    assert check.found >= 100
    print(f"SIGKILL after 1200 samples: {check.found} in the file ({path.stat().st_size} bytes)")
    assert check.duplicates == 0 and check.out_of_order == 0 and check.unexpected == 0
    # the samples before the kill that LabRecorderCLI had pulled are there, in order
    assert check.missing_ranges in ((), ((check.found, counts[out.names["emg"]] - 1),))
    s = load_session(path)
    assert not s.complete and s.n == check.found and s.state == "truncated"
    np.testing.assert_array_equal(s.samples, emg(0, s.n))
    assert "TRUNCATED" in s.damage_report and f"samples 0-{s.n - 1:,}" in s.damage_report
    assert "TRUNCATED" in report.summary() and not report.ok


def test_recorder_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing or not executable"):
        XdfRecorder(tmp_path / "x.xdf", ["name='x'"], cli_path=tmp_path / "LabRecorderCLI")
    missing = unique("nostream")
    rec = XdfRecorder(tmp_path / "y.xdf", [{"name": missing}], start_timeout=3.0)
    with pytest.raises(DeviceLostError, match=f"no LSL stream matches .*{missing}.*visible now"):
        rec.start()
    assert not rec.alive
    (tmp_path / "z.xdf").write_bytes(b"")
    with pytest.raises(ConfigError, match="already exists"):
        XdfRecorder(tmp_path / "z.xdf", ["name='x'"]).start()
    with pytest.raises(InputError, match="not an XDF file"):
        read_xdf(tmp_path / "z.xdf")


def test_check_sequence() -> None:
    c = check_sequence("s", np.array([0, 1, 2, 2, 5, 4, 9]), 8)
    assert (c.found, c.missing, c.duplicates, c.out_of_order, c.unexpected) == (7, 3, 1, 2, 1)
    assert c.missing_ranges == ((3, 3), (6, 7))
    assert not c.ok and "3 missing (3..3, 6..7)" in c.describe()
    assert check_sequence("s", np.arange(5), 5).ok


def test_outlet_misuse_is_reported() -> None:
    with pytest.raises(ConfigError, match="session name"):
        SessionOutlets("it's", INFO)
    out = SessionOutlets(unique("M"), INFO, with_envelope=False)
    assert set(out.roles) == {"emg", "events", "stim", "markers", "mwave", "session"}
    assert len({p["source_id"] for p in out.recorder_predicates()}) == 6
    with pytest.raises(InputError, match="shape \\(n, 2\\)"):
        out.push_emg(np.zeros((4, 3)), np.arange(4.0))
    with pytest.raises(InputError, match="n timestamps"):
        out.push_emg(np.zeros((4, 2)), np.arange(3.0))
    with pytest.raises(RuntimeError, match="no envelope stream"):
        out.push_envelope(np.zeros((4, 2)), np.arange(4.0))
    out.close()
    with pytest.raises(RuntimeError, match="after close"):
        out.push_emg(np.zeros((1, 2)), np.zeros(1))


def test_closedloops_reader_equals_pyxdf(recorded: Recorded) -> None:
    """On this LabRecorderCLI recording, read_xdf gives pyxdf's streams bit for bit."""
    from tests.io.test_xdf_reader import assert_same, pyxdf_load

    assert_same(read_xdf(recorded.path).streams, pyxdf_load(recorded.path))
