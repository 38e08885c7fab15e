"""The threshold detectors: ``threshold`` (an envelope) and ``tkeo`` (Teager-Kaiser energy).

:class:`ThresholdDetector` (``kind = "threshold"``, the default) computes the
``[envelope]`` of the filtered EMG (moving RMS by default) and applies the rules of
:class:`OnsetDetector`; :class:`TkeoDetector` (``kind = "tkeo"``) band-limits the EMG
and takes its Teager-Kaiser energy instead. Both are :class:`~closedloop.core.detectors.
base.Detector` implementations: they run live, in replay and offline alike.

The rules of :class:`OnsetDetector`, for each channel independently:

* **Onset**: the envelope stays above the on-threshold for ``min_on`` consecutive samples
  (the minimum on-time); the onset is decided at the last sample of that run.
* **Offset**: once active, the envelope stays below the (lower) off-threshold for
  ``min_off`` consecutive samples (hysteresis); decided at the last sample of the run.
* **Refractory**: after an offset, no sample before ``offset + 1 + refractory`` counts
  towards a new onset.
* **Thresholds** come from the rest level: ``mean + k_on * SD`` (or a fraction of the
  MVC above rest) from an explicit calibration, or from the adaptive noise-floor
  tracker: envelope statistics per block of ``block`` samples (blocks are aligned to
  absolute sample indices, never to chunks), used only for blocks in which the channel
  was idle (see :meth:`OnsetDetector._end_block`). Thresholds change only at block
  boundaries, so they do not depend on how the stream was chunked. Until enough rest was
  seen, the channel cannot trigger.
* **Rest must be quiet**: the rest level is learnt only from ``min_rest_ms`` of blocks
  whose means agree within ``SEED_SPREAD`` (a rise or fall is not rest: the detector
  waits, and says so after ``WAIT_WARN_S``). If, within ``history_s`` of learning it,
  an idle block's mean falls below ``REST_DROP`` x what was learnt, the patient was
  contracting while it learnt (or the electrode settled): the detector says so and
  learns rest again from there. What it says is kept as :class:`RestNote` records
  (:meth:`OnsetDetector.pop_notes`).

Speed: the common case (idle and nothing above threshold, or active and nothing below)
is a handful of vectorised operations over all channels; the per-channel state machine
runs only on chunks where something can change.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from closedloop.config.signal import (
    Calibration,
    DetectorSettings,
    EnvelopeSettings,
    FilterSettings,
    TkeoSettings,
)
from closedloop.core.detectors.base import Detection, Detector, RestNote, first_run
from closedloop.core.envelope import Envelope
from closedloop.core.events import OFFSET, ONSET, SUSPEND, Event
from closedloop.core.filters import FilterBank
from closedloop.units import EMG_SQUARED, ENVELOPE, Statistic

IDLE = 0
ACTIVE = 1

#: Rest is learnt only from blocks whose means agree within this factor (6 dB).
SEED_SPREAD = 2.0
#: An idle block below this fraction of the learnt rest (-8 dB) shows it was not rest.
REST_DROP = 0.4
#: Waiting this long for steady rest is said (once per wait).
WAIT_WARN_S = 2.0


_any = np.logical_or.reduce


_first_run = first_run


class OnsetDetector:
    """Multichannel onset/offset detector (see the module docstring).

    Parameters
    ----------
    settings : DetectorSettings
    fs : float
        Sampling rate (Hz), to turn the millisecond settings into sample counts.
    channels : sequence of str
        Channel names, used in events.
    calibrations : sequence of Calibration or None, optional
        Per channel; required for every channel when ``settings.baseline`` is
        ``"calibrated"``. A calibrated channel uses fixed thresholds.
    """

    def __init__(
        self,
        settings: DetectorSettings,
        fs: float,
        channels: Sequence[str],
        calibrations: Sequence[Calibration | None] | None = None,
    ) -> None:
        self.settings = settings
        self.fs = float(fs)
        self.channels = tuple(channels)
        n = len(self.channels)
        ms = self.fs / 1000.0
        self.n_on = max(1, int(round(settings.min_on_ms * ms)))
        self.n_off = max(1, int(round(settings.min_off_ms * ms)))
        self.n_refr = int(round(settings.refractory_ms * ms))
        self.block = max(1, int(round(settings.block_ms * ms)))
        self.warmup_blocks = int(np.ceil(settings.warmup_ms * ms / self.block))
        self.min_blocks = max(1, int(np.ceil(settings.min_rest_ms * ms / self.block)))

        cals = list(calibrations) if calibrations is not None else [None] * n
        if len(cals) != n:
            raise ValueError(f"{len(cals)} calibrations for {n} channels")
        self.on_threshold = np.full(n, np.nan)
        self.off_threshold = np.full(n, np.nan)
        self.adaptive = np.ones(n, dtype=bool)
        for c, cal in enumerate(cals):
            if cal is not None:
                self.on_threshold[c], self.off_threshold[c] = cal.thresholds(settings)
                self.adaptive[c] = False
            elif settings.baseline == "calibrated":
                raise ValueError(
                    f"channel {self.channels[c]!r} has no calibration but the detector "
                    "baseline is 'calibrated'; run `closedloop calibrate` or use "
                    "baseline = 'adaptive'"
                )
        #: Channels whose detector is suspended (bad electrode): they cannot trigger.
        self.suspended = np.zeros(n, dtype=bool)
        #: Channels held (see :meth:`hold`): no new onset, an onset under way goes on.
        self.held = np.zeros(n, dtype=bool)
        self._blocked = np.zeros(n, dtype=bool)  # suspended or held: nothing learnt

        self.state = np.zeros(n, dtype=np.int8)
        self.run = np.zeros(n, dtype=np.int64)
        self.refr_until = np.zeros(n, dtype=np.int64)
        self.position = 0  # absolute index of the next sample
        self._n_active = 0
        self._runs_pending = False
        self._any_suspended = False
        self._live_col = np.ones((n, 1), dtype=bool)
        self._on_col = self.on_threshold[:, None]  # views: follow threshold updates
        self._off_col = self.off_threshold[:, None]
        self._block_buf = np.empty((n, self.block))
        self._block_fill = 0
        self._block_busy = np.zeros(n, dtype=bool)
        self._inv_block = 1.0 / self.block
        self._seed_blocks: list[list[tuple[float, float]]] = [[] for _ in range(n)]
        self._learn_from = np.zeros(n, dtype=np.int64)  # sample where learning (re)started
        self._warned = np.zeros(n, dtype=bool)  # "waiting" said for this learning
        self._doubted = np.zeros(n, dtype=bool)  # learning again after "not_quiet"
        self._seed_level = np.zeros(n)  # the rest learnt, and where, until confirmed
        self._seed_at = np.zeros(n, dtype=np.int64)
        self._confirm_until = np.zeros(n, dtype=np.int64)  # block index
        self._history_blocks = max(1, int(round(settings.history_s * self.fs / self.block)))
        self._wait_blocks = max(1, int(round(WAIT_WARN_S * self.fs / self.block)))
        self._notes: list[RestNote] = []
        self._floor_mean = np.zeros(n)
        self._floor_var = np.zeros(n)
        self._alpha_up = min(1.0, self.block / (settings.history_s * self.fs))
        self._alpha_down = min(1.0, 4.0 * self._alpha_up)
        self._tracking = np.zeros(n, dtype=bool)  # adaptive channels whose floor is seeded
        self._all_seeded = not self.adaptive.any()

    # ------------------------------------------------------------------------------------
    def pop_notes(self) -> list[RestNote]:
        """What the rest learning found since the last call, in sample order."""
        out, self._notes = self._notes, []
        return out

    @property
    def ready(self) -> np.ndarray:
        """Per channel: thresholds are known (calibrated, or enough rest was seen)."""
        return np.isfinite(self.on_threshold)

    @property
    def active(self) -> np.ndarray:
        """Per channel: currently between an onset and its offset."""
        return self.state == ACTIVE

    def suspend(self, channel: int, suspended: bool, sample: int, time: float) -> list[Event]:
        """Suspend (or resume) a channel's detection.

        Suspending emits a ``suspend`` event (so a protocol can abort stimulation that a
        bad signal may have triggered), preceded by an offset (threshold NaN) when the
        channel was active."""
        events: list[Event] = []
        if suspended and self.state[channel] == ACTIVE:
            self.state[channel] = IDLE
            self.run[channel] = 0
            self.refr_until[channel] = sample + 1 + self.n_refr
            events.append(Event(sample, time, self.channels[channel], OFFSET))
        if suspended and not self.suspended[channel]:
            events.append(Event(sample, time, self.channels[channel], SUSPEND))
        self.suspended[channel] = suspended
        self._blocked_changed()
        self._n_active = int(np.count_nonzero(self.state == ACTIVE))
        return events

    def hold(self, channel: int, held: bool) -> None:
        """Hold (or release) a channel: while held it starts no onset and nothing is
        learnt from it, but an onset already under way goes on (no offset, no suspend
        event: stimulation is not stopped).

        For a stretch that may yet turn out to be a contraction (the impulse gate,
        :mod:`closedloop.core.impulses`): a genuine, sharp one whose onset came first
        must not lose its train; if the stretch was an artefact, the caller suspends
        the channel when that is known.
        """
        self.held[channel] = held
        self._blocked_changed()

    def _blocked_changed(self) -> None:
        np.logical_or(self.suspended, self.held, out=self._blocked)
        self._any_suspended = bool(self._blocked.any())
        self._live_col = ~self._blocked[:, None]

    # ------------------------------------------------------------------------------------
    def process(
        self, env: np.ndarray, timestamps: np.ndarray | None = None
    ) -> tuple[np.ndarray, list[Event]]:
        """Run the detector over one chunk of envelope samples.

        Parameters
        ----------
        env : ndarray, shape (n_channels, n)
            Channel-major envelope.
        timestamps : ndarray, shape (n,), optional
            Stream times for the events; ``sample / fs`` when omitted.

        Returns
        -------
        above : ndarray of bool, shape (n_channels, n)
            Envelope above the on-threshold in force at each sample.
        events : list of Event
            In sample order.
        """
        n = env.shape[1]
        start = self.position
        above = np.empty(env.shape, dtype=bool)
        events: list[Event] = []
        a = 0
        stats = None  # the whole blocks' statistics, taken once when first needed
        while a < n:
            if (self._block_fill == 0 and n - a >= self.block and not self._runs_pending
                    and not self._any_suspended):
                if stats is None:
                    stats = _BlockStats(env, a, self.block, self._inv_block)
                a = self._quiet_blocks(env, a, stats, start, above)
                if a == n:
                    break
            b = min(n, a + self.block - self._block_fill)
            self._segment(env, a, b, start, above, events, timestamps)
            if self._block_fill == 0 and b - a == self.block:
                self._end_block(start + b, env[:, a:b])  # a whole block: no copy needed
            else:
                self._block_buf[:, self._block_fill : self._block_fill + (b - a)] = env[:, a:b]
                self._block_fill += b - a
                if self._block_fill == self.block:
                    self._end_block(start + b, self._block_buf)
            a = b
        self.position = start + n
        if len(events) > 1:
            events.sort(key=lambda e: e.sample)
        return above, events

    # ------------------------------------------------------------------------------------
    def _quiet_blocks(self, env: np.ndarray, a: int, stats: _BlockStats, start: int,
                      above: np.ndarray) -> int:
        """Whole blocks from ``a`` (a block boundary; no run under way, no channel
        suspended or held) in which nothing can change: no idle channel goes above its
        on-threshold, no active one below its off-threshold. Only the noise floor of the
        idle channels is updated at their ends (an active channel is busy: its
        thresholds stay). Their statistics are taken for all at once (each block's sums
        are the ones it gets alone, to the bit); the steady floor update (warmed up,
        every adaptive channel tracking, past the time its rest could be doubted) runs
        in Python floats on lists, anything else through :meth:`_end_block`. Returns
        where the first block in which something can happen starts (or the last whole
        one ends)."""
        blk, nch = self.block, len(self.channels)
        j0 = (a - stats.a) // blk  # the first block's index in the statistics
        m = stats.count - j0
        active = (self.state == ACTIVE).tolist()
        tops, bottoms, means, var = stats.tops, stats.bottoms, stats.means, stats.var
        idle = [c for c in range(nch) if not active[c]]
        busy = [c for c in range(nch) if active[c]]
        steady = [c for c in range(nch) if self.adaptive[c]]
        learning = [c for c in steady if not active[c]]

        def floor_state():
            settled = bool(self._tracking[steady].all()) if steady else True
            after = max([self.warmup_blocks, *(int(self._confirm_until[c]) for c in steady)])
            return (settled, after, self._floor_mean.tolist(), self._floor_var.tolist(),
                    self.on_threshold.tolist(), self.off_threshold.tolist())

        settled, after, mean_l, var_l, on_l, off_l = floor_state()
        k_on, off_frac = self.settings.k_on, self.settings.off_fraction
        a_down, a_up = self._alpha_down, self._alpha_up
        first = (start + a) // blk  # index of the first block
        done = 0
        for k in range(m):
            top = tops[j0 + k]
            if any(top[c] > on_l[c] for c in idle) or (
                    busy and any(bottoms[j0 + k][c] < off_l[c] for c in busy)):
                break
            if settled and first + k >= after:
                mk, vk = means[j0 + k], var[j0 + k]
                for c in learning:
                    mu, vc = mean_l[c], var_l[c]
                    dev = mk[c] - mu
                    alpha = a_down if dev < 0.0 else a_up
                    mu += alpha * dev
                    vc += alpha * (vk[c] + dev * dev - vc)
                    mean_l[c], var_l[c] = mu, vc
                    on = mu + k_on * math.sqrt(vc)
                    on_l[c], off_l[c] = on, mu + off_frac * (on - mu)
            else:
                self._floor_mean[:], self._floor_var[:] = mean_l, var_l
                self.on_threshold[:], self.off_threshold[:] = on_l, off_l
                self._block_busy[busy] = True
                self._end_block(start + a + (k + 1) * blk, None, np.array(means[j0 + k]),
                                np.array(var[j0 + k]))
                settled, after, mean_l, var_l, on_l, off_l = floor_state()
            done = k + 1
        self._floor_mean[:], self._floor_var[:] = mean_l, var_l
        self.on_threshold[:], self.off_threshold[:] = on_l, off_l
        self._block_fill = 0
        stop = a + done * blk
        above[idle, a:stop] = False
        for c in busy:  # its thresholds did not move: above where its envelope is
            np.greater(env[c, a:stop], on_l[c], out=above[c, a:stop])
        return stop

    def _segment(self, env, a, b, start, above, events, timestamps) -> None:
        """Samples ``a:b`` of the chunk, all inside one block (thresholds constant)."""
        seg = env[:, a:b]
        ab = np.greater(seg, self._on_col, out=above[:, a:b])
        if self._any_suspended:
            ab &= self._live_col
        any_above = _any(ab, axis=1)
        if self._n_active == 0:
            if not any_above.any():
                if self._runs_pending:
                    self.run.fill(0)
                    self._runs_pending = False
                return
            busy = any_above
        else:
            active = self.state == ACTIVE
            self._block_busy |= active
            below_any = _any(np.less(seg, self._off_col), axis=1)
            busy = np.where(active, below_any, any_above)
        self._block_busy |= any_above
        self.run[~busy] = 0  # channels where nothing can change just reset their run
        for c in np.flatnonzero(busy):
            self._channel(int(c), seg[c], ab[c], start + a, a, events, timestamps)
        self._n_active = int(np.count_nonzero(self.state == ACTIVE))
        self._runs_pending = bool(self.run.any())
        if self._n_active:
            self._block_busy |= self.state == ACTIVE

    def _channel(self, c, env_c, above_c, abs0, local0, events, timestamps) -> None:
        """The exact per-sample state machine of one channel over one segment."""
        n = env_c.shape[0]
        i = 0
        while i < n:
            if self.state[c] == IDLE:
                mask = above_c[i:]
                blocked = self.refr_until[c] - (abs0 + i)
                if blocked > 0:
                    mask = mask.copy()
                    mask[:blocked] = False
                j, tail = _first_run(mask, int(self.run[c]), self.n_on)
                if j < 0:
                    self.run[c] = tail
                    return
                k = i + j
                self._emit(c, ONSET, abs0 + k, local0 + k, env_c[k], self.on_threshold[c],
                           events, timestamps)
                self.state[c] = ACTIVE
            else:
                below = env_c[i:] < self.off_threshold[c]
                j, tail = _first_run(below, int(self.run[c]), self.n_off)
                if j < 0:
                    self.run[c] = tail
                    return
                k = i + j
                self._emit(c, OFFSET, abs0 + k, local0 + k, env_c[k], self.off_threshold[c],
                           events, timestamps)
                self.state[c] = IDLE
                self.refr_until[c] = abs0 + k + 1 + self.n_refr
            self.run[c] = 0
            i = k + 1

    def _emit(self, c, kind, sample, local, value, thr, events, timestamps) -> None:
        t = float(timestamps[local]) if timestamps is not None else sample / self.fs
        events.append(Event(int(sample), t, self.channels[c], kind, float(value), float(thr)))

    def _end_block(self, block_end: int, buf: np.ndarray | None,
                   m: np.ndarray | None = None, v: np.ndarray | None = None) -> None:
        """A block of samples is complete: update the adaptive noise floor.

        Only blocks in which a channel was idle (never above its on-threshold, never
        active) count. The first ``min_blocks`` such blocks are pooled (mean of block
        means; mean block variance plus the variance of block means); after that the
        floor follows idle blocks with an asymmetric exponential average that falls
        quickly and rises slowly (time constant ``history_s``), like the minimum
        statistics of speech noise trackers, so unseen weak activity barely lifts it.

        ``m`` and ``v`` are the block's mean and variance per channel when the caller
        has them (else they are taken from ``buf``).
        """
        block_index = block_end // self.block - 1
        busy = self._block_busy
        self._block_fill = 0
        if block_index < self.warmup_blocks:
            busy.fill(False)
            return
        take = self.adaptive & ~busy
        if self._any_suspended:
            take &= ~self._blocked
        busy.fill(False)
        if not take.any():
            return
        if m is None or v is None:
            assert buf is not None, "a block's samples or its statistics"
            m = np.add.reduce(buf, axis=1) * self._inv_block
            v = np.einsum("ij,ij->i", buf, buf) * self._inv_block - m * m
            np.maximum(v, 0.0, out=v)
        newly = None  # channels whose floor was seeded by this block
        if not self._all_seeded:
            seeding = take & ~self._tracking
            if seeding.any():
                newly = self._seed(block_index, block_end, seeding, m, v)
            take = take & ~seeding
        # Asymmetric exponential tracking, channel by channel in Python floats: for a
        # handful of channels this is several times cheaper than a dozen numpy calls on
        # tiny arrays (the same IEEE operations in the same order either way).
        mean, var = self._floor_mean, self._floor_var
        k_on, off_frac = self.settings.k_on, self.settings.off_fraction
        a_down, a_up = self._alpha_down, self._alpha_up
        for c in np.flatnonzero(take & self._tracking).tolist():
            mc, mu, vc = float(m[c]), float(mean[c]), float(var[c])
            if block_index < self._confirm_until[c] and mc < REST_DROP * self._seed_level[c]:
                self._relearn(c, block_end, mc, float(v[c]))
                continue
            dev = mc - mu
            alpha = a_down if dev < 0.0 else a_up
            mu += alpha * dev
            vc += alpha * (float(v[c]) + dev * dev - vc)
            mean[c], var[c] = mu, vc
            on = mu + k_on * math.sqrt(vc)
            self.on_threshold[c] = on
            self.off_threshold[c] = mu + off_frac * (on - mu)
        if newly is not None:
            ons = mean + k_on * np.sqrt(var)
            np.copyto(self.on_threshold, ons, where=newly)
            np.copyto(self.off_threshold, mean + off_frac * (ons - mean), where=newly)

    def _seed(self, block_index: int, block_end: int, seeding: np.ndarray, m: np.ndarray,
              v: np.ndarray) -> np.ndarray | None:
        """Learn rest on the channels in ``seeding`` from their last ``min_blocks`` idle
        blocks, when those agree within ``SEED_SPREAD``: pooled like one long block
        (mean of block means; mean block variance plus the variance of block means).
        Returns the channels seeded by this block (None: none)."""
        k = self.min_blocks
        newly = np.zeros(len(self.channels), dtype=bool)
        for c in np.flatnonzero(seeding).tolist():
            blocks = self._seed_blocks[c]
            blocks.append((float(m[c]), float(v[c])))
            if len(blocks) > k:
                del blocks[0]
            if len(blocks) < k:
                continue
            means = [b[0] for b in blocks]
            if not max(means) <= SEED_SPREAD * min(means):  # a rise or a fall: not rest
                waited = (block_end - self._learn_from[c]) // self.block
                if waited >= self._wait_blocks and not self._warned[c]:
                    self._warned[c] = True
                    self._notes.append(RestNote(block_end - 1, c, "waiting",
                                                int(self._learn_from[c]),
                                                max(means) / max(min(means), 1e-300)))
                continue
            s_m = s_m2 = s_v = 0.0  # in arrival order, as the pooled sums always were
            for mc, vc in blocks:
                s_m += mc
                s_m2 += mc * mc
                s_v += vc
            sm = s_m / k
            self._floor_mean[c] = sm
            self._floor_var[c] = s_v / k + max(s_m2 / k - sm * sm, 0.0)
            blocks.clear()
            self._tracking[c] = newly[c] = True
            self._seed_level[c] = sm
            self._seed_at[c] = block_end - 1
            self._confirm_until[c] = block_index + 1 + self._history_blocks
            if self._warned[c] or self._doubted[c]:
                self._notes.append(RestNote(block_end - 1, c, "learnt",
                                            int(self._learn_from[c]), 1.0))
            self._warned[c] = self._doubted[c] = False
        self._all_seeded = bool(self._tracking[self.adaptive].all())
        return newly if newly.any() else None

    def _relearn(self, c: int, block_end: int, mc: float, vc: float) -> None:
        """The rest learnt on channel ``c`` was not quiet: learn it again, starting
        with this (quieter) block; the channel cannot trigger until then."""
        self._notes.append(RestNote(block_end - 1, c, "not_quiet", int(self._seed_at[c]),
                                    mc / self._seed_level[c]))
        self._tracking[c] = False
        self._all_seeded = False
        self.on_threshold[c] = self.off_threshold[c] = np.nan
        self._seed_blocks[c] = [(mc, vc)]
        self._learn_from[c] = block_end - self.block
        self._doubted[c] = True
        self._warned[c] = False


class _BlockStats:
    """Per whole block of an envelope chunk from ``a`` (a block boundary): maximum,
    minimum, mean and variance per channel, as lists by block (each block's sums are the
    ones :meth:`OnsetDetector._end_block` takes of it alone, to the bit)."""

    def __init__(self, env: np.ndarray, a: int, block: int, inv_block: float) -> None:
        nch, n = env.shape
        self.a = a
        self.count = m = (n - a) // block
        blocks = env[:, a:a + m * block].reshape(nch, m, block)
        self.tops = np.maximum.reduce(blocks, axis=2).T.tolist()
        self.bottoms = np.minimum.reduce(blocks, axis=2).T.tolist()
        means = np.add.reduce(blocks, axis=2) * inv_block
        var = np.einsum("ijk,ijk->ij", blocks, blocks) * inv_block - means * means
        np.maximum(var, 0.0, out=var)
        self.means, self.var = means.T.tolist(), var.T.tolist()


class ThresholdDetector(Detector):
    """``kind = "threshold"``: the ``[envelope]`` of the filtered EMG, then the rules of
    :class:`OnsetDetector` (Hodges & Bui 1996 style: rest mean + ``k_on`` x rest SD, with
    a minimum on-time, hysteresis, a refractory time and an adaptive noise floor).

    Parameters
    ----------
    settings : DetectorSettings
    fs, channels, calibrations
        See :class:`~closedloop.core.detectors.base.Detector`.
    envelope : EnvelopeSettings, optional
        The config's ``[envelope]`` (default: a 15 ms moving RMS).
    """

    kind = "threshold"
    settings_type = DetectorSettings
    statistic_info = ENVELOPE

    def __init__(self, settings: DetectorSettings, fs: float, channels: Sequence[str],
                 calibrations: Sequence[Calibration | None] | None = None, *,
                 envelope: EnvelopeSettings | None = None) -> None:
        super().__init__(settings, fs, channels, calibrations)
        self.envelope_settings = envelope or EnvelopeSettings()
        self.envelope = Envelope(self.envelope_settings, self.fs, len(self.channels))
        self.rules = OnsetDetector(settings, self.fs, self.channels, self.calibrations)
        self.on_threshold = self.rules.on_threshold  # the rules update them in place
        self.off_threshold = self.rules.off_threshold

    @classmethod
    def from_config(cls, config: Any, fs: float, channels: Sequence[str]) -> ThresholdDetector:
        """The detector of a config's ``[detector]``, envelope and calibrations."""
        return cls(config.detector, fs, channels, config.calibrations(),
                   envelope=config.envelope)

    def condition(self, filtered: np.ndarray) -> np.ndarray:
        """The statistic: the envelope of ``filtered`` (a new array)."""
        return self.envelope.process_inplace(filtered)

    def process(self, filtered: np.ndarray, raw: np.ndarray,
                timestamps: np.ndarray) -> Detection:
        """Decide the next chunk (see :meth:`Detector.process`)."""
        env = self.condition(filtered)
        above, events = self.rules.process(env, timestamps)
        self.position = self.rules.position
        return Detection(env, above, events)

    def suspend(self, channel: int, suspended: bool, sample: int, time: float) -> list[Event]:
        """Suspend or resume one channel (the rules' :meth:`OnsetDetector.suspend`)."""
        return self.rules.suspend(channel, suspended, sample, time)

    def hold(self, channel: int, held: bool) -> None:
        """Hold one channel (no new onsets) or release it."""
        self.rules.hold(channel, held)

    def restart_channel(self, channel: int, level: float) -> None:
        """Start one channel's envelope afresh (after its input came back)."""
        self.envelope.restart_channel(channel)

    def pop_notes(self) -> list[RestNote]:
        """The rest-level notes since the last call (then forgotten)."""
        return self.rules.pop_notes()

    @property
    def active(self) -> np.ndarray:
        """Which channels are active now."""
        return self.rules.active


