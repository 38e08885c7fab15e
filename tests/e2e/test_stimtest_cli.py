"""``closedloop stim-test`` end to end: sim, and a RehaStim2 emulator on a real pty."""

import threading
from types import SimpleNamespace

import pytest

from closedloop.cli import main
from closedloop.commands.stim_test import main as stimtest_main
from tests.emulators.rehastim2 import RehaStim2Emulator

CONFIG = "configs/biceps_triceps.toml"


def _args(**kw):
    base = dict(
        config=CONFIG,
        stimulator="sim",
        muscle="biceps",
        current=10.0,
        pulse_width=None,
        frequency=None,
        duration=0.2,
        confirm_checklist=False,
    )
    base.update(kw)
    return SimpleNamespace(**base)


def test_sim_test_train_completes_and_ends_off(capsys):
    assert stimtest_main(_args()) == 0
    out = capsys.readouterr().out
    assert "peak 10 mA" in out and "completed" in out and "all channels off" in out


@pytest.mark.parametrize(
    "extra, why",
    [
        (["--current", "41"], "40 mA"),
        (["--current", "10", "--pulse-width", "450"], "400"),
        (["--current", "10", "--frequency", "80"], "50"),
        (["--muscle", "deltoid", "--current", "5"], "deltoid"),
        (["--current", "5", "--stimulator", "none"], "stim-test needs a stimulator"),
    ],
)
def test_beyond_the_limits_is_refused_before_anything_is_sent(extra, why, capsys):
    argv = ["stim-test", "--config", CONFIG, "--stimulator", "sim"]
    if "--muscle" not in extra:
        argv += ["--muscle", "biceps"]
    assert main(argv + extra) != 0
    err = capsys.readouterr().err
    assert why in err


@pytest.mark.timeout(60)
def test_rehastim2_emulator_sees_the_ramp_and_all_off():
    emu = RehaStim2Emulator(init_interval_s=0.1)
    emu.start()
    try:
        rc = stimtest_main(
            _args(stimulator=f"rehastim2:{emu.path}", current=8.0, confirm_checklist=True)
        )
        assert rc == 0
        starts = [r for r in emu.received if r.name == "StartChannelListMode"]
        assert len(starts) >= 4  # ramp steps, not one jump
        currents = [r.data[3] for r in starts]  # channel 1: mode, pw msb, pw lsb, current
        assert max(currents) == 8
        steps = [b - a for a, b in zip(currents, currents[1:], strict=False)]
        assert max(steps) <= 2  # max_step_ma = 2
        assert not emu.running_channels
        assert emu.violations == []
    finally:
        emu.stop()


def test_real_stimulator_needs_the_checklist(capsys):
    emu = RehaStim2Emulator(init_interval_s=0.1)
    emu.start()
    try:
        assert (
            main(
                [
                    "stim-test",
                    "--config",
                    CONFIG,
                    "--stimulator",
                    f"rehastim2:{emu.path}",
                    "--muscle",
                    "biceps",
                    "--current",
                    "5",
                ]
            )
            != 0
        )
        assert "checklist" in capsys.readouterr().err
        assert not [r for r in emu.received if r.name == "StartChannelListMode"]
    finally:
        emu.stop()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("when", "busy", "code"), [
    ("opening", 3, 0), ("stimulating", 3, 0), ("stimulating", None, 5),
])
def test_a_busy_device_is_retried_and_one_that_stays_busy_ends_all_off(when, busy, code,
                                                                        capsys):
    """Three busy answers: sent again, the test train completes. Busy for good while
    stimulating: exit 5 (a device fault), a message saying what to do, all channels off."""
    emu = RehaStim2Emulator(init_interval_s=0.1)
    emu.start()
    injector = None
    try:
        if when == "opening":
            emu.answer_busy(busy)  # the first commands: the mode check after the handshake
        else:
            def inject() -> None:
                if emu.wait_until(lambda e: bool(e.running_channels), 20.0):
                    emu.answer_busy(busy)

            injector = threading.Thread(target=inject, daemon=True)
            injector.start()
        rc = stimtest_main(
            _args(stimulator=f"rehastim2:{emu.path}", current=8.0, confirm_checklist=True)
        )
        captured = capsys.readouterr()
        assert rc == code, captured.out + captured.err
        if busy is None:
            assert "answered busy (-8) to StartChannelListMode" in captured.err
            assert "switch the stimulator off and on" in captured.err
            assert "all channels off" in captured.out and "NOT CONFIRMED" not in captured.out
            assert emu.watchdog_expiries == 0  # the stop came from stim-test
        else:
            assert "completed; all channels off" in captured.out
            assert emu.busy_answers == busy
            executed = [r.data[3] for r in emu.received
                        if r.name == "StartChannelListMode" and r.result == 0]
            assert executed == [2, 4, 6, 8, 6, 4, 2]  # every step once, in order
        assert not emu.running_channels
        assert emu.violations == []
    finally:
        emu.stop()
        if injector is not None:
            injector.join(timeout=5)
