"""What cusum's false detections on the rest material are: a figure and a table.

Runs the ``cusum`` detector (built-in settings) over every stretch of pure rest of the
spliced benchmark (:func:`closedloop.analysis.splice.rest_recordings`) and over the
rest-only recording ``biosppy_emg.txt`` as ``closedloop evaluate`` scores it (35-60 s
excluded), and for each onset prints and plots the signal around it: the offline
band-passed EMG (20-450 Hz, zero phase), its 25 ms RMS over the stretch's median 100 ms
RMS, the detector's statistic over its threshold, and the share of the band-passed power
at 55-150 Hz (where voluntary EMG has most of its power) in the 300 ms before the onset
against the whole stretch's. Nothing is relabelled: this only shows what is there.

Usage (from the repository root, next to ``../shared/data``)::

    python tools/rest_false_detections.py [--data ../shared/data] [--out rest_false.png]
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from scipy import signal

from closedloop.analysis import splice
from closedloop.core.pipeline import make_detector

FS = 1000.0


def _run(x: np.ndarray) -> tuple[list[int], np.ndarray, float]:
    det = make_detector("cusum", FS, ["emg"])
    onsets, stat = [], []
    for i in range(0, x.size, 1000):
        block = det.pipeline.process(x[i : i + 1000, None])
        onsets += [e.sample for e in block.events if e.kind == "onset"]
        stat.append(block.envelope[:, 0])
    return onsets, np.concatenate(stat), float(det.detector.settings.h_nats)


def _emg_share(bp: np.ndarray) -> float:
    f, p = signal.periodogram(bp * np.hanning(bp.size), fs=FS, nfft=1000)
    band = (f >= 20) & (f < 450)
    return float(p[(f >= 55) & (f < 150)].sum() / p[band].sum())


def main() -> None:
    """Print the table and write the figure."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--out", default="rest_false.png")
    a = ap.parse_args()
    sos = signal.butter(4, [20.0, 450.0], btype="bandpass", fs=FS, output="sos")
    material = [(t.name, t.samples.astype(float), ()) for t in splice.rest_recordings(a.data)]
    whole = splice._column(a.data, "biosppy_emg.txt", 0).astype(float)
    material.append(("rest-only recording biosppy_emg.txt", whole, ((35000, 60000),)))
    found = []
    for name, x, exclude in material:
        onsets, stat, h = _run(x)
        bp = signal.sosfiltfilt(sos, x)
        rms100 = np.sqrt(np.convolve(bp**2, np.ones(100) / 100, mode="same"))
        med = float(np.median(rms100))
        for s in onsets:
            if any(lo <= s < hi for lo, hi in exclude) or s < 300:
                continue
            found.append((name, s, x, bp, stat, h, med))
            peak = float(rms100[max(0, s - 300) : s + 100].max() / med)
            print(f"{name:45s} onset at {s / FS:8.3f} s: peak 100 ms RMS {peak:.2f} x median; "
                  f"55-150 Hz share {_emg_share(bp[s - 300 : s]):.2f} (stretch "
                  f"{_emg_share(bp[: min(bp.size, 20000)]):.2f})")
    fig, axes = plt.subplots(len(found), 2, figsize=(14, 2.2 * len(found)), squeeze=False)
    for (name, s, _x, bp, stat, h, med), (left, right) in zip(found, axes, strict=True):
        lo, hi = max(0, s - 1500), min(bp.size, s + 700)
        t = np.arange(lo, hi) / FS
        left.plot(t, bp[lo:hi], lw=0.4)
        left.axvline(s / FS, color="r")
        left.set_title(f"{name}: onset at {s / FS:.3f} s (band-passed)", fontsize=8)
        rms = np.sqrt(np.convolve(bp**2, np.ones(25) / 25, mode="same"))
        right.plot(t, rms[lo:hi] / med, lw=0.6, label="25 ms RMS / median")
        right.plot(t, stat[lo:hi] / h, lw=0.8, label="cusum statistic / h")
        right.axvline(s / FS, color="r")
        right.set_ylim(0, 3)
        right.legend(fontsize=7, loc="upper left")
    axes[-1, 0].set_xlabel("s")
    axes[-1, 1].set_xlabel("s")
    fig.tight_layout()
    fig.savefig(a.out, dpi=60)
    print(f"figure: {a.out}")


if __name__ == "__main__":
    main()
