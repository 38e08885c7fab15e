"""The evoked response to stimulation (M-wave), measured per pulse train.

Every stimulation pulse that recruits motor units produces a compound muscle action
potential on the stimulated muscle's EMG channel, the M-wave: a few mV, starting 3-8 ms
after the pulse and lasting 10-20 ms. Blanking throws these samples away; here they are
read first, from the raw samples, to answer three questions during a session:

* does the muscle respond at all (electrodes on, current above the motor threshold)?
  A detached electrode or a dead channel gives no M-wave, only the artifact or nothing;
* how large is the response (recruitment: M-wave against current), and how does it
  change over the session (fatigue: the amplitude falls with accumulated stimulation)?
* does the M-wave outlast the blanking? Then its tail leaks into the EMG the detector
  and the effort estimate see (:mod:`closedloop.core.effort`): ``blank_ms`` must cover
  the measured end of the wave.

How, per pulse (its exact place on the sample clock from the
:class:`~closedloop.core.blanking.ArtifactRemover`'s schedule): the mains hum is taken
out with a per-phase template of the raw signal learned outside the pulses' windows
(the same idea as the blanking's fill; needed when the pulse rate is locked to the
mains, e.g. 25 or 50 Hz at 50 Hz mains, where the hum would otherwise average into a
"response"); the level over ``baseline_ms`` before the pulse is subtracted; and the
samples from ``skip_ms`` after the pulse (the stimulus artifact comes first) to
``window_ms`` (or the next pulse) are read at the pulse's exact sub-sample offsets
(linear interpolation), so pulses falling anywhere between two samples average to the
same wave. Pulses of one muscle at one level (current and pulse width) are averaged
over each ``every_s`` of the sample clock into one :class:`MWave` record: peak-to-peak
amplitude, area, onset latency, end, the noise of the average and whether a response
is present. The noise is the standard error of the average, from the spread across
the averaged pulses (from the last group that had several pulses when there is only
one); a response is present when the peak-to-peak is ``present_snr`` times that noise.
A pulse on the very sample where its channel's level changes carries the new level (as
the simulated stimulator gives it), even when rounding puts its computed place a hair
before that sample.

Pure and chunk-invariant: the same samples and schedule in chunks of any size give the
same records, decided at the same samples (a record for the clock period ``[g * span,
(g + 1) * span)`` is decided at sample ``(g + 1) * span + window + 1``, when every
pulse of the period has been read). Call :meth:`EvokedResponse.process` with the raw
chunk before the blanking changes it.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from closedloop.core.blanking import ArtifactRemover, mains_period
from closedloop.core.sos import exponential_average

#: Weight of one mains period in the hum template: slower than the blanking's (1/16),
#: since at a pulse rate locked to the mains the template's own noise does not average
#: out over pulses (it is counted in the noise of the average, see ``_record``).
_HUM_WEIGHT = 1.0 / 32.0
#: Variance of the template's noise relative to the signal's (exponential average).
_HUM_NOISE = _HUM_WEIGHT / (2.0 - _HUM_WEIGHT)
#: A pulse this little (samples) before a change of its channel's level is at it: the
#: pulse grid and the change's sample round apart (the simulated stimulator's rule too).
_TIE = 1e-6


@dataclass(frozen=True)
class EvokedSettings:
    """How the M-wave is measured (see the module docstring).

    Attributes
    ----------
    skip_ms : float
        The stimulus artifact: the window starts this long after the pulse.
    window_ms : float
        The window ends this long after the pulse (or one sample before the next pulse).
    baseline_ms : float
        The level over this long before the pulse is subtracted.
    every_s : float
        One record per muscle and level per this long of the sample clock.
    present_snr : float
        A response is present when its peak-to-peak exceeds this many times the noise
        of the average. Without a response (a detached electrode, the patient trying
        or at rest, 10 dB) the ratio is 2.5-3 typically and up to 9 at pulse rates
        locked to the mains (25, 50 Hz); a response at the motor threshold gives
        about 50 and a working current hundreds.
    onset_fraction, end_fraction : float
        Onset latency: the first crossing of this fraction of the wave's largest
        deviation; end: the last.
    """

    skip_ms: float = 2.0
    window_ms: float = 25.0
    baseline_ms: float = 2.0
    every_s: float = 0.5
    present_snr: float = 15.0
    onset_fraction: float = 0.1
    end_fraction: float = 0.05

    def __post_init__(self) -> None:
        if not 0 <= self.skip_ms < self.window_ms:
            raise ValueError(f"EvokedSettings: need 0 <= skip_ms ({self.skip_ms}) < "
                             f"window_ms ({self.window_ms})")
        if not self.baseline_ms > 0 or not self.every_s > 0 or not self.present_snr > 0:
            raise ValueError("EvokedSettings: baseline_ms, every_s and present_snr must be > 0")
        for name in ("onset_fraction", "end_fraction"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"EvokedSettings.{name} must be between 0 and 1")


@dataclass(frozen=True)
class MWave:
    """The averaged evoked response of one muscle at one level over one period.

    Attributes
    ----------
    sample : int
        Sample at which the record was decided (every pulse of its period read).
    time : float
        Stream time of that sample (NaN when :meth:`EvokedResponse.process` got no
        timestamps).
    muscle : str
    channel : int
        Stimulator channel.
    first_sample, last_sample : int
        First blanked sample of the first and the last pulse averaged.
    n_pulses : int
    current_ma, pulse_width_us : float
        The level the pulses were given at.
    peak_to_peak : float
        Of the averaged wave, in the signal's units.
    area : float
        Integral of the averaged wave's absolute value over the window (units x s).
    latency_s : float
        Pulse to onset (NaN when no response is present).
    end_s : float
        Pulse to the end of the wave (NaN when no response is present).
    noise : float
        Standard error of the average, RMS over the window (NaN when unknown).
    present : bool
        ``peak_to_peak >= present_snr x noise``.
    offset_s : float
        Time after the pulse of ``waveform[0]``.
    waveform : ndarray
        The averaged wave, one value per sample period from ``offset_s``.
    """

    sample: int
    time: float
    muscle: str
    channel: int
    first_sample: int
    last_sample: int
    n_pulses: int
    current_ma: float
    pulse_width_us: float
    peak_to_peak: float
    area: float
    latency_s: float
    end_s: float
    noise: float
    present: bool
    offset_s: float
    waveform: np.ndarray = field(repr=False, compare=False)


@dataclass
class _Pending:
    """A pulse whose window is not complete yet."""

    position: float
    first: int  # floor(position)
    channel: int
    column: int
    length: int  # window samples


@dataclass
class _Group:
    """The pulses of one muscle, level and clock period read so far."""

    first: int
    last: int = 0
    n: int = 0
    s1: np.ndarray = field(default_factory=lambda: np.zeros(0))
    s2: np.ndarray = field(default_factory=lambda: np.zeros(0))


class EvokedResponse:
    """M-wave records from the raw EMG and the pulse schedule; see the module docstring.

    Parameters
    ----------
    settings : EvokedSettings
    fs : float
        Sampling rate, Hz.
    channels : sequence of str
        The pipeline's channel (muscle) names, in column order.
    artifacts : ArtifactRemover
        Its schedule says where the pulses are (it must be enabled: ``blank_ms > 0``).
    mains_hz : float
        Mains frequency whose hum is taken out (0: none).
    """

    def __init__(self, settings: EvokedSettings, fs: float, channels: Sequence[str],
                 artifacts: ArtifactRemover, mains_hz: float = 0.0) -> None:
        self.settings = settings
        self.fs = float(fs)
        self.channels = tuple(channels)
        self.artifacts = artifacts
        ms = self.fs / 1000.0
        self.skip = max(1, int(math.ceil(settings.skip_ms * ms - 1e-9)))
        self.window = max(self.skip + 1, int(math.floor(settings.window_ms * ms + 1e-9)))
        self.n_baseline = max(1, int(round(settings.baseline_ms * ms)))
        self.span = max(1, int(round(settings.every_s * self.fs)))
        self.mains_period = mains_period(self.fs, mains_hz)
        nch = len(self.channels)
        self._hist = np.zeros((nch, 0))  # hum-free raw samples before the chunk
        self._keep = self.n_baseline + self.window + 2
        self._hum = np.zeros((nch, max(self.mains_period, 1)))  # hum by mains phase
        self._ma_hist = np.zeros((nch, 0))  # the last mains period of raw samples
        self._ma_sum = np.zeros(nch)
        self._started = False
        self._pending: list[_Pending] = []
        self._windows: list[int] = []  # first samples of pulses whose windows may reach on
        self._levels: dict[int, list[tuple[int, float, float]]] = {}
        self._groups: dict[tuple, _Group] = {}
        self._sigma: dict[tuple[int, int], float] = {}  # (column, length) -> per-pulse noise
        self._position = 0

    def restart_channel(self, column: int, level: float) -> None:
        """Forget what one channel's raw signal taught the hum template, as the
        pipeline's filters and blanking do when the channel comes back after bad data
        (:meth:`Pipeline.restart_channel <closedloop.core.pipeline.Pipeline.restart_channel>`):
        an impulse of huge values would otherwise stay in the template (and as a
        rounding residue in the running mean) for tens of seconds, and every M-wave read
        on that channel meanwhile would be the impulse's echo. The template restarts
        empty and the running mean at ``level``; call between chunks."""
        self._hum[column] = 0.0
        if self._started:
            self._ma_hist[column] = float(level)
            self._ma_sum[column] = float(level) * self.mains_period

    # -- the levels --------------------------------------------------------------------
    def command(self, channel: int, current_ma: float, pulse_width_us: float,
                effective_sample: int) -> None:
        """A stimulator channel's level from ``effective_sample`` on (every command that
        goes to the stimulator, before any sample at or after it is processed)."""
        levels = self._levels.setdefault(int(channel), [])
        levels.append((int(effective_sample), float(current_ma), float(pulse_width_us)))

    def _level(self, channel: int, position: float) -> tuple[float, float]:
        """The level a pulse at ``position`` carried (NaN: never commanded): the one in
        force from a change at or before it, a change :data:`_TIE` after it included."""
        levels = self._levels.get(channel, [])
        i = bisect.bisect_right(levels, (position + _TIE, math.inf, math.inf)) - 1
        return (math.nan, math.nan) if i < 0 else (levels[i][1], levels[i][2])

    def _forget_levels(self, before: float) -> None:
        """Drop the levels that ended before sample ``before`` (no pulse asks)."""
        for levels in self._levels.values():
            i = bisect.bisect_right(levels, (before, math.inf, math.inf)) - 1
            if i > 0:
                del levels[:i]

    # -- the samples -------------------------------------------------------------------
    def process(self, raw: np.ndarray, start: int,
                timestamps: np.ndarray | None = None) -> list[MWave]:
        """Read raw ``(n_channels, n)`` samples from ``start``; the records decided in
        them, in order. ``raw`` is not changed."""
        n = raw.shape[1]
        if n == 0:
            return []
        if start != self._position:
            raise ValueError(f"evoked response: chunk starts at sample {start}, expected "
                             f"{self._position} (chunks must follow each other)")
        stop = start + n
        self._position = stop
        reach = self.window + 2 + self.mains_period
        self._windows = [f for f in self._windows if f + reach > start]
        for pos, ch, col, period in self.artifacts.scheduled(start, stop):
            first = math.floor(pos)
            self._windows.append(first)
            # up to the sample before the next pulse's (interpolation reads one more)
            length = min(self.window, int(math.floor(period)) - 2) - self.skip + 1
            if col >= 0 and length >= 2:
                self._pending.append(_Pending(pos, first, ch, col, length))
        x = self._dehum(raw, start)
        ext = np.concatenate((self._hist, x), axis=1)
        base = start - self._hist.shape[1]
        done = [p for p in self._pending if p.first + self.skip + p.length <= stop - 1]
        self._pending = [p for p in self._pending if p.first + self.skip + p.length > stop - 1]
        for p in done:  # in pulse order: the sums add up the same in any chunking
            # every command acting before ``stop`` is known by now (see :meth:`command`)
            self._add(p, self._level(p.channel, p.position), ext, base)
        self._forget_levels(min([p.position for p in self._pending], default=stop))
        self._hist = ext[:, -self._keep :]
        return self._decide(stop, start, timestamps)

    def _dehum(self, raw: np.ndarray, start: int) -> np.ndarray:
        """``raw`` minus the hum template.

        The template learns ``x - mean(x over the last mains period)`` by mains phase: the
        hum alone (a whole period's mean holds no hum, and follows DC and drift with a
        lag of half a period). It learns only where neither the sample nor the period
        before it is inside a pulse's window, so it is frozen while a train runs (the
        M-wave never enters it, and phases the windows cover are not learned apart from
        the others). Per phase, in sample order, each learning sample ``t`` moves the
        template to ``(1 - w) * hum + w * t``, always in that form, whether one sample
        is learnt at a time or a run of whole mains periods at once (there through
        :func:`~closedloop.core.sos.exponential_average` along the periods, which
        evaluates the same recurrence element by element): the same bits in any
        chunking.
        """
        x = np.array(raw, dtype=np.float64)
        n = x.shape[1]
        p = self.mains_period
        if not p:
            return x
        if not self._started:
            self._ma_hist = np.repeat(x[:, :1], p, axis=1)
            self._ma_sum = x[:, 0] * p
            self._started = True
        # the running sum over the last p samples (sequential: exact in any chunking)
        ext = np.concatenate((self._ma_hist, x), axis=1)
        d = x - ext[:, :n]
        d[:, 0] += self._ma_sum
        running = np.cumsum(d, axis=1)
        self._ma_sum = running[:, -1].copy()
        self._ma_hist = ext[:, n:].copy()
        learn = np.ones(n, dtype=bool)
        reach = self.window + 2 + p
        for f in self._windows:
            learn[max(f - start, 0) : max(f + reach - start, 0)] = False
        target = x - running / p  # what the template learns, before x loses its hum
        edges = [0, *(np.flatnonzero(learn[1:] != learn[:-1]) + 1).tolist(), n]
        for a, b in zip(edges[:-1], edges[1:], strict=True):
            if learn[a]:
                self._learn_run(x, target, start, a, b)
            else:  # frozen: the template as it stands
                phases = (start + np.arange(a, b)) % p
                x[:, a:b] -= self._hum[:, phases]
        return x

    def _learn_run(self, x: np.ndarray, target: np.ndarray, start: int, a: int,
                   b: int) -> None:
        """Take the hum out of ``x[:, a:b]`` while the template learns ``target`` there:
        the part of a mains period before the run's first whole period, the whole
        periods (all phases at once, along the periods), the part after."""
        p = self.mains_period
        w = _HUM_WEIGHT
        head = min((-(start + a)) % p, b - a)
        if head:
            self._step(x, target, a, a + head, (start + a) % p)
        a += head
        whole = (b - a) // p
        if whole:
            c = a + whole * p
            nch = x.shape[0]
            t = target[:, a:c].reshape(nch, whole, p).transpose(0, 2, 1)  # (nch, p, whole)
            after = exponential_average(t.reshape(nch * p, whole), self._hum.ravel(), w)
            after = after.reshape(nch, p, whole).transpose(0, 2, 1)  # (nch, whole, p)
            before = np.concatenate((self._hum[:, None, :], after[:, :-1]), axis=1)
            x[:, a:c] -= before.reshape(nch, -1)
            self._hum = after[:, -1].copy()
            a = c
        if b > a:
            self._step(x, target, a, b, 0)

    def _step(self, x: np.ndarray, target: np.ndarray, a: int, b: int, ph0: int) -> None:
        """One learning step of the phases ``ph0 .. ph0 + b - a`` (within one period)."""
        phase = slice(ph0, ph0 + b - a)
        hum = self._hum[:, phase].copy()
        self._hum[:, phase] = (1.0 - _HUM_WEIGHT) * hum + _HUM_WEIGHT * target[:, a:b]
        x[:, a:b] -= hum

    def _add(self, p: _Pending, stim: tuple[float, float], ext: np.ndarray,
             base: int) -> None:
        """Add pulse ``p``, given at level ``stim`` (current, pulse width), to its group."""
        row = ext[p.column]
        b0 = max(p.first - self.n_baseline - base, 0)
        b1 = p.first - base
        baseline = float(np.mean(row[b0:b1])) if b1 > b0 else 0.0
        frac = p.position - p.first
        i = p.first + self.skip - base
        a = row[i : i + p.length]
        b = row[i + 1 : i + p.length + 1]
        wave = (1.0 - frac) * a + frac * b - baseline
        key = (p.first // self.span, p.column, p.channel, _key(stim[0]),
               _key(stim[1]), p.length)
        g = self._groups.get(key)
        if g is None:
            g = self._groups[key] = _Group(first=p.first, s1=np.zeros(p.length),
                                           s2=np.zeros(p.length))
        g.n += 1
        g.last = p.first
        g.s1 += wave
        g.s2 += wave * wave

    def _decide(self, stop: int, start: int, timestamps: np.ndarray | None) -> list[MWave]:
        out = []
        for key in sorted(self._groups):
            gi, col, ch, cur, pw, length = key
            at = (gi + 1) * self.span + self.window + 1
            if at >= stop:
                continue
            g = self._groups.pop(key)
            t = math.nan
            if timestamps is not None and start <= at < stop:
                t = float(timestamps[at - start])
            out.append(self._record(g, at, t, col, ch, _value(cur), _value(pw), length))
        return out

    def _record(self, g: _Group, at: int, t: float, col: int, ch: int, cur: float,
                pw: float, length: int) -> MWave:
        s = self.settings
        mean = g.s1 / g.n
        if g.n >= 2:
            var = np.maximum(g.s2 - g.n * mean * mean, 0.0) / (g.n - 1)
            sigma = float(np.sqrt(np.mean(var)))
            self._sigma[(col, length)] = sigma
        else:
            sigma = self._sigma.get((col, length), math.nan)
        # the standard error of the average, and the hum template's noise (the same at
        # every pulse when the pulse rate is locked to the mains, so it does not average)
        locked = _HUM_NOISE if self.mains_period else 0.0
        noise = sigma * math.sqrt(1.0 / g.n + locked)
        pp = float(np.max(mean) - np.min(mean))
        present = bool(pp >= s.present_snr * noise) if math.isfinite(noise) else False
        latency = end = math.nan
        if present:
            mag = np.abs(mean)
            latency = self._crossing(mag, s.onset_fraction * float(mag.max()), first=True)
            end = self._crossing(mag, s.end_fraction * float(mag.max()), first=False)
        return MWave(
            sample=at, time=t, muscle=self.channels[col], channel=ch, first_sample=g.first,
            last_sample=g.last, n_pulses=g.n, current_ma=cur, pulse_width_us=pw,
            peak_to_peak=pp, area=float(np.sum(np.abs(mean)) / self.fs), latency_s=latency,
            end_s=end, noise=noise, present=present, offset_s=self.skip / self.fs,
            waveform=mean,
        )

    def _crossing(self, mag: np.ndarray, level: float, *, first: bool) -> float:
        """Time after the pulse where ``mag`` first (or last) crosses ``level``,
        interpolated between samples."""
        above = np.flatnonzero(mag >= level)
        if first:
            i = int(above[0])
            if i == 0:
                return self.skip / self.fs
            lo, hi = mag[i - 1], mag[i]
            return (self.skip + i - 1 + (level - lo) / (hi - lo)) / self.fs
        i = int(above[-1])
        if i == mag.size - 1:
            return (self.skip + i) / self.fs
        hi, lo = mag[i], mag[i + 1]
        return (self.skip + i + (hi - level) / (hi - lo)) / self.fs


def _key(level: float) -> float:
    """A level as a dict/sort key (NaN, a level never commanded, as -1)."""
    return level if level == level else -1.0


def _value(key: float) -> float:
    return math.nan if key == -1.0 else key


__all__ = ["EvokedResponse", "EvokedSettings", "MWave"]
