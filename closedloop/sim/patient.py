"""The simulated patient: multichannel surface EMG with scripted voluntary attempts.

What it models, per channel (one muscle per channel):

* **voluntary EMG**: an interference pattern, Gaussian noise shaped to the surface-EMG
  band (a 2nd-order 20-150 Hz band-pass, most power around 50-150 Hz) and scaled by an
  activation profile: a linear ramp from 0 to the attempt's level over ``ramp_s``
  (20-60 ms by default: motor units being recruited in an intended movement),
  a plateau, and a ramp down;
* optional **co-contraction**: during an agonist attempt the antagonist activates at
  ``cocontraction`` x the agonist's level (a common problem after stroke);
* **noise**: white amplifier/electrode noise, **mains hum** (fundamental + 2 harmonics)
  and a slow **baseline drift** with a DC offset;
* **stimulation** (optional): for each pulse of a simulated stimulator, a large
  biphasic artifact followed by an M-wave on the stimulated muscle's channel and a
  smaller cross-talk artifact on the other channels.

Signal-to-noise ratio: ``snr_db = 10 log10(P_emg / P_noise)`` where ``P_emg`` is the
power of the voluntary EMG at full activation (level 1) and ``P_noise`` the power of the
white noise, both over the full band (hum and drift excluded: the band-pass removes
them). Ground truth: each attempt's onset is the sample where its ramp starts.

Deterministic from a seed, whatever the read sizes: samples are generated in fixed
internal blocks, in order, each from its own seeded generator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import signal

#: Internal generation block (samples). Reads of any size are served from these.
GEN_BLOCK = 1024


@dataclass(frozen=True)
class Attempt:
    """One scripted voluntary attempt.

    Parameters
    ----------
    muscle : str
        The agonist.
    onset_s : float
        When the activation ramp starts (ground-truth onset), seconds from the start.
    duration_s : float
        From onset to the end of the ramp down.
    level : float
        Plateau activation, 0..1 (1 = the level ``snr_db`` refers to).
    ramp_s : float
        Ramp-up (and ramp-down) time.
    """

    muscle: str
    onset_s: float
    duration_s: float = 2.0
    level: float = 1.0
    ramp_s: float = 0.1


@dataclass(frozen=True)
class Pulse:
    """One stimulation pulse, as the simulated patient receives it."""

    time: float
    muscle: str
    current_ma: float
    pulse_width_us: float


@dataclass
class PatientSettings:
    """How the simulated patient looks (see the module docstring)."""

    fs: float = 2000.0
    muscles: tuple[str, ...] = ("biceps", "triceps")
    antagonists: dict[str, str] = field(default_factory=dict)
    snr_db: float = 10.0
    noise_rms: float = 5e-6  # volts
    hum_rms: float = 10e-6
    mains_hz: float = 50.0
    drift_amplitude: float = 50e-6
    dc_offset: float = 0.0
    cocontraction: float = 0.0
    artifact_amplitude: float = 2e-3  # volts per 10 mA at the stimulated channel
    mwave_amplitude: float = 0.5e-3  # volts per 10 mA
    crosstalk: float = 0.1


def random_script(
    muscles: Sequence[str],
    duration_s: float,
    rng: np.random.Generator,
    *,
    first_s: float = 2.0,
    gap_s: tuple[float, float] = (4.0, 8.0),
    attempt_s: tuple[float, float] = (1.0, 3.0),
    level: tuple[float, float] = (1.0, 1.0),
    ramp_s: tuple[float, float] = (0.02, 0.06),
) -> list[Attempt]:
    """Attempts alternating over ``muscles`` with random gaps, durations and levels."""
    out: list[Attempt] = []
    t = first_s
    i = 0
    while True:
        dur = float(rng.uniform(*attempt_s))
        if t + dur > duration_s - 0.5:
            break
        out.append(
            Attempt(
                muscles[i % len(muscles)],
                round(t, 4),
                dur,
                float(rng.uniform(*level)),
                float(rng.uniform(*ramp_s)),
            )
        )
        i += 1
        t += dur + float(rng.uniform(*gap_s))
    return out


def _activation(t: np.ndarray, a: Attempt) -> np.ndarray:
    """Linear ramp up (motor-unit recruitment), plateau, linear ramp down; zero outside."""
    rel = t - a.onset_s
    ramp = max(a.ramp_s, 1e-6)
    up = np.clip(rel / ramp, 0.0, 1.0)
    down = np.clip((a.duration_s - rel) / ramp, 0.0, 1.0)
    out = np.minimum(up, down)
    out[(rel < 0) | (rel >= a.duration_s)] = 0.0
    return out * a.level


class SimulatedPatient:
    """Streams simulated EMG (n, n_muscles) with ground truth; see the module docstring.

    Parameters
    ----------
    settings : PatientSettings
    script : sequence of Attempt
    seed : int
    pulses : callable, optional
        ``pulses(t_start, t_end) -> list[Pulse]``: stimulation pulses in the half-open
        stream-time range, e.g. from a simulated stimulator. Their artifacts and M-waves
        are added to the EMG.
    """

    def __init__(
        self,
        settings: PatientSettings,
        script: Sequence[Attempt] = (),
        seed: int = 0,
        pulses: Callable[[float, float], Sequence[Pulse]] | None = None,
    ) -> None:
        self.settings = settings
        self.fs = float(settings.fs)
        self.muscles = tuple(settings.muscles)
        self.script = sorted(script, key=lambda a: a.onset_s)
        self._onsets = np.array([a.onset_s for a in self.script])
        self._max_dur = max((a.duration_s for a in self.script), default=0.0)
        for a in self.script:
            if a.muscle not in self.muscles:
                raise ValueError(f"attempt muscle {a.muscle!r} is not one of {self.muscles}")
        self.seed = int(seed)
        self.pulses = pulses
        n = len(self.muscles)
        nyq = self.fs / 2
        self._shape_sos = signal.butter(
            2, [20.0, min(150.0, 0.8 * nyq)], btype="bandpass", fs=self.fs, output="sos"
        )
        # scale the shaped noise to unit RMS (power gain of the shaping filter)
        imp = signal.sosfilt(self._shape_sos, np.r_[1.0, np.zeros(int(self.fs))])
        self._shape_gain = 1.0 / np.sqrt(np.sum(imp**2))
        self._zi = np.zeros((self._shape_sos.shape[0], 2, n))
        emg_rms = settings.noise_rms * 10 ** (settings.snr_db / 20.0)
        self._emg_rms = emg_rms
        self._buffer = np.empty((0, n))
        self._generated = 0  # samples generated so far
        self._delivered = 0
        self._hum_phase = np.random.default_rng([self.seed, 7]).uniform(0, 2 * np.pi, size=n)
        self._drift_phase = np.random.default_rng([self.seed, 11]).uniform(0, 2 * np.pi, size=n)
        self._mwave = self._mwave_shape()

    # -- ground truth ------------------------------------------------------------------
    def true_onsets(self) -> list[tuple[int, str]]:
        """(sample, muscle) of every scripted attempt's onset."""
        return [(int(round(a.onset_s * self.fs)), a.muscle) for a in self.script]

    @property
    def position(self) -> int:
        """Index of the next sample :meth:`read` returns."""
        return self._delivered

    # -- generation --------------------------------------------------------------------
    def read(self, n: int) -> np.ndarray:
        """The next ``n`` samples, shape (n, n_muscles), in volts."""
        while self._buffer.shape[0] < n:
            self._buffer = np.concatenate([self._buffer, self._generate_block()])
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        start = self._delivered
        self._delivered += n
        if self.pulses is not None and n:
            out = out.copy()
            self._add_stimulation(out, start)
        return out

    def _generate_block(self) -> np.ndarray:
        s = self.settings
        n_ch = len(self.muscles)
        i0 = self._generated
        rng = np.random.default_rng([self.seed, i0 // GEN_BLOCK])
        t = (i0 + np.arange(GEN_BLOCK)) / self.fs
        raw = rng.standard_normal((GEN_BLOCK, n_ch))
        shaped, self._zi = signal.sosfilt(self._shape_sos, raw, axis=0, zi=self._zi)
        shaped *= self._shape_gain * self._emg_rms
        act = np.zeros((GEN_BLOCK, n_ch))
        lo = int(np.searchsorted(self._onsets, t[0] - self._max_dur))
        hi = int(np.searchsorted(self._onsets, t[-1], side="right"))
        for a in self.script[lo:hi]:
            if a.onset_s + a.duration_s < t[0]:
                continue
            prof = _activation(t, a)
            c = self.muscles.index(a.muscle)
            act[:, c] = np.maximum(act[:, c], prof)
            ant = s.antagonists.get(a.muscle)
            if s.cocontraction > 0 and ant in self.muscles:
                ca = self.muscles.index(ant)
                act[:, ca] = np.maximum(act[:, ca], s.cocontraction * prof)
        x = shaped * act
        x += rng.standard_normal((GEN_BLOCK, n_ch)) * s.noise_rms
        w = 2 * np.pi * s.mains_hz * t[:, None]
        hum = np.sin(w + self._hum_phase) + 0.3 * np.sin(3 * w + self._hum_phase) \
            + 0.1 * np.sin(5 * w + self._hum_phase)
        x += hum * (s.hum_rms * np.sqrt(2) / np.sqrt(1 + 0.09 + 0.01))
        x += s.drift_amplitude * np.sin(2 * np.pi * 0.2 * t[:, None] + self._drift_phase)
        x += s.dc_offset
        self._generated += GEN_BLOCK
        return x

    # -- stimulation -------------------------------------------------------------------
    def _mwave_shape(self) -> np.ndarray:
        """A biphasic M-wave, ~10 ms long, peak 1."""
        t = np.arange(int(0.012 * self.fs)) / self.fs
        w = np.sin(2 * np.pi * t / 0.010) * np.exp(-t / 0.004)
        return w / np.max(np.abs(w))

    def _add_stimulation(self, out: np.ndarray, start: int) -> None:
        s = self.settings
        t0 = start / self.fs
        t1 = (start + out.shape[0]) / self.fs
        # include pulses up to the M-wave length before the chunk (their tails)
        tail = len(self._mwave) / self.fs
        for p in self.pulses(t0 - tail, t1):
            if p.muscle not in self.muscles:
                continue
            c = self.muscles.index(p.muscle)
            k = int(round(p.time * self.fs)) - start
            scale = p.current_ma / 10.0
            # artifact: two samples of opposite sign (a biphasic pulse shorter than a
            # sample, smeared by the amplifier), on every channel with cross-talk
            for d, sign in ((0, 1.0), (1, -0.6)):
                if 0 <= k + d < out.shape[0]:
                    amp = sign * s.artifact_amplitude * scale
                    out[k + d, :] += amp * s.crosstalk
                    out[k + d, c] += amp * (1 - s.crosstalk)
            m0 = k + 2
            lo, hi = max(0, m0), min(out.shape[0], m0 + len(self._mwave))
            if hi > lo:
                out[lo:hi, c] += s.mwave_amplitude * scale * self._mwave[lo - m0 : hi - m0]
