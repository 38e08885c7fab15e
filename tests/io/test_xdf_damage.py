"""Recordings that lie: damaged XDF files are reported as such, with what is intact.

A copy of the shipped recording is damaged on purpose: one bit flipped in chunk
headers (length, tag, stream id, sample count), in timestamp byte counts, string lengths,
boundary chunks, the EMG counter, headers and footers; or the file cut at many offsets.
Whatever the damage: no traceback, and never "complete" or "check passed" for a file
whose structure is broken; what is reported intact is exactly the original's prefix.

XDF has no checksums: a bit flipped inside a sample value, a timestamp or a marker's
text leaves a valid file. For those the test asserts that nothing is lost silently (all
samples still there, only the flipped one differs) unless the damage is seen.
"""

from __future__ import annotations

import os
import random
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from closedloop.cli import main
from closedloop.errors import RecordingDamagedError
from closedloop.io.recorder import verify_recording
from closedloop.io.xdf import load_session, read_xdf
from tests.conftest import ROOT

SHIPPED = ROOT / "recordings" / "sim_biceps_triceps.xdf"
_VARLEN = {1: "<B", 4: "<I", 8: "<Q"}
_SIZE = {"double64": 8, "float32": 4, "int64": 8, "int32": 4, "int16": 2, "int8": 1}


def _varlen(data: bytes, p: int) -> tuple[int, int]:
    nb = data[p]
    return struct.unpack_from(_VARLEN[nb], data, p + 1)[0], p + 1 + nb


def byte_map(data: bytes) -> dict[str, list[int]]:
    """Every byte offset of an intact XDF file by what it is (an independent parser)."""
    from xml.etree import ElementTree

    out: dict[str, list[int]] = {}

    def add(kind: str, a: int, b: int) -> None:
        out.setdefault(kind, []).extend(range(a, b))

    streams: dict[int, tuple[str, int, str]] = {}
    pos = 4
    while pos < len(data):
        length, body = _varlen(data, pos)
        end = body + length
        add("length", pos, body)
        tag = struct.unpack_from("<H", data, body)[0]
        add("tag", body, body + 2)
        if tag in (2, 3, 6):
            add("stream id", body + 2, body + 6)
        elif tag == 4:  # moved to another stream, an offset changes nothing readable
            add("clock offset", body + 2, end)
        if tag == 1:
            add("file header", body + 2, end)
        elif tag == 2:
            root = ElementTree.fromstring(data[body + 6:end])
            sid = struct.unpack_from("<I", data, body + 2)[0]
            streams[sid] = (root.findtext("channel_format"), int(root.findtext("channel_count")),
                            root.findtext("name"))
            add("stream header", body + 6, end)
        elif tag == 5:
            add("boundary", body + 2, end)
        elif tag == 6:
            add("footer", body + 6, end)
        elif tag == 3:
            fmt, nch, name = streams[struct.unpack_from("<I", data, body + 2)[0]]
            n, p = _varlen(data, body + 6)
            add("sample count", body + 6, p)
            role = name.rsplit("-", 1)[-1]
            for _ in range(n):
                stamped = data[p]
                add(f"timestamp byte count {role}", p, p + 1)
                p += 1
                if stamped:
                    add("timestamp", p, p + 8)
                    p += 8
                if fmt == "string":
                    for _ in range(nch):
                        ln, q = _varlen(data, p)
                        add("string length", p, q)
                        add("string", q, q + ln)
                        p = q + ln
                else:
                    size = _SIZE[fmt]
                    for c in range(nch):
                        kind = "counter" if c == nch - 1 and role != "Thresholds" else "value"
                        add(f"{kind} {role}", p, p + size)
                        p += size
            assert p == end
        pos = end
    return out


@pytest.fixture(scope="module")
def original():
    data = SHIPPED.read_bytes()
    counts = {s["info"]["name"][0]: len(s["time_stamps"]) for s in read_xdf(SHIPPED).streams}
    return data, byte_map(data), load_session(SHIPPED), counts


def same_prefix(s, orig) -> bool:
    """The session holds exactly the original's first ``s.n`` samples and the events,
    commands and markers before the damage."""
    k = s.n
    ok = (np.array_equal(s.received, orig.received[:k], equal_nan=True)
          and np.array_equal(s.timestamps, orig.timestamps[:k])
          and np.array_equal(s.counter, orig.counter[:k]))
    for got, want in ((s.events, orig.events), (s.commands, orig.commands),
                      (s.markers, orig.markers)):
        ok = ok and repr(got) == repr(want[:len(got)])
    return bool(ok)


