"""Benchmark: how fast recordings load (pyxdf against closedloop's reader).

Writes a recording laid out as a closedloop session recorded by LabRecorder
(:func:`closedloop.io.xdfwrite.synthetic_session`: EMG and envelope at the full rate
with a counter channel, thresholds, events, commands, markers, 0.5 s chunks, boundary
and clock-offset chunks, footers), then times, each on the same file:

* ``pyxdf``: ``pyxdf.load_xdf(..., synchronize_clocks=False, dejitter_timestamps=False)``,
  every stream (what ``load_session`` did before closedloop had its own reader);
* ``read_xdf``: :func:`closedloop.io.xdf.read_xdf`, every stream, structure checked;
* ``load_session``: :func:`closedloop.io.xdf.load_session`, what ``replay`` loads (the
  EMG and the marker streams, not the envelope and thresholds).

Each load runs in a fresh Python process (as a ``closedloop replay`` does: fresh memory
costs page faults), timed inside it from the call to its return; the figure is the best
of ``--repeat`` runs (the file is in the page cache after the first). Speeds are file
megabytes (1e6 bytes) per second. The last line is one JSON object. The default is the
issue's case: 60 minutes, 8 channels, 2 kHz. pyxdf's result is compared with
``read_xdf``'s, timestamps and values bit for bit, for every stream.

Usage (from the repository root)::

    PYTHONPATH=. python tools/bench_xdf_load.py [--minutes 60] [--channels 8] [--fs 2000]
        [--format double64|float32] [--repeat 3] [--no-pyxdf] [--file PATH] [--keep]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

_CHILD = """
import sys, time
kind, path = sys.argv[1], sys.argv[2]
if kind == "pyxdf":
    import pyxdf
    t0 = time.perf_counter()
    pyxdf.load_xdf(path, synchronize_clocks=False, dejitter_timestamps=False)
else:
    from closedloop.io.xdf import load_session, read_xdf
    t0 = time.perf_counter()
    out = read_xdf(path) if kind == "read_xdf" else load_session(path)
    assert not out.damage, out.damage
print(time.perf_counter() - t0)
"""


def _timed(kind: str, path: Path, repeat: int) -> float:
    """Best wall time of ``kind`` loading ``path``, each run in a fresh process."""
    best = float("inf")
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", _CHILD, kind, str(path)],
                             capture_output=True, text=True, check=True)
        best = min(best, float(out.stdout.strip().splitlines()[-1]))
    return best


def _identical(path: Path) -> bool:
    """pyxdf and read_xdf give the same streams, bit for bit."""
    import pyxdf

    from closedloop.io.xdf import read_xdf

    ref, _ = pyxdf.load_xdf(str(path), synchronize_clocks=False, dejitter_timestamps=False)
    mine = read_xdf(path).streams
    for a, b in zip(ref, mine, strict=True):
        for key in ("time_stamps", "time_series"):
            x, y = a[key], b[key]
            if isinstance(x, list):
                if x != y:
                    return False
            elif x.dtype != y.dtype or x.shape != y.shape or not np.array_equal(
                    x.view(np.uint8), y.view(np.uint8)):
                return False
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--fs", type=float, default=2000.0)
    p.add_argument("--format", default="double64", choices=("double64", "float32"))
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--no-pyxdf", action="store_true", help="skip pyxdf (slow on long files)")
    p.add_argument("--file", help="write the recording here (default: a temporary folder); "
                   "an existing file is measured as it is")
    p.add_argument("--keep", action="store_true", help="keep the generated file")
    args = p.parse_args(argv)

    from closedloop.io.xdfwrite import synthetic_session

    tmp = tempfile.TemporaryDirectory(prefix="bench_xdf_")
    path = Path(args.file) if args.file else Path(tmp.name) / "session.xdf"
    t0 = time.perf_counter()
    if not path.exists():
        synthetic_session(path, minutes=args.minutes, channels=args.channels, fs=args.fs,
                          fmt=args.format)
    written = time.perf_counter() - t0
    mb = path.stat().st_size / 1e6
    print(f"{path}: {mb:.1f} MB, {args.minutes:g} min, {args.channels} channels at "
          f"{args.fs:g} Hz ({args.format}), written in {written:.1f} s")
    result: dict[str, object] = {"file_mb": round(mb, 1), "minutes": args.minutes,
                                 "channels": args.channels, "fs": args.fs,
                                 "format": args.format}

    t_read = _timed("read_xdf", path, args.repeat)
    print(f"read_xdf (all streams, checked): {t_read:.2f} s, {mb / t_read:.0f} MB/s")
    t_sess = _timed("load_session", path, args.repeat)
    print(f"load_session (what replay loads): {t_sess:.2f} s, {mb / t_sess:.0f} MB/s")
    result.update(read_xdf_s=round(t_read, 3), read_xdf_mb_s=round(mb / t_read, 1),
                  load_session_s=round(t_sess, 3), load_session_mb_s=round(mb / t_sess, 1))
    if not args.no_pyxdf:
        t_py = _timed("pyxdf", path, 1)
        same = _identical(path)
        print(f"pyxdf (all streams): {t_py:.2f} s, {mb / t_py:.0f} MB/s; read_xdf gives the "
              f"same timestamps and values bit for bit: {same}")
        result.update(pyxdf_s=round(t_py, 3), pyxdf_mb_s=round(mb / t_py, 1),
                      identical=same, speedup_read_xdf=round(t_py / t_read, 1),
                      speedup_load_session=round(t_py / t_sess, 1))
    if args.keep:
        print(f"kept {path}")
    else:
        path.unlink(missing_ok=True)
        tmp.cleanup()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
