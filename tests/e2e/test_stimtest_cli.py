"""``closedloop stim-test`` end to end: sim, and a RehaStim2 emulator on a real pty."""

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
