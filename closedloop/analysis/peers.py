"""Offline onset detectors of other public tools, run as reference rows in evaluations.

These are **not** closedloop detectors: they see the whole record at once (zero-phase
filters, whole-record statistics, look-ahead rules), so they cannot run live, and their
onsets are marks on the signal, not decisions taken at a sample. ``closedloop evaluate``
runs them on the same trials as the causal detectors so the table shows where the offline
state of the art puts an onset. Each takes one channel and the rest segment the caller
knows (``rest``: a ``(start, stop)`` sample range, the quiet lead-in of a trial) and
returns onset samples.

``bmc``
    The recipe of M. Duarte's "Notes on Scientific Computing for Biomechanics and Motor
    Control" (GitHub demotu/BMC, notebook ``Electromyography``): linear envelope
    (2nd-order Butterworth band-pass 20-400 Hz, zero phase; full-wave rectification;
    2nd-order Butterworth low-pass 20 Hz, zero phase), then ``detect_onset`` with the
    threshold ``2 x SD`` of the raw rest, at least 50 ms above and gaps of up to 10 ms
    ignored. Reimplemented here (same rules); on ``bmc_emg.csv`` it gives the notebook's
    printed onsets exactly (a test checks it).
``neurokit2``
    ``neurokit2.emg_process`` with its defaults (NeuroKit2's own rest estimate).
``hodges_bui``
    BioSPPy ``emg.hodges_bui_onset_detector`` (Hodges & Bui 1996) on the signal
    high-passed as BioSPPy's ``emg.emg`` does (4th-order Butterworth, 100 Hz, zero
    phase), with a 25 ms moving average and a threshold of 3 rest SDs. BioSPPy returns
    the threshold crossings in both directions; the onsets are taken as the upward
    crossings of its test function (``processed``), shifted by half the window as
    BioSPPy does.
``bonato``
    BioSPPy ``emg.bonato_onset_detector`` (Bonato, D'Alessio & Knaflitz 1998) on the same
    high-passed signal: first threshold ``-2 ln(0.05)`` on the test function (a rest
    sample pair exceeds it with probability 0.05), an active state of 30 ms (the paper's
    minimum phase), ``samples_above_fail = 1``, ``fail_size = 5``. BioSPPy returns onsets
    and offsets merged; they alternate, onsets first.

The parameters are the methods' usual ones, not tuned on the benchmark. BioSPPy and
NeuroKit2 are optional (``pip install closedloop[bench]``); a missing one is reported
by name with what to install.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
from scipy import signal

from closedloop.errors import InputError

#: Names of the peers, in table order.
PEER_NAMES = ("bmc", "neurokit2", "hodges_bui", "bonato")


def detect_onset(x: np.ndarray, threshold: float, n_above: int, n_below: int) -> np.ndarray:
    """Runs of ``x >= threshold`` as ``(start, stop)`` rows (BMC's ``detect_onset`` rules):
    gaps of at most ``n_below`` samples are bridged, runs shorter than ``n_above`` dropped."""
    inds = np.flatnonzero(x >= threshold)
    if not inds.size:
        return np.empty((0, 2), dtype=np.int64)
    starts = inds[np.diff(np.concatenate(([-np.inf], inds))) > n_below + 1]
    stops = inds[np.diff(np.concatenate((inds, [np.inf]))) > n_below + 1]
    runs = np.column_stack((starts, stops))
    return runs[runs[:, 1] - runs[:, 0] >= n_above - 1]


def bmc(x: np.ndarray, fs: float, rest: tuple[int, int]) -> list[int]:
    """BMC notebook recipe (module docstring)."""
    nyq = fs / 2.0
    b, a = signal.butter(2, [20.0 / nyq, min(400.0, 0.9 * nyq) / nyq], btype="bandpass")
    env = np.abs(signal.filtfilt(b, a, x))
    b, a = signal.butter(2, 20.0 / nyq, btype="low")
    env = signal.filtfilt(b, a, env)
    thr = 2.0 * float(np.std(x[rest[0] : rest[1]]))
    runs = detect_onset(env, thr, int(round(0.05 * fs)), int(round(0.01 * fs)))
    return [int(s) for s in runs[:, 0]]


def _import(name: str):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if name == "neurokit2":
                import neurokit2 as mod
            else:
                from biosppy.signals import emg as mod
    except ImportError as exc:
        pkg = "neurokit2" if name == "neurokit2" else "biosppy"
        raise InputError(
            f"peer {name!r} needs the {pkg} package ({exc}); install the benchmark extra: "
            "pip install 'closedloop[bench]'"
        ) from None
    return mod


def neurokit2(x: np.ndarray, fs: float, rest: tuple[int, int]) -> list[int]:
    """NeuroKit2 ``emg_process`` defaults (module docstring); ``rest`` is not used."""
    nk = _import("neurokit2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sig, _ = nk.emg_process(np.asarray(x, dtype=np.float64), sampling_rate=int(round(fs)))
    return [int(i) for i in np.flatnonzero(sig["EMG_Onsets"].to_numpy())]


def _highpass(x: np.ndarray, fs: float) -> np.ndarray:
    sos = signal.butter(4, 100.0, btype="highpass", fs=fs, output="sos")
    return signal.sosfiltfilt(sos, x)


def hodges_bui(x: np.ndarray, fs: float, rest: tuple[int, int]) -> list[int]:
    """BioSPPy's Hodges-Bui detector (module docstring)."""
    emg = _import("hodges_bui")
    size = int(round(0.025 * fs))
    thr = 3.0
    out = emg.hodges_bui_onset_detector(
        signal=_highpass(x, fs), rest=list(rest), sampling_rate=fs, size=size, threshold=thr)
    tf = np.asarray(out["processed"])
    up = np.flatnonzero((tf[1:] >= thr) & (tf[:-1] < thr)) + 1
    if tf.size and tf[0] >= thr:
        up = np.concatenate(([0], up))
    return [int(i) + size // 2 for i in up]


def bonato(x: np.ndarray, fs: float, rest: tuple[int, int]) -> list[int]:
    """BioSPPy's Bonato detector (module docstring)."""
    emg = _import("bonato")
    out = emg.bonato_onset_detector(
        signal=_highpass(x, fs), rest=list(rest), sampling_rate=fs,
        threshold=-2.0 * math.log(0.05), active_state_duration=int(round(0.03 * fs / 2)),
        samples_above_fail=1, fail_size=5)
    marks = np.asarray(out["onsets"], dtype=np.int64)
    return [int(i) for i in marks[::2]]


PEERS: dict[str, Callable[[np.ndarray, float, tuple[int, int]], list[int]]] = {
    "bmc": bmc,
    "neurokit2": neurokit2,
    "hodges_bui": hodges_bui,
    "bonato": bonato,
}


def run_peer(name: str, x: np.ndarray, fs: float, rest: tuple[int, int]) -> list[int]:
    """Onset samples of peer ``name`` on one channel ``x`` (module docstring)."""
    try:
        fn = PEERS[name]
    except KeyError:
        raise InputError(f"unknown peer {name!r}; choose one of {', '.join(PEER_NAMES)}") from None
    with warnings.catch_warnings():  # the peers' own deprecation warnings are not ours
        warnings.simplefilter("ignore")
        return fn(np.asarray(x, dtype=np.float64), float(fs), (int(rest[0]), int(rest[1])))


def consensus(
    marks: dict[str, list[int]], fs: float, *, tol_s: float = 0.1, quorum: int = 3
) -> list[int]:
    """Onsets that at least ``quorum`` peers mark within ``tol_s`` of each other.

    Every mark starts a cluster of the marks (one per peer, the nearest) within
    ``tol_s`` after it; a cluster with ``quorum`` peers gives its median as a consensus
    onset, and its marks are used up. Returns sorted onset samples.
    """
    tol = int(round(tol_s * fs))
    items = sorted((s, p) for p, ss in marks.items() for s in ss)
    used: set[tuple[int, str]] = set()
    out = []
    for s0, p0 in items:
        if (s0, p0) in used:
            continue
        cluster: dict[str, int] = {}
        for s, p in items:
            if s0 <= s <= s0 + tol and (s, p) not in used and p not in cluster:
                cluster[p] = s
        if len(cluster) >= quorum:
            out.append(int(np.median(list(cluster.values()))))
            used.update((s, p) for p, s in cluster.items())
    return sorted(out)
