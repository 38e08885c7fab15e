"""A short, guarded test pulse train on one channel (electrode check, comfort level).

:func:`run_stim_test` checks every requested value against the channel's limits
*before* anything is sent, then ramps the current up in steps no larger than
``max_step_ma``, holds it for ``duration_s``, ramps it down, and always ends with every
channel off (``try/finally``: on error, on a guard stop, on a stop request such as a
signal, which it waits on between commands). Every command still passes the safety
guard.

Timing: commands are placed on a virtual sample clock (the guard's, starting at its
next free sample, or later if the channel still needs rest) and sent when their time
comes on the injected ``clock``: the loop sleeps until each command is due, computed
from the start, so sleeps do not add up to drift.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from closedloop.config import ceilings
from closedloop.config.stimulation import ChannelLimits
from closedloop.errors import ConfigError, SafetyError
from closedloop.stim.base import Stimulator
from closedloop.stim.commands import StimCommand
from closedloop.stim.guard import SafetyGuard, Violation


class StopSignal(Protocol):
    """What :func:`run_stim_test` needs of a stop request
    (:class:`closedloop.runtime.outcome.StopRequest` is one)."""

    @property
    def reason(self) -> str:
        """Why a stop was requested."""

    def is_set(self) -> bool:
        """Whether a stop was requested."""

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for a request; True when one was made."""


@dataclass(frozen=True)
class StimTestSummary:
    """What a stim test did.

    Parameters
    ----------
    muscle : str
    channel : int
    current_ma, pulse_width_us, frequency_hz, duration_s : float
        What was asked (``duration_s``: the hold at full current, ramps excluded).
    peak_current_ma : float
        Highest current actually sent (after the guard).
    n_commands : int
        Commands handed to the stimulator (the final all-off not counted).
    completed : bool
        True when the whole ramp-hold-ramp was sent.
    violations : tuple of Violation
        Every intervention of the guard during the test.
    start_sample, end_sample : int
        Virtual sample clock span of the test.
    stopped : str
        The stop request's reason when one ended the test early ("" otherwise).
    off_wall : float
        ``time.perf_counter()`` when the final all-off was confirmed by the driver.
    """

    muscle: str
    channel: int
    current_ma: float
    pulse_width_us: float
    frequency_hz: float
    duration_s: float
    peak_current_ma: float
    n_commands: int
    completed: bool
    violations: tuple[Violation, ...]
    start_sample: int
    end_sample: int
    stopped: str = ""
    off_wall: float = math.nan


