"""What the Hasomed P24 (ScienceMode4, mid level) takes and answers, as pure functions.

The numbers a driver needs before anything is sent: the device's ranges and steps, how a
level is rounded to them (never above what the safety guard approved), the result codes
and what a clinician should check for each. Nothing here does I/O or imports the
``science-mode-4`` library (an optional extra); :mod:`closedloop.stim.drivers.p24` is the device
edge that uses it, and ``tests/emulators/p24.py`` is written from the same documents
independently of both.

Sources
-------
[IFU]  HASOMED, *P24 Science & P24 Module, Instructions for use* v1.1 (2023-01-25),
       chapters "ScienceMode" (packet structure, tables 1-27) and "Technical
       specification"; published in github.com/ScienceMode/ScienceMode4_P24.
[CLIB] HASOMED, ScienceMode4 C library (github.com/ScienceMode/ScienceMode4_c_library):
       ``smpt_definitions_data_types.h`` (command numbers, ``Smpt_Result``),
       ``smpt_ml_definitions_data_types.h`` (mid-level types), ``smpt_ml_packet_utils.c``
       (Ml_update encoding), ``smpt_ml_packet_validity.c`` and ``smpt_ll_packet_validity.c``
       (ranges), ``test_ml_examples.c`` (the biphasic pulse of Hasomed's own example).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from closedloop.errors import StimulatorError

#: Stimulation channels [IFU technical specification]; channels 1-4 are on the yellow
#: electrode cable, 5-8 on the green one [IFU delivered items].
N_CHANNELS = 8
#: Output current 0-130 mA at 1 kOhm [IFU]; a point's current is coded in 0.5 mA steps
#: as ``2 x I + 300`` in 10 bits [IFU table 15]; [CLIB] refuses |I| > 130 mA.
CURRENT_MAX_MA = 130.0
CURRENT_STEP_MA = 0.5
#: One point lasts 0..4095 us [IFU table 15]; a pulse is 10-65520 us [IFU].
POINT_MAX_US = 4095
PULSE_WIDTH_MIN_US = 10
#: The mid-level period ("impulse repetition period") is coded as ``2 x period_ms`` in
#: 15 bits, 1..32767, with the accuracy flag 0 [IFU table 22, CLIB]: 0.5 ms steps from
#: 0.5 ms; [CLIB] refuses periods above 16383 ms.
PERIOD_STEP_MS = 0.5
PERIOD_MIN_MS = 0.5
PERIOD_MAX_MS = 16383.0
FREQUENCY_MAX_HZ = 1000.0 / PERIOD_MIN_MS
FREQUENCY_MIN_HZ = 1000.0 / PERIOD_MAX_MS
#: Pause between the two phases of the biphasic pulse, as in Hasomed's mid-level example
#: (+I for the pulse width, 0 for 100 us, -I for the pulse width) [CLIB test_ml_examples.c].
INTERPHASE_US = 100
#: Time the firmware needs per pulse beyond its points (mute 40 us + reserve 20 us), and
#: the limit on the sum over enabled channels of pulse time per second [CLIB
#: ``check_parameters`` in smpt_ml_packet_validity.c].
PULSE_OVERHEAD_US = 60
DUTY_LIMIT_MS_PER_S = 1000.0
#: "The stimulation has an automatic timeout of 2 s": without Ml_update or
#: Ml_get_current_data for that long the device stops stimulating [IFU, Mid-Level Update].
KEEPALIVE_TIMEOUT_S = 2.0
#: Serial settings [IFU table 1] (a USB CDC port: the line settings do not limit speed).
BAUDRATE = 3_000_000
#: Commands that switch the 150 V supply take this long to execute before they are
#: answered [CLIB ``smpt_ml_client.h``: Ml_init "execution duration 2 x 40 ms", Ml_stop
#: 40 ms; ``smpt_ll_client.h``: Ll_init and Ll_stop 40 ms]; a driver's wait for the
#: answer counts its response time on top.
EXECUTION_S = {"Ml_init": 0.08, "Ml_stop": 0.04, "Ll_init": 0.04, "Ll_stop": 0.04}
#: Result "transfer error" [IFU table 27]: the packet's checksum or length did not match,
#: so the device did not execute it; the command is sent again, at most
#: :data:`TRANSFER_ATTEMPTS` times in all.
RESULT_TRANSFER_ERROR = 1
TRANSFER_ATTEMPTS = 3

#: ``Ml_get_current_data`` data selection 4: all errors of all channels [IFU table 25].
DATA_SELECTION_ALL_CHANNELS = 4

#: Result and error codes [IFU table 27, CLIB Smpt_Result]: meaning, and what to check.
RESULTS: dict[int, tuple[str, str]] = {
    0: ("no error", ""),
    1: ("transfer error: the checksum or length of a packet did not match",
        "check the USB cable and that no other program uses the port"),
    2: ("parameter error: a value was out of range or parameters were missing",
        "the driver checks every range before sending: report this as a bug"),
    3: ("protocol error: this protocol version is not supported",
        "update the P24 firmware or closedloop"),
    4: ("internal stimulation timeout of the device",
        "switch the P24 off and on (unplug its USB cable)"),
    7: ("not initialised: the mid level is not initialised or another level is",
        "the P24 may have restarted (a USB port that cannot deliver 2.4 A restarts it): "
        "use another USB port and reconnect"),
    8: ("high-voltage fault: the 150 V stimulation supply failed",
        "unplug the P24, plug it into a USB port that delivers 2.4 A and try again; if it "
        "persists, contact HASOMED"),
    10: ("electrode error: one or both electrodes are not sufficiently connected to the skin",
         "clean and dry the skin and replace the electrodes, when that is not sufficient "
         "use new ones; check that the electrode cable is plugged in"),
    11: ("unknown or invalid command", "update the P24 firmware or closedloop"),
    16: ("pulse timeout: the pulse could not be executed in its time frame",
         "reduce the frequency or the pulse width"),
    21: ("busy", "wait and retry"),
    28: ("pulse low current: the measured current is lower than set",
         "check the electrodes (skin resistance too high for this current), or reduce the "
         "current or the pulse width"),
}
#: Codes of the other ``Smpt_Result`` values (EMG, demultiplexer, file and boot-loader
#: errors of other ScienceMode4 devices) [CLIB]; a P24 is not expected to answer them.
OTHER_RESULTS: dict[int, str] = {
    5: "EMG timeout", 6: "EMG register error", 9: "demultiplexer timeout",
    12: "demultiplexer parameter error", 13: "demultiplexer not initialised",
    14: "demultiplexer transfer error", 15: "demultiplexer unknown acknowledge",
    17: "fuel gauge error", 18: "live signal error", 19: "file transmission timeout",
    20: "file not found", 22: "file error", 23: "flash erase error", 24: "flash write error",
    25: "unknown controller error", 26: "firmware too large", 27: "fuel gauge not programmed",
}
#: Per-channel state in Ml_get_current_data_ack [IFU table 26] -> its result code.
CHANNEL_STATE_RESULT = {0: 0, 1: 10, 2: 16, 3: 28}

#: GetStimStatus: stimulation status [IFU table 7].
STIM_STATUS = {0: "no level initialised", 1: "low level initialised",
               2: "mid level initialised", 3: "mid level running"}


def result_meaning(code: int) -> str:
    """What a result code means, with what to check (``10`` -> ``"electrode error: ..."``)."""
    if code in RESULTS:
        meaning, check = RESULTS[code]
        return f"{meaning}; {check}" if check else meaning
    if code in OTHER_RESULTS:
        return f"{OTHER_RESULTS[code]} (not expected from a P24)"
    return f"unknown result code {code}"


def cable(channel: int) -> str:
    """Which electrode cable a channel is on: ``"yellow cable"`` (1-4) or ``"green cable"``."""
    return "yellow cable" if channel <= 4 else "green cable"


def period_ms(frequency_hz: float) -> float:
    """The period the P24 runs for a frequency: ``1000 / f`` rounded *up* to 0.5 ms, so the
    device never pulses faster than asked (35 Hz -> 29 ms -> 34.48 Hz).

    Raises
    ------
    StimulatorError
        If the frequency is not finite or outside 1000/16383 .. 2000 Hz.
    """
    if not FREQUENCY_MIN_HZ <= frequency_hz <= FREQUENCY_MAX_HZ:  # False for NaN
        raise StimulatorError(
            f"stimulation frequency {frequency_hz:g} Hz is outside the P24's range "
            f"{FREQUENCY_MIN_HZ:.4f}..{FREQUENCY_MAX_HZ:g} Hz"
        )
    steps = math.ceil(1000.0 / frequency_hz / PERIOD_STEP_MS - 1e-9)
    return min(max(steps, 1) * PERIOD_STEP_MS, PERIOD_MAX_MS)


def period_code(period: float) -> int:
    """The 15-bit code of a period (``2 x period_ms``, accuracy flag 0), checked: a period
    the field cannot hold is refused, never wrapped.

    Raises
    ------
    StimulatorError
        If the period is not a multiple of 0.5 ms in 0.5..16383 ms.
    """
    code = period / PERIOD_STEP_MS
    if not (PERIOD_MIN_MS <= period <= PERIOD_MAX_MS and abs(code - round(code)) < 1e-9):
        raise StimulatorError(
            f"period {period!r} ms is not a multiple of {PERIOD_STEP_MS} ms in "
            f"{PERIOD_MIN_MS}..{PERIOD_MAX_MS:g} ms"
        )
    return round(code)


@dataclass(frozen=True)
class Pulse:
    """One channel's mid-level setting as the device will run it (quantised).

    ``current_ma`` is a multiple of 0.5 mA, ``pulse_width_us`` a whole number of us per
    phase, ``period_ms`` a multiple of 0.5 ms. The pulse is biphasic and charge balanced:
    +current for the pulse width, 0 for :data:`INTERPHASE_US`, -current for the pulse width.
    """

    current_ma: float
    pulse_width_us: int
    period_ms: float

    @property
    def frequency_hz(self) -> float:
        """The rate the device pulses at."""
        return 1000.0 / self.period_ms

    @property
    def points(self) -> tuple[tuple[int, float], ...]:
        """The pulse as (duration us, current mA) points."""
        return ((self.pulse_width_us, self.current_ma), (INTERPHASE_US, 0.0),
                (self.pulse_width_us, -self.current_ma))

    @property
    def busy_us(self) -> int:
        """Time the firmware spends on one pulse (points plus overhead), us."""
        return 2 * self.pulse_width_us + INTERPHASE_US + PULSE_OVERHEAD_US


def quantise(channel: int, current_ma: float, pulse_width_us: float,
             frequency_hz: float) -> Pulse | None:
    """The setting the P24 will be sent for a level, or None for off.

    Current is rounded *down* to 0.5 mA and the pulse width down to 1 us (never more
    than approved), the period up to 0.5 ms (never faster).

    Raises
    ------
    StimulatorError
        For values the device would refuse or change: not finite, negative current,
        above 130 mA, a pulse width outside 10..4095 us, a frequency out of range, or a
        pulse that does not fit in its period.
    """
    values = (current_ma, pulse_width_us, frequency_hz)
    if not all(math.isfinite(v) for v in values) or current_ma < 0:
        raise StimulatorError(f"channel {channel}: invalid stimulation values {values}")
    current = math.floor(current_ma / CURRENT_STEP_MA + 1e-6) * CURRENT_STEP_MA
    if current <= 0:
        return None
    if current > CURRENT_MAX_MA:
        raise StimulatorError(f"current {current_ma:g} mA on channel {channel} is above the "
                              f"P24's maximum {CURRENT_MAX_MA:g} mA")
    pw = math.floor(pulse_width_us + 1e-6)
    if not PULSE_WIDTH_MIN_US <= pw <= POINT_MAX_US:
        raise StimulatorError(f"pulse width {pulse_width_us:g} us on channel {channel} is "
                              f"outside the P24's range {PULSE_WIDTH_MIN_US}..{POINT_MAX_US} us")
    pulse = Pulse(current, pw, period_ms(frequency_hz))
    if pulse.busy_us > 1000.0 * pulse.period_ms:
        raise StimulatorError(
            f"channel {channel}: a {pw} us biphasic pulse ({pulse.busy_us} us with the pause "
            f"and the device's overhead) does not fit in the {pulse.period_ms:g} ms period of "
            f"{frequency_hz:g} Hz; lower the frequency or the pulse width")
    return pulse


def check_duty(pulses: dict[int, Pulse]) -> None:
    """Refuse settings whose pulses together take a second or more per second (the
    device cannot run them: [CLIB] ``check_parameters``).

    Raises
    ------
    StimulatorError
        Naming the channels and their share.
    """
    total = sum(p.busy_us / p.period_ms for p in pulses.values())  # ms of pulses per s
    if math.ceil(total) >= DUTY_LIMIT_MS_PER_S:
        shares = ", ".join(f"channel {ch}: {p.busy_us / p.period_ms:.0f} ms/s"
                           for ch, p in sorted(pulses.items()))
        raise StimulatorError(f"the P24 cannot run these channels together: their pulses take "
                              f"{total:.0f} ms per second ({shares}); at most "
                              f"{DUTY_LIMIT_MS_PER_S:g}")
