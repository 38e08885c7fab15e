"""Absolute stimulation ceilings: values no configuration can exceed.

These are the outermost fence. Every :class:`~closedloop.config.stimulation.ChannelLimits`
and :class:`~closedloop.config.stimulation.StimParams` is checked against them when it is
built (so a config asking for more is rejected at load time), and the safety guard
checks them again on every command (defence in depth). They are deliberately
conservative: a clinic that needs more must change this file in a reviewed commit, not
a config.

Sources
-------
[IEC] IEC 60601-2-10:2012 (+A1:2016), *Medical electrical equipment - Part 2-10:
      Particular requirements for the basic safety and essential performance of nerve
      and muscle stimulators*: pulse energy <= 300 mJ into a 500 ohm load; peak output
      voltage <= 500 V open circuit; the instructions must point out that electrode
      current densities above 2 mA r.m.s./cm2 need the operator's special attention.
[RS2] HASOMED RehaStim2 (ScienceMode2) device range: current 0-130 mA, pulse width
      20-500 us, 8 channels.
[FES] Typical surface FES / NMES ranges for the upper limb after stroke: 20-50 Hz,
      200-400 us, 10-60 mA, contraction 3-10 s with rest at least as long (e.g.
      Doucet, Lam & Griffin 2012, Yale J Biol Med 85:201-215; Sheffler & Chae 2007,
      Muscle Nerve 35:562-590; Popovic, Keller et al. 2001, IEEE Eng Med Biol Mag
      20(1):82-93).

The numbers below are *project policy* derived from those sources, each set below the
device range and at or near the upper end of the clinical range. Where a number is a
policy choice rather than a figure from a standard, the comment says so.
"""

from __future__ import annotations

#: Stimulator channels are numbered 1..N_CHANNELS. [RS2] has 8 channels.
N_CHANNELS: int = 8

#: Highest current amplitude (mA) any command may carry. [RS2] allows 130 mA; upper
#: limb surface FES rarely needs more than 60 mA [FES]. Policy: 100 mA.
MAX_CURRENT_MA: float = 100.0

#: Pulse width range (us). [RS2] range 20-500 us; 500 us is also the top of the
#: clinical range [FES].
MIN_PULSE_WIDTH_US: float = 20.0
MAX_PULSE_WIDTH_US: float = 500.0

#: Pulse frequency range (Hz). Tetanic contraction needs about 20 Hz; above 50 Hz
#: fatigue grows quickly [FES]. Policy: 1-100 Hz.
MIN_FREQUENCY_HZ: float = 1.0
MAX_FREQUENCY_HZ: float = 100.0

#: Charge per phase (uC = mA x us / 1000). No standard gives a charge limit for
#: surface electrodes; 30 uC is policy, above every parameter set in [FES]
#: (60 mA x 400 us = 24 uC) and well below the device maximum (130 mA x 500 us = 65 uC).
MAX_CHARGE_PER_PHASE_UC: float = 30.0

#: Largest allowed current increase between two consecutive commands of one channel
#: (mA). Policy: 5 mA; ramps of 1-2 mA per 50 ms are usual for comfort [FES].
MAX_STEP_MA: float = 5.0

#: Longest continuous stimulation of one channel (s). FES contractions last 3-10 s
#: [FES]; policy: 30 s.
MAX_ON_TIME_S: float = 30.0

#: Shortest rest a channel must get after it was switched off (s), a floor that no
#: config may go below. Policy: 1 s (fatigue and skin recovery; [FES] duty cycles use
#: rest >= on-time).
MIN_REST_FLOOR_S: float = 1.0

#: Largest session dose per channel: cumulative on-time (s). Sessions of 30-60 min of
#: therapy with a duty cycle of at most 50 % [FES]. Policy: 3600 s of stimulation.
MAX_SESSION_DOSE_S: float = 3600.0

#: Largest session dose per channel as delivered charge (mC, one phase per pulse).
#: Policy: 3000 mC (40 mA x 300 us x 35 Hz for 1800 s is about 760 mC).
MAX_SESSION_CHARGE_MC: float = 3000.0

#: [IEC] pulse energy limit and the load it is specified into.
IEC_MAX_PULSE_ENERGY_MJ: float = 300.0
IEC_PULSE_ENERGY_LOAD_OHM: float = 500.0

#: [IEC] current density (r.m.s.) above which the operator must pay special attention.
IEC_ATTENTION_CURRENT_DENSITY_MA_CM2: float = 2.0


def pulse_energy_mj(current_ma: float, pulse_width_us: float, load_ohm: float) -> float:
    """Energy of one rectangular phase into a resistive load, in mJ (I^2 R t)."""
    return (current_ma / 1000.0) ** 2 * load_ohm * (pulse_width_us * 1e-6) * 1000.0


def rms_current_ma(current_ma: float, pulse_width_us: float, frequency_hz: float) -> float:
    """R.m.s. current (mA) of a symmetric biphasic pulse train (two phases per pulse)."""
    duty = 2.0 * pulse_width_us * 1e-6 * frequency_hz
    return current_ma * min(duty, 1.0) ** 0.5