def _check(
    guard: SafetyGuard, muscle: str, stim_channel: int, limits: ChannelLimits,
    current_ma: float, pulse_width_us: float, frequency_hz: float, duration_s: float,
    step_s: float,
) -> int:
    """Refuse before sending anything; return the number of ramp steps."""
    for key, value in (("current_ma", current_ma), ("pulse_width_us", pulse_width_us),
                       ("frequency_hz", frequency_hz), ("duration_s", duration_s),
                       ("step_s", step_s)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ConfigError(f"stim test: {key} = {value!r} must be a positive number")
    try:
        known = guard.channel_of(muscle)
    except KeyError as exc:
        raise ConfigError(f"stim test: {exc.args[0]}") from None
    if known != stim_channel:
        raise ConfigError(
            f"stim test: muscle {muscle!r} is on stimulator channel {known} in the config, "
            f"not {stim_channel}; pick the channel the config names"
        )
    if guard.stop_violation is not None:
        raise SafetyError(f"stim test: the safety guard has stopped stimulation "
                          f"({guard.stop_violation.message}); start a new session")
    for what, value, limit, ceiling, unit in (
        ("current", current_ma, limits.max_current_ma, ceilings.MAX_CURRENT_MA, "mA"),
        ("pulse width", pulse_width_us, limits.max_pulse_width_us,
         ceilings.MAX_PULSE_WIDTH_US, "us"),
        ("frequency", frequency_hz, limits.max_frequency_hz, ceilings.MAX_FREQUENCY_HZ, "Hz"),
        ("charge per phase", current_ma * pulse_width_us / 1000.0, limits.max_charge_uc,
         ceilings.MAX_CHARGE_PER_PHASE_UC, "uC"),
    ):
        allowed = min(limit, ceiling)
        if value > allowed * (1 + 1e-9):
            raise SafetyError(
                f"stim test on {muscle} (channel {stim_channel}): {what} {value:g} {unit} is "
                f"above the channel limit of {allowed:g} {unit}; nothing was sent"
            )
    n = max(1, math.ceil(current_ma / limits.max_step_ma - 1e-9))
    on_s = 2 * (n - 1) * step_s + duration_s
    if on_s > limits.max_on_time_s + 1e-9:
        raise SafetyError(
            f"stim test on {muscle}: ramps ({n - 1} steps of {step_s:g} s each way) plus "
            f"duration_s = {duration_s:g} s make {on_s:g} s, above max_on_time_s = "
            f"{limits.max_on_time_s:g} s; use duration_s <= "
            f"{max(0.0, limits.max_on_time_s - 2 * (n - 1) * step_s):g}; nothing was sent"
        )
    return n


def run_stim_test(
    stimulator: Stimulator,
    guard: SafetyGuard,
    muscle: str,
    stim_channel: int,
    limits: ChannelLimits,
    current_ma: float,
    pulse_width_us: float,
    frequency_hz: float,
    duration_s: float,
    *,
    step_s: float = 0.05,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    stop: StopSignal | None = None,
) -> StimTestSummary:
    """Send a guarded ramp-hold-ramp test train on one channel; always end all-off.

    Parameters
    ----------
    stimulator : Stimulator
        An open driver.
    guard : SafetyGuard
        The session's guard (it must know ``muscle`` on ``stim_channel``). Its pending
        violations are consumed (they are returned in the summary).
    muscle : str
    stim_channel : int
    limits : ChannelLimits
        The channel's limits; the request is checked against them before sending.
    current_ma, pulse_width_us, frequency_hz : float
        Test level.
    duration_s : float
        Hold time at full current (ramps come on top).
    step_s : float
        Interval between ramp steps (each at most ``limits.max_step_ma``).
    sleep, clock : callable
        Injected for tests (inject both): ``sleep(seconds)`` and a monotonic ``clock()``
        in seconds; commands are stamped with ``clock()`` as their stream time.
    stop : StopSignal, optional
        A stop request (Ctrl-C, SIGTERM, SIGHUP, SIGQUIT): the test waits on it instead
        of sleeping, and once it is set sends nothing more but the all-off
        (``completed`` False, ``stopped`` its reason).

    Returns
    -------
    StimTestSummary

    Raises
    ------
    ConfigError
        A value is not a positive number, or the muscle/channel do not match the config.
    SafetyError
        A value is above the channel's limits or a ceiling, the train would exceed
        ``max_on_time_s`` (both before anything is sent), or the guard stopped the test.
    """
    n = _check(guard, muscle, stim_channel, limits, current_ma, pulse_width_us,
               frequency_hz, duration_s, step_s)
    fs = guard.fs
    d = max(1, int(round(step_s * fs)))
    hold = max(1, int(round(duration_s * fs)))
    first = guard.next_sample
    start = guard.rest_until(muscle)
    plan = [(start + (k - 1) * d, current_ma * k / n) for k in range(1, n + 1)]
    down = start + (n - 1) * d + hold
    plan += [(down + (j - 1) * d, current_ma * (n - j) / n) for j in range(1, n + 1)]

    t0 = clock()
    violations: list[Violation] = []
    peak = 0.0
    sent = 0
    last = first
    completed = False
    stopped = ""
    off_wall = math.nan
    try:
        for sample, level in plan:
            if _pause(t0 + (sample - first) / fs - clock(), sleep, stop):
                stopped = (stop.reason if stop is not None else "") or "stop"
                break
            cmd = StimCommand(muscle=muscle, channel=stim_channel, current_ma=level,
                              pulse_width_us=pulse_width_us, frequency_hz=frequency_hz,
                              sample=sample, stream_time=clock(), phase="test")
            safe = guard.filter([cmd])
            violations.extend(guard.pop_violations())
            last = sample
            if safe:
                stimulator.apply(safe)
                stimulator.check()
                sent += len(safe)
                peak = max(peak, max(c.current_ma for c in safe))
            if guard.stop_violation is not None:
                raise SafetyError(f"stim test stopped by the safety guard: "
                                  f"{guard.stop_violation.message}")
        completed = not stopped
    finally:
        try:
            stimulator.stop_all()
            off_wall = time.perf_counter()
        finally:
            guard.all_off(last, clock())
            violations.extend(guard.pop_violations())
    return StimTestSummary(
        muscle=muscle, channel=stim_channel, current_ma=current_ma,
        pulse_width_us=pulse_width_us, frequency_hz=frequency_hz, duration_s=duration_s,
        peak_current_ma=peak, n_commands=sent, completed=completed,
        violations=tuple(violations), start_sample=start, end_sample=last,
        stopped=stopped, off_wall=off_wall,
    )


def _pause(seconds: float, sleep: Callable[[float], None], stop: StopSignal | None) -> bool:
    """Wait ``seconds`` (if positive); True when a stop was requested (then at once)."""
    if stop is None:
        if seconds > 0:
            sleep(seconds)
        return False
    return stop.wait(seconds) if seconds > 0 else stop.is_set()