#: Bytes whose change breaks the file's structure or closedloop's counters.
STRUCTURE = ("length", "tag", "stream id", "sample count", "string length", "boundary",
             "timestamp byte count EMG", "timestamp byte count Events",
             "timestamp byte count Stim", "counter EMG")


def flip(data: bytes, offset: int, bit: int, path: Path) -> Path:
    b = bytearray(data)
    b[offset] ^= 1 << bit
    path.write_bytes(bytes(b))
    return path


@pytest.mark.parametrize("kind", STRUCTURE)
def test_broken_structure_is_reported_with_what_is_intact(original, kind, tmp_path) -> None:
    data, where, orig, counts = original
    rng = random.Random(kind)
    for offset in rng.sample(where[kind], min(10, len(where[kind]))):
        path = flip(data, offset, rng.randrange(8), tmp_path / "f.xdf")
        report = verify_recording(path, counts)
        assert not report.ok, (offset, report.summary())
        assert report.summary().split("\n")[0] != f"recording {path.name}: complete"
        try:
            s = load_session(path)
        except RecordingDamagedError as exc:  # the EMG stream's header itself is damaged
            assert "CORRUPT" in str(exc) and "no usable EMG stream" in str(exc), offset
            continue
        assert s.damage and not s.complete, offset
        assert s.state == "corrupt", (offset, s.damage)  # the file was not cut short
        assert "intact:" in s.damage_report and "CORRUPT" in s.damage_report
        assert f"samples 0-{s.n - 1:,}" in s.damage_report or s.n == 0
        assert same_prefix(s, orig), (offset, s.damage_report)
        if kind != "counter EMG":  # (a counter value is no XDF structure)
            assert "CORRUPT" in report.summary()


def test_flips_where_xdf_cannot_see_them_lose_nothing_silently(original, tmp_path) -> None:
    """A value, a timestamp or a marker's text changed: the file stays valid XDF. Either
    the damage is seen (closedloop's JSON markers do not parse), or every sample is
    still there and only the flipped one differs."""
    data, where, orig, _ = original
    rng = random.Random(1)
    for kind in ("value EMG", "timestamp", "string", "value Envelope", "counter Envelope"):
        for offset in rng.sample(where[kind], 8):
            s = load_session(flip(data, offset, rng.randrange(8), tmp_path / "f.xdf"))
            if s.damage:
                assert same_prefix(s, orig) and "intact:" in s.damage_report
                continue
            assert s.n == orig.n and len(s.events) == len(orig.events)
            assert len(s.commands) == len(orig.commands)
            rows = np.flatnonzero(
                ~((s.received == orig.received) | (np.isnan(s.received) & np.isnan(orig.received))
                  ).all(axis=1) | (s.timestamps != orig.timestamps))
            # one sample; a changed timestamp also moves the next one if that one's is
            # left out of the file (it is the previous one plus 1/fs)
            assert rows.size <= 1 or (rows.size == 2 and rows[1] == rows[0] + 1), (kind, rows)


def test_cut_files_are_truncated_with_what_is_intact(original, tmp_path) -> None:
    data, _, orig, counts = original
    path = tmp_path / "cut.xdf"
    for cut in np.linspace(300, len(data) - 1, 60).astype(int):
        path.write_bytes(data[:cut])
        try:
            s = load_session(path)
        except RecordingDamagedError as exc:  # cut before the EMG stream's header
            assert "TRUNCATED" in str(exc) and cut < 5000
            continue
        assert s.state == "truncated" and not s.complete and s.truncated, cut
        assert "TRUNCATED" in s.damage_report and "intact:" in s.damage_report
        assert same_prefix(s, orig), cut
        report = verify_recording(path, counts)
        assert not report.ok and report.summary().startswith(
            f"recording {path.name}: TRUNCATED"), report.summary()
    # cut before the EMG stream's header: a clear message, no traceback
    path.write_bytes(data[:40])
    with pytest.raises(RecordingDamagedError, match="(?s)TRUNCATED.*no usable EMG stream"):
        load_session(path)
    assert main(["replay", str(path), "--quiet"]) == 9


