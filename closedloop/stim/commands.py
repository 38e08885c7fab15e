"""The stimulation command: what one stimulator channel should output from a sample on.

A command is a level, not a pulse: it sets a channel's current, pulse width and
frequency until the next command for that channel. ``current_ma == 0`` means off.
Commands are produced on the sample clock (``sample`` is the index of the EMG sample
whose processing decided it), so live runs and replays produce identical commands.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class StimCommand:
    """One channel's output level, decided at one sample.

    Parameters
    ----------
    muscle : str
        Muscle name from the config (e.g. ``"biceps"``).
    channel : int
        Stimulator channel, 1-based (RehaStim2: 1..8).
    current_ma, pulse_width_us, frequency_hz : float
        Output level. ``current_ma == 0`` switches the channel off.
    sample : int
        0-based index of the EMG sample that caused this command (sample clock).
    stream_time : float
        Stream timestamp of that sample, in seconds.
    phase : str
        Why: ``ramp_up``, ``plateau``, ``ramp_down``, ``off``, ``test`` or ``stop``.
    arrival_wall, handed_wall : float
        Wall-clock (``time.perf_counter``) times at which the causing sample arrived and
        at which the command was handed to the driver; NaN when not measured (replay).
        Used only to measure latency, never to decide anything.
    effective_sample : int
        The sample from which the output is taken to run (the live loop: the first
        sample after the block in which the command was decided, where the simulated
        stimulator starts its pulses); artifact blanking uses it, and a replay reuses the
        recorded value. -1 when not set (commands not yet handed over, old recordings).
    delivered_hz : float
        The pulse rate the stimulator really runs at for ``frequency_hz`` (its timer's
        steps: the RehaStim2 rounds the period up to 0.5 ms, so 35 Hz runs at 34.48 Hz),
        set when the command is handed over; NaN when not set (the commanded rate).
        Artifact blanking follows it, so its windows stay on the real pulses.
    """

    muscle: str
    channel: int
    current_ma: float
    pulse_width_us: float
    frequency_hz: float
    sample: int
    stream_time: float
    phase: str
    arrival_wall: float = math.nan
    handed_wall: float = math.nan
    effective_sample: int = -1
    delivered_hz: float = math.nan

    @property
    def pulse_rate_hz(self) -> float:
        """The rate the pulses really come at: :attr:`delivered_hz`, else the commanded."""
        return self.delivered_hz if math.isfinite(self.delivered_hz) else self.frequency_hz

    @property
    def is_on(self) -> bool:
        """True when the command asks for any current."""
        return self.current_ma > 0.0

    @property
    def charge_uc(self) -> float:
        """Charge per phase in microcoulombs (mA x us / 1000)."""
        return self.current_ma * self.pulse_width_us / 1000.0

    def off(self, phase: str = "off") -> StimCommand:
        """The same channel switched off, decided at the same sample."""
        return replace(self, current_ma=0.0, phase=phase)

    def decision_key(self) -> tuple:
        """The fields that replay compares (not the wall-clock latency stamps, nor the
        effective sample and the delivered rate, which a replay takes from the
        recording)."""
        return (
            self.muscle,
            self.channel,
            round(self.current_ma, 6),
            round(self.pulse_width_us, 6),
            round(self.frequency_hz, 6),
            self.sample,
            self.phase,
        )
