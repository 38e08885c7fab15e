"""Recordings other LSL tools write, and headers that lie: one clear outcome, never a
traceback, never a hang, never a guess.

Each file is written with :class:`~closedloop.io.xdfwrite.XdfWriter` the way LabRecorder
writes it (timestamps left out where they follow from the rate), and each command runs
through the installed ``closedloop`` script, output to a pipe. Every case here ended in
a traceback, a hang, memory exhaustion, the wrong exit code, or (the labels) a session
that read one of two equally labelled electrodes without saying so.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

from closedloop.io.xdfwrite import XdfWriter, channels_desc, stream_header_xml
from tests.conftest import CONFIGS

CLOSEDLOOP = shutil.which("closedloop")
CONFIG = str(CONFIGS / "biceps_triceps.toml")

pytestmark = pytest.mark.skipif(CLOSEDLOOP is None, reason="the closedloop script is not "
                                "installed (pip install -e .)")


def _write(path, labels, *, fs=2000.0, seconds=2.0, fmt="float32", nch=None, stamps=None):
    """An EMG stream of Gaussian noise in volts, as another tool records it."""
    rng = np.random.default_rng(1)
    n = int(seconds * (fs or 2000.0))
    if stamps is None:
        stamps = 100.0 + (np.arange(n) / fs if fs else np.cumsum(rng.uniform(2e-4, 8e-4, n)))
    with XdfWriter(path) as w:
        w.add_stream(1, stream_header_xml("amp", "EMG", nch or len(labels), fs, fmt,
                                          desc=channels_desc(labels, unit="V")))
        if n and nch is None:
            w.samples(1, rng.normal(0.0, 1e-5, (n, len(labels))), stamps)
    return path


def _session_like(path, *, metadata="{}", config=None, markers=None):
    """A recording shaped like a closedloop session's (streams carrying desc/closedloop
    role and session_uid) whose session metadata, config or markers are broken: what
    another program, or a damaged file, may hold."""
    from xml.sax.saxutils import escape

    def cl(role: str, extra: str = "") -> str:
        return (f"<closedloop><role>{role}</role><session_uid>abc</session_uid>{extra}"
                "</closedloop>")

    rng = np.random.default_rng(2)
    n = 4000
    with XdfWriter(path) as w:
        w.add_stream(1, stream_header_xml("s-EMG", "EMG", 2, 2000.0, "float32",
                                          desc=channels_desc(["biceps", "triceps"], unit="V")
                                          + cl("emg")))
        w.samples(1, rng.normal(0.0, 1e-5, (n, 2)), 100.0 + np.arange(n) / 2000.0)
        extra = f"<metadata>{escape(metadata)}</metadata>"
        if config is not None:
            extra += f"<config>{escape(config)}</config>"
        w.add_stream(2, stream_header_xml("s-Session", "SessionInfo", 1, 0.0, "string",
                                          desc=cl("session", extra)))
        w.samples(2, [["{}"]], np.array([100.0]))
        if markers is not None:
            w.add_stream(3, stream_header_xml("s-Markers", "Markers", 1, 0.0, "string",
                                              desc=cl("markers")))
            w.samples(3, [[m] for m in markers], 100.5 + np.arange(len(markers)) * 0.01)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("foreign")
    _write(d / "grid64.xdf", [f"e{k}" for k in range(64)])  # 257-byte samples
    _write(d / "grid256.xdf", [f"e{k}" for k in range(256)], seconds=2.0)
    _write(d / "huge_count.xdf", ["a"], seconds=0.0, nch=10**12)
    _write(d / "irregular.xdf", ["a", "b"], fs=0.0)
    _write(d / "fast.xdf", ["a", "b"], fs=1e12, seconds=1e-8)
    _write(d / "twice.xdf", ["biceps", "biceps", "triceps"], seconds=3.0)
    _write(d / "no_samples.xdf", ["a", "b"], seconds=0.0)
    _write(d / "stuck_clock.xdf", ["a", "b"], stamps=np.full(4000, 5.0))
    deep = "[" * 100_000
    _session_like(d / "meta_list.xdf", metadata="[1, 2]")
    _session_like(d / "meta_deep.xdf", metadata=deep)
    _session_like(d / "markers_deep.xdf", markers=[deep])
    _session_like(d / "markers_list.xdf", markers=["[1]"])
    _session_like(d / "config_deep.xdf", config="a = " + "[" * 5000 + "]" * 5000)
    return d


#: (command, exit code, words the output must hold)
CASES = {
    # a 64-channel float32 grid: numpy refused 1 + 64 x 4 = 257 bytes in a uint8 step
    "replay a 64-channel grid": (["replay", "grid64.xdf", "--jobs", "1"], 0,
                                 "4000 samples (2.0 s) replayed"),
    "detect on a 64-channel grid": (["detect", "grid64.xdf", "--out", "g64.csv"], 0,
                                    "64 channel(s), 2.0 s at 2000 Hz"),
    # matplotlib took 40 s to lay out 64 lanes, more than 5 minutes for 256
    "report of a 256-channel grid": (["report", "grid256.xdf", "--out", "g256.html"], 0,
                                     "report written"),
    # a header declaring 10**12 channels: read as it says, it took all memory
    "replay a header of 10**12 channels": (["replay", "huge_count.xdf", "--jobs", "1"], 7,
                                           "declares 1,000,000,000,000 channels"),
    "export a header of 10**12 channels": (["export", "huge_count.xdf", "--bids", "b",
                                            "--subject", "01", "--jobs", "1"], 7,
                                           "closedloop reads EMG streams of up to 4,096"),
    # rates the signal core cannot work at: tracebacks (detect, report) or 'unexpected'
    "detect an irregular stream": (["detect", "irregular.xdf", "--out", "i.csv"], 7,
                                   "declares no regular sampling rate"),
    "evaluate an irregular stream": (["evaluate", "irregular.xdf", "--detector", "threshold",
                                      "--jobs", "1"], 7, "declares no regular sampling rate"),
    "replay an irregular stream": (["replay", "irregular.xdf", "--jobs", "1"], 7,  # was 2
                                   "has no nominal rate"),
    "report at 1e12 Hz": (["report", "fast.xdf", "--out", "f.html"], 7,
                          "is sampled at 1e+12 Hz"),
    "detect at 1e12 Hz": (["detect", "fast.xdf", "--out", "f.csv"], 7,
                          "is sampled at 1e+12 Hz"),
    # one label on two channels: without a config each is a channel of its own ...
    "replay with a label twice": (["replay", "twice.xdf", "--jobs", "1"], 0,
                                  "6000 samples (3.0 s) replayed"),
    "report with a label twice": (["report", "twice.xdf", "--out", "t.html"], 0,
                                  "report written"),
    # a stream with a header and no sample; stamps that never advance: no warnings
    # printed by numpy or matplotlib (a division by zero; identical axis limits)
    "report of a stream with no samples": (["report", "no_samples.xdf", "--out", "n.html"],
                                           0, "report written"),
    "replay of stamps that never advance": (["replay", "stuck_clock.xdf", "--jobs", "1"], 0,
                                            "4000 samples (2.0 s) replayed"),
    # a session's fields broken: metadata JSON but not an object, or nested deeper than
    # the parser goes; markers the same; a recorded config nested too deeply (each was
    # an AttributeError, a TypeError or a RecursionError)
    "report with metadata [1, 2]": (["report", "meta_list.xdf", "--out", "m.html"], 0,
                                    "report written"),
    "replay with deep metadata": (["replay", "meta_deep.xdf", "--jobs", "1"], 0,
                                  "4000 samples (2.0 s) replayed"),
    "replay with a deep marker": (["replay", "markers_deep.xdf", "--jobs", "1"], 9,
                                  "trial marker #0 at byte"),
    "export with a marker [1]": (["export", "markers_list.xdf", "--bids", "bm", "--subject",
                                  "01", "--jobs", "1"], 0,
                                 "trial marker #0 at byte 53943 is unreadable"),
    "replay a config nested too deeply": (["replay", "config_deep.xdf", "--jobs", "1"], 2,
                                          "values are nested too deeply"),
    # ... a config naming it cannot tell which electrode is the muscle's: refused
    "run on a label twice": (["run", "--config", CONFIG, "--source", "replay:twice.xdf",
                              "--no-gui", "--no-outlets", "--quiet"], 2,
                             "has 2 channels labelled so (0-based 0, 1)"),
}


@pytest.mark.timeout(150)
@pytest.mark.parametrize("case", list(CASES))
def test_a_foreign_recording_gets_one_clear_outcome(files, case):
    argv, code, words = CASES[case]
    r = subprocess.run([CLOSEDLOOP, *argv], cwd=files, capture_output=True, text=True,
                       timeout=120)  # a hang (the 256-lane report) fails here
    said = r.stdout + r.stderr
    assert "Traceback" not in said, said
    assert r.returncode == code, said
    assert words in said, said
    assert not re.search(r"\w+Warning: ", said), said  # a library's warning, not ours


#: (command, exit code, words): a named pipe where a file is read waited for a writer for
#: ever; the config's did not even end on SIGTERM (the read is resumed after the handler)
PIPES = {
    "run --config PIPE": (["run", "--config", "pipe", "--no-gui", "--no-outlets",
                           "--duration", "1"], 2, "'pipe' is not a regular file"),
    "run --source replay:PIPE": (["run", "--config", CONFIG, "--source", "replay:pipe",
                                  "--no-gui", "--no-outlets", "--quiet"], 7,
                                 "is not a regular file (a device, a named pipe or a socket)"),
    "replay PIPE": (["replay", "pipe", "--jobs", "1"], 2, "'pipe' is not a regular file"),
    "detect PIPE": (["detect", "pipe", "--out", "p.csv", "--fs", "1000"], 2,
                    "'pipe' is not a regular file"),
}


@pytest.mark.timeout(150)
@pytest.mark.parametrize("case", list(PIPES))
def test_a_named_pipe_read_as_a_file_is_refused_not_waited_on(tmp_path, case):
    import os

    os.mkfifo(tmp_path / "pipe")
    argv, code, words = PIPES[case]
    r = subprocess.run([CLOSEDLOOP, *argv], cwd=tmp_path, capture_output=True, text=True,
                       timeout=60)
    said = r.stdout + r.stderr
    assert "Traceback" not in said and r.returncode == code, said
    assert words in said, said
