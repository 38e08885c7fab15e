"""``closedloop stim-test``: a short guarded test train to check electrodes and find a
comfortable current.

It ramps up in guard-limited steps, holds, ramps down, refuses anything beyond the
config's limits for that muscle with a clear message before sending anything, and ends
with all channels off (also on error and Ctrl-C). A real stimulator needs the safety
checklist first (terminal, or ``--confirm-checklist``), as for ``closedloop run``.
"""

from __future__ import annotations

import sys

from closedloop.config import load_config
from closedloop.errors import ConfigError, SafetyError
from closedloop.runtime.devices import make_stimulator, stimulated_muscles
from closedloop.stim.drivers.sim import SimStimulator
from closedloop.stim.guard import SafetyGuard
from closedloop.stim.stimtest import run_stim_test


def main(args) -> int:
    config = load_config(args.config)
    if not config.stimulates:
        raise ConfigError(f"{config.path}: has no [protocol]; stim-test needs a stimulation config")
    muscles = stimulated_muscles(config)
    if args.muscle not in muscles:
        raise ConfigError(
            f"{config.path}: muscle {args.muscle!r} has no stimulation settings; "
            f"stimulated muscles: {', '.join(muscles)}"
        )
    m = muscles[args.muscle]
    pw = args.pulse_width if args.pulse_width is not None else m.stim.pulse_width_us
    freq = args.frequency if args.frequency is not None else m.stim.frequency_hz
    stimulator = make_stimulator(config, args.stimulator)
    session = getattr(stimulator, "session", None)  # a stimulator that publishes (lsl)
    if session is not None:
        print(f"stim-test: session {session.name} (follow it with closedloop stim-receiver "
              f"--session {session.name})", file=sys.stderr, flush=True)
    if not isinstance(stimulator, SimStimulator):
        from closedloop.runtime.checklist import ask_checklist

        if not args.confirm_checklist:
            if not sys.stdin.isatty():
                raise SafetyError(
                    "the safety checklist must be confirmed before stimulating a patient: "
                    "answer it in a terminal, or pass --confirm-checklist once checked"
                )
            ask_checklist()
    guard = SafetyGuard.from_muscles(muscles, config.safety, 1000.0, protocol=config.protocol)
    with stimulator:
        summary = run_stim_test(
            stimulator,
            guard,
            m.name,
            m.stim.channel,
            m.limits,
            args.current,
            pw,
            freq,
            args.duration,
        )
    print(
        f"stim-test {summary.muscle} (channel {summary.channel}): "
        f"peak {summary.peak_current_ma:g} mA "
        f"at {summary.pulse_width_us:g} us, {summary.frequency_hz:g} Hz; {summary.n_commands} "
        f"commands; {'completed' if summary.completed else 'NOT completed'}; all channels off"
    )
    for v in summary.violations:
        print(f"  guard: {v.message}")
    return 0 if summary.completed else 1
