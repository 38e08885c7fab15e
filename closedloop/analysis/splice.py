"""Spliced trials: real EMG bursts added to real rest at fixed SNRs, with known onsets.

The shared recordings (``../shared/data``, see its README) hold real bursts and real rest,
but few onsets anyone can vouch for and no control of the signal-to-noise ratio. This
module builds trials from them whose onsets are known and whose SNR is set:

* **Bursts** (:data:`BURSTS`): ten clear bursts from three recordings of two
  laboratories, each at the onset the offline peers agree on (:func:`closedloop.analysis.peers.
  consensus`: at least 3 of the 4 peers ``bmc``, ``neurokit2``, ``hodges_bui`` and
  ``bonato`` within 100 ms; the median of their marks), and ending where the BMC recipe's
  envelope run that holds the onset ends, capped at :data:`MAX_BURST_S`. No burst was
  labelled by hand. ``tests/analysis/test_splice.py`` recomputes the onsets from the peers when
  BioSPPy and NeuroKit2 are installed.
* **Rest** (:data:`REST`): five stretches of two recordings with no activity that any peer
  marks, chosen from the envelope: ``biosppy_emg.txt`` outside its documented weak
  activity, and the quiet parts of ``biosppy_emg_1.txt`` between its bursts, each
  at least 0.3 s away from any onset a peer marks and from weak activity found offline
  (see :data:`REST`).
* **A trial** (:func:`make_trials`): a :data:`TRIAL_S` window of one rest stretch (its
  start drawn from the seed) with two bursts added, the first onset 2.0-2.6 s and the
  second 4.8-5.6 s into the window, each burst drawn from the library with the seed.
  A burst is taken from 50 ms before its onset to its end, band-passed offline (zero
  phase, 20-450 Hz, which removes the source's offset and drift), faded in over those
  50 ms and out over the last 50 ms (raised cosine), and scaled so that its mean power
  from onset to end is ``snr_db`` above the mean power of the band-passed rest window;
  then it is added to the raw rest (which keeps its own offset, drift and
  quantisation). Bursts always come from another stretch than the rest they are added
  to. Every random choice comes from ``numpy.random.default_rng([seed, ...])``.
* **Pure rest** (:func:`rest_recordings`): each rest stretch alone, whole, for false
  detections per minute of rest.

Every recording is at 1000 Hz, so nothing is resampled. The SNRs say how strong a burst
is on average; real onsets ramp up, so its first tens of milliseconds are much weaker.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import signal

from closedloop.errors import InputError

FS = 1000.0
#: Trial length, s.
TRIAL_S = 7.0
#: Longest part of a burst used, s (a long contraction is cut, with a fade-out).
MAX_BURST_S = 1.2
#: Taken before the onset (faded in) and faded out at the end, s.
FADE_S = 0.05
#: Burst onsets within a trial: first in [2.0, 2.6) s, second in [4.2, 4.8) s (a burst
#: lasts at most MAX_BURST_S, so their spans never overlap and end inside the trial).
ONSET_WINDOWS_S = ((2.0, 2.6), (4.2, 4.8))


@dataclass(frozen=True)
class Burst:
    """A real burst: file, column, onset and end samples, and how the onset was found."""

    file: str
    column: int
    onset: int
    end: int
    how: str = "peers' consensus (3 of 4 within 100 ms, median)"


@dataclass(frozen=True)
class RestStretch:
    """A stretch of real rest: file, column, ``[start, stop)`` samples."""

    file: str
    column: int
    start: int
    stop: int


#: Onsets the offline peers agree on (:func:`closedloop.analysis.peers.consensus` of ``bmc``,
#: ``neurokit2``, ``hodges_bui`` and ``bonato``, rest = the first 200 ms of
#: ``bmc_emg.csv`` and the first second otherwise), per file and column.
CONSENSUS: dict[tuple[str, int], tuple[int, ...]] = {
    ("bmc_emg.csv", 1): (395, 1384, 2405),
    ("biosppy_emg_1.txt", 0): (1486, 15547, 25660, 26423),
    ("uci_lowerlimb_5Nsen.txt", 2): (1213, 4470, 5242, 7370, 8178),
}

#: The burst library (module docstring). Ends: the BMC recipe's envelope run. Of the
#: vastus medialis consensus onsets, those at 5.24 s and 8.18 s follow another burst
#: within 0.8 s and are left out.
BURSTS: tuple[Burst, ...] = (
    Burst("bmc_emg.csv", 1, 395, 859),
    Burst("bmc_emg.csv", 1, 1384, 1879),
    Burst("bmc_emg.csv", 1, 2405, 2918),
    Burst("biosppy_emg_1.txt", 0, 1486, 1809),
    Burst("biosppy_emg_1.txt", 0, 15547, 16902),
    Burst("biosppy_emg_1.txt", 0, 25660, 25827),
    Burst("biosppy_emg_1.txt", 0, 26423, 26610),
    Burst("uci_lowerlimb_5Nsen.txt", 2, 1213, 2106),  # vastus medialis
    Burst("uci_lowerlimb_5Nsen.txt", 2, 4470, 5082),
    Burst("uci_lowerlimb_5Nsen.txt", 2, 7370, 7986),
)

#: The rest library (module docstring): every stretch at least 0.3 s away from any onset a
#: peer marks on the whole file and from any weak activity (the offline 100 ms RMS above
#: 1.75 x the stretch's median, i.e. about 5 dB, for any time): biosppy_emg.txt at
#: 12.29-12.39 s and 95.74-95.89 s (also marked by BioSPPy), 66.98 s (marked by BioSPPy's
#: default detector); biosppy_emg_1.txt at 9.60-9.70 s.
REST: tuple[RestStretch, ...] = (
    RestStretch("biosppy_emg.txt", 0, 0, 12000),
    RestStretch("biosppy_emg.txt", 0, 12700, 35000),
    RestStretch("biosppy_emg.txt", 0, 60000, 66600),
    RestStretch("biosppy_emg.txt", 0, 67400, 95400),
    RestStretch("biosppy_emg.txt", 0, 96300, 100000),
    RestStretch("biosppy_emg_1.txt", 0, 2200, 9300),
    RestStretch("biosppy_emg_1.txt", 0, 10000, 15000),
    RestStretch("biosppy_emg_1.txt", 0, 27200, 34200),
    RestStretch("biosppy_emg_1.txt", 0, 45500, 63800),
)

#: Seeds used while developing and tuning detectors; report on others (see the README).
DEV_SEEDS = (0, 1, 2, 3, 4)
#: Seeds the reported figures use, never used for tuning.
REPORT_SEEDS = tuple(range(100, 110))


@dataclass(frozen=True)
class Trial:
    """One spliced trial.

    Attributes
    ----------
    name : str
    samples : ndarray, shape (n,)
        Raw rest plus the scaled bursts.
    onsets, ends : tuple of int
        Each burst's onset and end sample in the trial.
    snr_db : float or None
        None for pure rest.
    seed : int or None
    rest : str
        Which rest stretch (file and range).
    bursts : tuple of str
        Which bursts (file and onset).
    """

    name: str
    samples: np.ndarray
    onsets: tuple[int, ...]
    ends: tuple[int, ...]
    snr_db: float | None
    seed: int | None
    rest: str
    bursts: tuple[str, ...] = ()

    @property
    def n(self) -> int:
        """Samples in the trial."""
        return int(self.samples.shape[0])


@functools.lru_cache(maxsize=8)
def _column(data_dir: str, file: str, column: int) -> np.ndarray:
    p = Path(data_dir) / file
    if not p.is_file():
        raise InputError(
            f"{p}: missing; --splice needs the shared recordings described in "
            f"{Path(data_dir) / 'README.md'}"
        )
    if file.endswith(".csv"):
        x = np.loadtxt(p, delimiter=",")
    elif file.startswith("uci_lowerlimb_"):
        x = np.loadtxt(p, skiprows=7)
    else:
        x = np.loadtxt(p, comments="#")
    x = x.reshape(x.shape[0], -1)
    out = np.ascontiguousarray(x[:, column], dtype=np.float64)
    out.flags.writeable = False
    return out


def _bandpass(x: np.ndarray) -> np.ndarray:
    sos = signal.butter(4, [20.0, 450.0], btype="bandpass", fs=FS, output="sos")
    return signal.sosfiltfilt(sos, x)


@functools.lru_cache(maxsize=32)
def _burst_shape(data_dir: str, burst: Burst) -> tuple[np.ndarray, float]:
    """The burst from FADE_S before its onset to its (capped) end, band-passed and faded;
    and its mean power from onset to end."""
    x = _column(data_dir, burst.file, burst.column)
    pre = int(round(FADE_S * FS))
    end = min(burst.end, burst.onset + int(round(MAX_BURST_S * FS)))
    a, b = max(0, burst.onset - 1000), min(x.shape[0], end + 1000)
    bp = _bandpass(x[a:b])[burst.onset - pre - a : end - a]
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(pre) / pre)
    bp = bp.copy()
    bp[:pre] *= ramp
    bp[-pre:] *= ramp[::-1]
    power = float(np.mean(bp[pre:] ** 2))
    return bp, power


def rest_recordings(data_dir: str | Path) -> list[Trial]:
    """Every rest stretch alone, whole (pure rest)."""
    out = []
    for r in REST:
        x = _column(str(data_dir), r.file, r.column)[r.start : r.stop]
        out.append(Trial(f"rest {r.file}[{r.start}:{r.stop}]", np.array(x), (), (), None,
                         None, f"{r.file}[{r.start}:{r.stop}]"))
    return out


def make_trials(data_dir: str | Path, snr_db: float, seed: int) -> list[Trial]:
    """The spliced trials of one SNR and seed (module docstring).

    The same seed gives the same rest windows, bursts and onset times at every SNR, so
    SNR is the only difference between the rows of one seed.
    """
    d = str(data_dir)
    n_trial = int(round(TRIAL_S * FS))
    pre = int(round(FADE_S * FS))
    out = []
    for i, r in enumerate(REST):
        rng = np.random.default_rng([int(seed), i])
        length = r.stop - r.start
        k = length // n_trial
        if k == 0:
            continue
        shift = int(rng.integers(0, length - k * n_trial + 1))
        x_all = _column(d, r.file, r.column)
        candidates = [b for b in BURSTS if b.file != r.file]
        for j in range(k):
            a = r.start + shift + j * n_trial
            x = np.array(x_all[a : a + n_trial])
            p_rest = float(np.mean(_bandpass(x) ** 2))
            onsets, ends, names = [], [], []
            for lo, hi in ONSET_WINDOWS_S:
                onset = int(rng.integers(int(lo * FS), int(hi * FS)))
                burst = candidates[int(rng.integers(0, len(candidates)))]
                shape, p_burst = _burst_shape(d, burst)
                gain = np.sqrt(10.0 ** (snr_db / 10.0) * p_rest / p_burst)
                s = onset - pre
                x[s : s + shape.size] += gain * shape
                onsets.append(onset)
                ends.append(s + shape.size)
                names.append(f"{burst.file}@{burst.onset}")
            out.append(Trial(
                f"splice {snr_db:g}dB s{seed} {r.file}[{a}:{a + n_trial}]", x, tuple(onsets),
                tuple(ends), float(snr_db), int(seed), f"{r.file}[{a}:{a + n_trial}]",
                tuple(names)))
    return out