class TkeoDetector(ThresholdDetector):
    """``kind = "tkeo"``: Teager-Kaiser energy conditioning, then the threshold rules.

    The filtered EMG is band-limited to ``band_hz`` and goes through the Teager-Kaiser
    energy operator ``psi[n] = x[n]**2 - x[n-1] * x[n+1]`` (evaluated one sample late to
    stay causal), is rectified and low-pass filtered (``[envelope] cutoff_hz``), and the
    result is thresholded at rest mean + ``k_on`` x rest SD with the same minimum
    on-time, hysteresis, refractory time and adaptive noise floor as
    :class:`ThresholdDetector` (Li, Zhou & Aruin 2007; Solnik et al. 2010). The operator
    weights each sample by its instantaneous frequency as well as its amplitude, so
    motor-unit action potentials stand out against low-frequency background noise.

    Defaults that differ from the threshold detector's: ``band_hz = (30, 300)`` and
    ``k_on = 10``. The operator weights each component by its frequency squared, so
    broadband amplifier noise above the EMG band would dominate its output: band-limiting
    before the operator, as the TKEO conditioning studies do, matters more here than for
    the RMS envelope (at 0 dB on the simulated patient, 30-450 Hz found no attempt,
    30-300 Hz some). The TKEO output at rest is far from Gaussian, with a long upper
    tail, so more SDs are needed for the same false-detection rate (the papers compare
    several multiples of the baseline SD). ``k_on = 10``, the 300 Hz band edge and the
    low-pass ``cutoff_hz = 20`` (the library default; 50 Hz re-triggered within attempts)
    were chosen with ``closedloop evaluate`` on the simulated patient, not taken from a
    paper.
    """

    kind = "tkeo"
    settings_type = TkeoSettings
    statistic_info = Statistic("TKEO energy", EMG_SQUARED, "tkeo")

    def __init__(self, settings: TkeoSettings, fs: float, channels: Sequence[str],
                 calibrations: Sequence[Calibration | None] | None = None, *,
                 envelope: EnvelopeSettings | None = None) -> None:
        envelope = replace(envelope or EnvelopeSettings(), kind="tkeo")
        super().__init__(settings, fs, channels, calibrations, envelope=envelope)
        band = FilterSettings(bandpass_hz=settings.band_hz, notch_hz=0.0)
        self.band = FilterBank(band, self.fs, len(self.channels))

    def condition(self, filtered: np.ndarray) -> np.ndarray:
        """The statistic: TKEO of the filtered EMG, then its envelope (a new array)."""
        x = np.array(filtered, dtype=np.float64, order="C")  # the caller's stays intact
        return self.envelope.process_inplace(self.band.process_inplace(x))

    def restart_channel(self, channel: int, level: float) -> None:
        """Start one channel's conditioning afresh (after its input came back)."""
        super().restart_channel(channel, level)
        self.band.restart_channel(channel, 0.0)  # it sees the filtered EMG: zero-mean