def test_damage_elsewhere_keeps_the_session(original, tmp_path) -> None:
    """A broken file header makes the file corrupt but concerns no samples: the session
    keeps all of them. A broken chunk of the envelope (which replay does not load) is
    found by verify_recording, which reads every stream; the session is whole."""
    data, where, orig, counts = original
    path = flip(data, data.index(b"<info>"), 2, tmp_path / "f.xdf")  # "<" becomes "8"
    s = load_session(path)
    assert s.state == "corrupt" and s.n == orig.n and same_prefix(s, orig)
    assert f"samples 0-{orig.n - 1:,}" in s.damage_report and "file header" in s.damage_report
    path = flip(data, where["timestamp byte count Envelope"][500], 2, tmp_path / "g.xdf")
    s = load_session(path)
    assert s.n == orig.n and same_prefix(s, orig) and len(s.events) == len(orig.events)
    report = verify_recording(path, counts)
    assert not report.ok and "CORRUPT" in report.summary() and "Envelope" in report.summary()


def test_clock_sync_through_pyxdf_keeps_the_same_intact_part(original, tmp_path) -> None:
    """With synchronize_clocks, pyxdf reads the intact part (a cut chunk's complete
    samples rebuilt as a chunk): the same samples, events and commands."""
    data, where, _, _ = original
    path = tmp_path / "f.xdf"
    rng = random.Random(5)
    for i in range(12):
        if i % 2:
            path.write_bytes(data[:rng.randrange(50_000, len(data))])
        else:
            flip(data, rng.choice(where["length"] + where["sample count"]), 3, path)
        a = load_session(path)
        b = load_session(path, synchronize_clocks=True)
        assert a.n == b.n and np.array_equal(a.received, b.received, equal_nan=True)
        assert (len(a.events), len(a.commands)) == (len(b.events), len(b.commands))
        assert a.damage == b.damage


# -- the commands ----------------------------------------------------------------------------
def closedloop(*args: str) -> subprocess.CompletedProcess:
    """The installed ``closedloop`` command, output to a pipe."""
    exe = shutil.which("closedloop")
    assert exe, "the closedloop command is not installed"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_replay_refuses_a_damaged_recording_and_replays_its_intact_part(tmp_path) -> None:
    data = SHIPPED.read_bytes()
    cut = tmp_path / "crashed.xdf"
    cut.write_bytes(data[:1_500_000])
    out = closedloop("replay", str(cut), "--check", "--quiet")
    assert out.returncode == 9, out.stdout + out.stderr
    assert "CHECK FAILED" not in out.stdout and "check passed" not in out.stdout
    assert "TRUNCATED" in out.stdout and "intact:" in out.stdout and "--partial" in out.stdout
    assert out.stdout.startswith(f"{cut}: the recording is TRUNCATED"), out.stdout  # named once
    out = closedloop("replay", str(cut), "--check", "--quiet", "--partial")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "PARTIAL: the recording is TRUNCATED" in out.stdout
    assert "check passed, checked on the intact part only" in out.stdout

    where = byte_map(data)
    flipped = flip(data, where["length"][len(where["length"]) // 2], 6, tmp_path / "f.xdf")
    assert main(["replay", str(flipped), "--check", "--quiet"]) == 9
    assert main(["replay", str(flipped), "--check", "--quiet", "--partial"]) == 0


def test_a_damaged_recording_is_no_source_for_a_session(tmp_path) -> None:
    """``run --source replay:FILE`` must not stimulate from a recording cut short."""
    from closedloop.sources.replay import ReplaySource

    cut = tmp_path / "crashed.xdf"
    cut.write_bytes(SHIPPED.read_bytes()[:1_000_000])
    with pytest.raises(RecordingDamagedError, match="(?s)TRUNCATED.*--partial"):
        ReplaySource(cut).open()
    src = ReplaySource(cut, partial=True)
    src.open()
    assert src.session is not None and 0 < src.session.n < 40_000
    src.close()


def test_report_and_evaluate_say_the_file_is_damaged(tmp_path, capsys) -> None:
    cut = tmp_path / "crashed.xdf"
    cut.write_bytes(SHIPPED.read_bytes()[:1_200_000])
    assert main(["report", str(cut), "--out", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    # at the top, among the warnings: the state and what the report covers
    warnings = page[page.index('id="warnings"'):]
    assert "recording TRUNCATED" in warnings
    assert "this report covers the intact part only" in warnings
    assert "TRUNCATED" in capsys.readouterr().err
    assert main(["evaluate", str(cut), "--detector", "threshold"]) == 0
    assert "TRUNCATED recording, scored on its intact part only" in capsys.readouterr().out
