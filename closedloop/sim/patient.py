"""The simulated patient: multichannel surface EMG with scripted voluntary attempts.

What it models, per channel (one muscle per channel):

* **voluntary EMG**: an interference pattern, Gaussian noise shaped to the surface-EMG
  band (a 2nd-order 20-150 Hz band-pass, most power around 50-150 Hz) and scaled by an
  activation profile (the **voluntary drive**, 0..1): a linear ramp from 0 to the
  attempt's level over ``ramp_s`` (20-60 ms by default: motor units being recruited in
  an intended movement), a plateau, and a ramp down;
* optional **co-contraction**: during an agonist attempt the antagonist activates at
  ``cocontraction`` x the agonist's level (a common problem after stroke);
* **noise**: white amplifier/electrode noise, **mains hum** (fundamental + 2 harmonics)
  and a slow **baseline drift** with a DC offset;
* **stimulation** (optional): for each pulse of a simulated stimulator, a large
  biphasic artifact on the stimulated muscle's channel and a smaller cross-talk artifact
  on the other channels, and the muscle's evoked response (**M-wave**). Voluntary EMG
  goes on during stimulation (so effort can be measured between pulses) unless the
  patient is set to stop (below).

The M-wave has two models. Without :attr:`PatientSettings.mwave` (the default, which
every shipped config and recording uses) it is the original fixed 10 ms biphasic wave,
2 samples after the pulse, linear in the current (``mwave_amplitude`` per 10 mA). With
an :class:`MWaveModel` it is a physiological one: a sigmoid recruitment curve of the
pulse's charge (motor threshold, slope, maximum peak-to-peak), a smooth biphasic wave
at a set latency and duration, sub-sample aligned to the pulse, a fraction of it on the
antagonist's channel (volume-conducted cross-talk) and, with a :class:`FatigueModel`,
an amplitude that declines with accumulated stimulation and recovers at rest.

What the patient does (:class:`PatientSettings`): ``passive`` stops the voluntary drive
of a muscle while it is stimulated (the patient lets the stimulator do the work);
``quit_after_s`` stops it that long after a stimulation train starts, until the end of
the attempt (a patient who stops trying in the middle of a repetition); ``detached``
takes a muscle's stimulation electrode off (``"artifact"``: the artifact stays, no
M-wave; ``"nothing"``: no artifact either). The drive falls (and comes back) linearly
over ``relax_s``.

Signal-to-noise ratio: ``snr_db = 10 log10(P_emg / P_noise)`` where ``P_emg`` is the
power of the voluntary EMG at full activation (level 1) and ``P_noise`` the power of the
white noise, both over the full band (hum and drift excluded: the band-pass removes
them). Ground truth: each attempt's onset is the sample where its ramp starts;
:meth:`SimulatedPatient.read_truth` also returns the voluntary drive at every sample and
every pulse's true M-wave (:class:`Truth`).

Deterministic from a seed, whatever the read sizes: samples are generated in fixed
internal blocks, in order, each from its own seeded generator; the response to pulses
is a function of the pulse times alone (each pulse is taken into the muscle's state
once, in time order), so the same pulses give the same samples in reads of any size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import signal

#: Internal generation block (samples). Reads of any size are served from these.
GEN_BLOCK = 1024
#: What a detached stimulation electrode leaves on the EMG (see PatientSettings.detached).
DETACHED = ("artifact", "nothing")
#: A recruitment of this fraction of the maximum defines the motor threshold.
_THRESHOLD_FRACTION = 0.05


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


@dataclass(frozen=True)
class MWaveModel:
    """The evoked response (M-wave) of a stimulated muscle.

    **Recruitment**: the fraction of the muscle's motor units a pulse excites is a
    logistic (sigmoid) function of its charge, expressed as the current it would take
    at ``reference_width_us``: ``q = current x pulse_width / reference_width``,
    ``r(q) = 1 / (1 + exp(-(q - q50) / slope_ma))``, with ``q50`` placed so that
    ``r(threshold_ma) = 5 %`` (the motor threshold a clinician finds as the first
    visible twitch). The sigmoid is the usual description of surface-FES recruitment
    curves (e.g. Durfee & MacLean 1989, J Biomech Eng 111:44-54; Levy, Mizrahi & Susak
    1990, J Biomed Eng 12:150-156): nothing below threshold, a steep middle where a few
    mA make a large difference, saturation at Mmax.

    **Shape**: a smooth biphasic wave (first phase negative), ``-sin^2(pi u) sin(2 pi u)``
    for ``u = (t - latency) / duration`` in [0, 1], scaled to peak-to-peak
    ``max_pp x r x fitness`` and placed at the pulse's exact (sub-sample) time. Surface
    M-waves of arm and leg muscles start 3-8 ms after the stimulus and last 10-20 ms
    (Rodriguez-Falces & Place 2018, Eur J Appl Physiol 118:501-521); a large muscle's
    maximal surface M-wave is several mV peak-to-peak (2-15 mV). The default (3.5 ms,
    11 ms: the wave is over 14.5 ms after the pulse) is a muscle recorded close to its
    motor point, inside the default 15 ms blanking; a longer wave is a setting away
    (and then ``blank_ms`` must grow with it).

    Parameters
    ----------
    max_pp : float
        Peak-to-peak amplitude at full recruitment, unfatigued (volts).
    threshold_ma : float
        Motor threshold at ``reference_width_us``: the current recruiting 5 %.
    slope_ma : float
        Logistic scale: from 5 % to 95 % takes ``2 ln 19 x slope_ma`` (about 5.9 x).
    reference_width_us : float
        Pulse width at which ``threshold_ma`` and ``slope_ma`` hold.
    latency_ms : float
        Stimulus to M-wave onset.
    duration_ms : float
        Onset to end of the wave.
    crosstalk : float
        Fraction of the M-wave seen on the antagonist's channel (volume conduction).
    """

    max_pp: float = 4e-3
    threshold_ma: float = 10.0
    slope_ma: float = 3.0
    reference_width_us: float = 250.0
    latency_ms: float = 3.5
    duration_ms: float = 11.0
    crosstalk: float = 0.0

    def recruitment(self, current_ma: float, pulse_width_us: float) -> float:
        """Fraction of the motor units a pulse excites, 0..1 (0 for no charge)."""
        q = current_ma * pulse_width_us / self.reference_width_us
        if not q > 0:
            return 0.0
        q50 = self.threshold_ma + self.slope_ma * math.log(1 / _THRESHOLD_FRACTION - 1)
        return 1.0 / (1.0 + math.exp(-(q - q50) / self.slope_ma))

    def shape(self, t: np.ndarray) -> np.ndarray:
        """The wave at ``t`` seconds after the pulse, unit peak-to-peak (0 outside)."""
        u = (np.asarray(t, dtype=float) - self.latency_ms / 1000.0) / (self.duration_ms / 1000.0)
        inside = (u >= 0) & (u <= 1)
        w = np.where(inside, -np.sin(np.pi * u) ** 2 * np.sin(2 * np.pi * u), 0.0)
        return w / _SHAPE_PP

    @property
    def end_s(self) -> float:
        """Where the wave ends, seconds after the pulse."""
        return (self.latency_ms + self.duration_ms) / 1000.0


#: Peak-to-peak of ``sin^2(pi u) sin(2 pi u)`` on [0, 1] (its extremes at u = 1/3, 2/3).
_SHAPE_PP = 2 * math.sin(math.pi / 3) ** 2 * math.sin(2 * math.pi / 3)


@dataclass(frozen=True)
class FatigueModel:
    """M-wave fatigue: decline with stimulation, recovery at rest.

    The muscle's fitness ``mu`` (1 fresh, ``floor`` fully fatigued) follows Riener &
    Veltink's fatigue model of electrically stimulated muscle (Riener & Veltink 1998,
    IEEE Trans Biomed Eng 45:105-113; also Riener, Quintern & Schmidt 1996, J Biomech
    29:1157-1167)::

        d mu / dt = (floor - mu) a / fatigue_s + (1 - mu) (1 - a) / recovery_s

    with the activation ``a`` the recruited fraction while a train runs and 0 at rest;
    the M-wave's amplitude is scaled by ``mu``. Their time constants for stimulated
    muscle, ``T_fat = 30 s`` and ``T_rec = 50 s``, are the defaults (the values
    pyomeca's cocofest ships for the model). They describe force; the M-wave declines
    less and later than force under FES (Mizrahi et al. 1997, J Electromyogr Kinesiol
    7:51-65; Chesler & Durfee 1997, J Electromyogr Kinesiol 7:27-37), hence the higher
    floor here (0.5 against 0.2 for force), a modelling choice; in some protocols the
    M-wave even grows (Rodriguez-Falces & Place 2018), which this model does not do.
    Between pulses ``mu`` is integrated exactly (piecewise constant ``a``).
    """

    floor: float = 0.5
    fatigue_s: float = 30.0
    recovery_s: float = 50.0

    def evolve(self, mu: float, a: float, dt: float) -> float:
        """``mu`` after ``dt`` seconds at activation ``a`` (exact solution)."""
        if not dt > 0:
            return mu
        k = a / self.fatigue_s + (1.0 - a) / self.recovery_s
        target = (self.floor * a / self.fatigue_s + (1.0 - a) / self.recovery_s) / k
        return target + (mu - target) * math.exp(-k * dt)


@dataclass
class PatientSettings:
    """How the simulated patient looks and behaves (see the module docstring).

    The defaults are the original patient: every new effect below is off.

    Attributes
    ----------
    mwave : MWaveModel or None
        The physiological M-wave; None keeps the original fixed one
        (``mwave_amplitude`` per 10 mA).
    fatigue : FatigueModel or None
        M-wave fatigue (either M-wave model); None: no fatigue.
    passive : bool
        No voluntary drive on a muscle while it is stimulated.
    quit_after_s : float or None
        The patient stops trying this long after a stimulation train of the muscle
        starts, until the end of the attempt then running.
    relax_s : float
        The voluntary drive falls from 1 to 0 (and comes back) linearly in this long.
    train_gap_s : float
        Pulses of a muscle closer than this belong to one train (a muscle is
        "stimulated" until this long after its last pulse): 0.1 s fits 10 Hz and up.
    detached : dict of str to str
        Muscles whose stimulation electrode is off: ``"artifact"`` (the artifact stays,
        no M-wave) or ``"nothing"`` (neither).
    """

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
    mwave: MWaveModel | None = None
    fatigue: FatigueModel | None = None
    passive: bool = False
    quit_after_s: float | None = None
    relax_s: float = 0.05
    train_gap_s: float = 0.1
    detached: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EvokedTruth:
    """One pulse as the muscle took it: the true M-wave on its own channel.

    Attributes
    ----------
    time : float
        Pulse time, seconds from the start of the stream.
    muscle : str
    current_ma, pulse_width_us : float
    recruitment : float
        Fraction of the motor units excited (1 for the original M-wave model).
    fitness : float
        Fatigue state when the pulse came (1 fresh; 1 without a fatigue model).
    mwave_pp : float
        Peak-to-peak amplitude of this pulse's M-wave on the muscle's channel (volts;
        0 with a detached electrode).
    """

    time: float
    muscle: str
    current_ma: float
    pulse_width_us: float
    recruitment: float
    fitness: float
    mwave_pp: float


@dataclass(frozen=True)
class Truth:
    """Ground truth of one read.

    Attributes
    ----------
    start : int
        Index of the read's first sample.
    drive : ndarray, shape (n, n_muscles)
        Voluntary drive of each muscle at each sample, 0..1 (the activation that scales
        its voluntary EMG; 1 = the level ``snr_db`` refers to).
    onsets : tuple of (int, str)
        Scripted onsets (sample, muscle) inside the read.
    pulses : tuple of EvokedTruth
        Pulses delivered inside the read, in time order (each pulse in exactly one
        read; one on the boundary between two reads may come with either).
    """

    start: int
    drive: np.ndarray
    onsets: tuple[tuple[int, str], ...]
    pulses: tuple[EvokedTruth, ...]


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


@dataclass
class _MuscleState:
    """What one muscle remembers of the pulses it took (each taken once, in time order)."""

    fitness: float = 1.0
    last: float = -math.inf  # time of the last pulse taken
    recruited: float = 0.0  # recruitment of that pulse
    period: float = 0.0  # the current train's pulse interval
    quits: list[tuple[float, float]] = field(default_factory=list)  # [from, to) in s
    gate_start: int = 0  # the drive gate runs linearly from (gate_start, gate_value)
    gate_value: float = 1.0
    gate_down: bool = False  # ... down (True) or up


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
        are added to the EMG. Pulses in a range already asked for must not change.
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
        for m, how in settings.detached.items():
            if m not in self.muscles or how not in DETACHED:
                raise ValueError(f"detached[{m!r}] = {how!r}: expected a muscle of "
                                 f"{self.muscles} and one of {DETACHED}")
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
        self._blocks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (x, act, vol)
        self._offset = 0  # samples of the first block already delivered
        self._generated = 0  # samples generated so far
        self._delivered = 0
        self._hum_phase = np.random.default_rng([self.seed, 7]).uniform(0, 2 * np.pi, size=n)
        self._drift_phase = np.random.default_rng([self.seed, 11]).uniform(0, 2 * np.pi, size=n)
        self._mwave = self._mwave_shape()
        self._gating = settings.passive or settings.quit_after_s is not None
        self._state = {m: _MuscleState() for m in self.muscles}
        self._taken: dict[tuple[float, str], EvokedTruth] = {}  # pulses already taken
        tail = len(self._mwave) / self.fs
        if settings.mwave is not None:
            tail = max(tail, settings.mwave.end_s + 2 / self.fs)
        self._tail = tail
        self._lookback = max(tail, settings.train_gap_s if self._gating else 0.0)

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
        return self._read(n)[0]

    def read_truth(self, n: int) -> tuple[np.ndarray, Truth]:
        """The next ``n`` samples, as :meth:`read`, and their ground truth."""
        return self._read(n)

    def _read(self, n: int) -> tuple[np.ndarray, Truth]:
        x, act, vol = self._take(n)
        start = self._delivered
        self._delivered += n
        pulses: tuple[EvokedTruth, ...] = ()
        drive = act
        if self.pulses is not None and n:
            pulses, drive = self._stimulate(x, act, vol, start)
        return x, Truth(start, drive, self._onsets_in(start, n), pulses)

    def _take(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The next ``n`` generated samples (new arrays): EMG, activation, voluntary EMG."""
        have = sum(b[0].shape[0] for b in self._blocks) - self._offset
        while have < n:
            self._blocks.append(self._generate_block())
            have += GEN_BLOCK
        parts: list[list[np.ndarray]] = [[], [], []]
        need = n
        while need:
            block = self._blocks[0]
            k = min(need, block[0].shape[0] - self._offset)
            for p, arr in zip(parts, block, strict=True):
                p.append(arr[self._offset : self._offset + k])
            self._offset += k
            need -= k
            if self._offset == block[0].shape[0]:
                self._blocks.pop(0)
                self._offset = 0
        if not n:
            empty = np.empty((0, len(self.muscles)))
            return empty, empty.copy(), empty.copy()
        x, act, vol = (np.concatenate(p) for p in parts)
        return x, act, vol

    def _generate_block(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
        vol = shaped * act
        x = vol.copy()
        x += rng.standard_normal((GEN_BLOCK, n_ch)) * s.noise_rms
        w = 2 * np.pi * s.mains_hz * t[:, None]
        hum = np.sin(w + self._hum_phase) + 0.3 * np.sin(3 * w + self._hum_phase) \
            + 0.1 * np.sin(5 * w + self._hum_phase)
        x += hum * (s.hum_rms * np.sqrt(2) / np.sqrt(1 + 0.09 + 0.01))
        x += s.drift_amplitude * np.sin(2 * np.pi * 0.2 * t[:, None] + self._drift_phase)
        x += s.dc_offset
        self._generated += GEN_BLOCK
        return x, act, vol

    def _onsets_in(self, start: int, n: int) -> tuple[tuple[int, str], ...]:
        lo = int(np.searchsorted(self._onsets, (start - 0.5) / self.fs))
        out = []
        for a in self.script[lo:]:
            k = int(round(a.onset_s * self.fs))
            if k >= start + n:
                break
            if k >= start:
                out.append((k, a.muscle))
        return tuple(out)

    # -- stimulation -------------------------------------------------------------------
    def _mwave_shape(self) -> np.ndarray:
        """The original M-wave: biphasic, ~10 ms long, peak 1."""
        t = np.arange(int(0.012 * self.fs)) / self.fs
        w = np.sin(2 * np.pi * t / 0.010) * np.exp(-t / 0.004)
        return w / np.max(np.abs(w))

    def _stimulate(self, out: np.ndarray, act: np.ndarray, vol: np.ndarray,
                   start: int) -> tuple[tuple[EvokedTruth, ...], np.ndarray]:
        """Add the pulses' artifacts and M-waves to ``out`` in place, and stop the
        voluntary EMG where the patient stops trying; returns (the pulses new in this
        read: each is reported once, in the read that holds it, or the next when it
        falls on the boundary; the voluntary drive)."""
        n = out.shape[0]
        t0, t1 = start / self.fs, (start + n) / self.fs
        mine = [p for p in self.pulses(t0 - self._lookback, t1) if p.muscle in self.muscles]
        new = []
        for p in sorted(mine, key=lambda p: (p.time, p.muscle)):  # each once, in time order
            if (p.time, p.muscle) not in self._taken:
                self._taken[(p.time, p.muscle)] = self._take_pulse(p)
                new.append(self._taken[(p.time, p.muscle)])
        for key in [k for k in self._taken if k[0] < t0 - self._lookback - 1.0]:
            del self._taken[key]
        drive = act
        if self._gating:
            gate = self._gate(mine, start, n)
            out -= vol * (1.0 - gate)  # exactly out where the gate is 1
            drive = act * gate
        for p in mine:
            if p.time >= t0 - self._tail:
                self._add_pulse(out, start, p, self._taken[(p.time, p.muscle)])
        return tuple(new), drive

    def _take_pulse(self, p: Pulse) -> EvokedTruth:
        """The muscle's response to a new pulse; advances its fatigue and train state."""
        s = self.settings
        st = self._state[p.muscle]
        if s.mwave is not None:
            r = s.mwave.recruitment(p.current_ma, p.pulse_width_us)
            pp = s.mwave.max_pp * r
        else:
            r = 1.0
            pp = s.mwave_amplitude * p.current_ma / 10.0 * float(np.ptp(self._mwave))
        if p.time >= st.last:  # in time order (a pulse out of order changes no state)
            gap = p.time - st.last
            in_train = gap < s.train_gap_s
            if s.fatigue is not None and st.last > -math.inf:
                active = gap if in_train else min(gap, st.period)
                st.fitness = s.fatigue.evolve(st.fitness, st.recruited, active)
                st.fitness = s.fatigue.evolve(st.fitness, 0.0, gap - active)
            if in_train:
                st.period = gap
            elif s.quit_after_s is not None:  # a train starts: when will the patient quit?
                q = p.time + s.quit_after_s
                ends = [a.onset_s + a.duration_s for a in self.script
                        if a.muscle == p.muscle and a.onset_s <= q < a.onset_s + a.duration_s]
                if ends:
                    st.quits.append((q, max(ends)))
            st.last, st.recruited = p.time, r
        if s.detached.get(p.muscle) is not None:
            pp = 0.0
        return EvokedTruth(p.time, p.muscle, p.current_ma, p.pulse_width_us, r, st.fitness,
                           pp * st.fitness)

    def _add_pulse(self, out: np.ndarray, start: int, p: Pulse, ev: EvokedTruth) -> None:
        s = self.settings
        c = self.muscles.index(p.muscle)
        detached = s.detached.get(p.muscle)
        k = int(round(p.time * self.fs)) - start
        scale = p.current_ma / 10.0
        # artifact: two samples of opposite sign (a biphasic pulse shorter than a
        # sample, smeared by the amplifier), on every channel with cross-talk
        if detached != "nothing":
            for d, sign in ((0, 1.0), (1, -0.6)):
                if 0 <= k + d < out.shape[0]:
                    amp = sign * s.artifact_amplitude * scale
                    out[k + d, :] += amp * s.crosstalk
                    out[k + d, c] += amp * (1 - s.crosstalk)
        if detached is not None:
            return
        if s.mwave is None:
            m0 = k + 2
            lo, hi = max(0, m0), min(out.shape[0], m0 + len(self._mwave))
            if hi > lo:
                amp = s.mwave_amplitude * scale
                if s.fatigue is not None:
                    amp *= ev.fitness
                out[lo:hi, c] += amp * self._mwave[lo - m0 : hi - m0]
            return
        m = s.mwave
        pos = p.time * self.fs - start  # the pulse, in samples from the read's start
        lo = max(0, math.ceil(pos + m.latency_ms * self.fs / 1000.0))
        hi = min(out.shape[0], math.floor(pos + m.end_s * self.fs) + 1)
        if hi <= lo:
            return
        wave = ev.mwave_pp * m.shape((np.arange(lo, hi) - pos) / self.fs)
        out[lo:hi, c] += wave
        ant = s.antagonists.get(p.muscle)
        if m.crosstalk and ant in self.muscles:
            out[lo:hi, self.muscles.index(ant)] += m.crosstalk * wave

    def _gate(self, pulses: Sequence[Pulse], start: int, n: int) -> np.ndarray:
        """How much of each muscle's voluntary drive is left, (n, n_muscles), 0..1.

        The drive goes down while the patient has stopped trying (``passive`` and the
        muscle stimulated, or inside a quit interval) and comes back after, linearly
        over ``relax_s``. The gate is a function of the sample index and the state at
        the last change of direction, so reads of any size give the same values.
        """
        s = self.settings
        idx = start + np.arange(n)
        t = idx / self.fs
        gate = np.ones((n, len(self.muscles)))
        rate = 1.0 / max(s.relax_s * self.fs, 1.0)
        for c, m in enumerate(self.muscles):
            st = self._state[m]
            down = np.zeros(n, dtype=bool)
            if s.passive:
                times = np.array([p.time for p in pulses if p.muscle == m])
                if times.size:
                    j = np.searchsorted(times, t, side="right") - 1
                    ok = j >= 0
                    down[ok] = t[ok] - times[j[ok]] < s.train_gap_s
            for q0, q1 in st.quits:
                down |= (t >= q0) & (t < q1)
            st.quits = [q for q in st.quits if q[1] > t[-1]]
            changes = np.flatnonzero(np.diff(np.r_[st.gate_down, down].astype(np.int8)))
            bounds = [0, *changes.tolist(), n]
            for a, b in zip(bounds[:-1], bounds[1:], strict=True):
                if a == b:
                    continue
                if bool(down[a]) != st.gate_down:  # a new direction from sample start + a
                    st.gate_value = _gate_at(st, start + a, rate)
                    st.gate_start, st.gate_down = start + a, bool(down[a])
                gate[a:b, c] = _gate_at(st, idx[a:b], rate)
        return gate


def _gate_at(st: _MuscleState, sample, rate: float):
    """The gate of ``st``'s current run at ``sample`` (int or array)."""
    step = (np.asarray(sample) - st.gate_start) * rate
    return np.clip(st.gate_value - step if st.gate_down else st.gate_value + step, 0.0, 1.0)
