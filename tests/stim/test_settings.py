"""Stimulation settings: TOML parsing, ceilings at load time, cross-checks."""

from __future__ import annotations

import sys

import pytest

from closedloop.config import ceilings
from closedloop.config.schema import parse_table
from closedloop.config.stimulation import (
    ChannelLimits,
    MuscleStim,
    ProtocolSettings,
    ReciprocalSettings,
    SafetySettings,
    StimParams,
    TrialSettings,
    min_ramp_s,
    validate_stimulation,
)
from closedloop.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

CONFIG = """
name = "biceps_triceps"
[[muscles]]
name = "biceps"
[muscles.stim]
channel = 1
current_ma = 20.0
pulse_width_us = 250.0
frequency_hz = 35.0
ramp_up_s = 0.5
ramp_down_s = 0.5
on_time_s = 5.0
rest_time_s = 5.0
[muscles.limits]
max_current_ma = 40.0
max_pulse_width_us = 400.0
max_frequency_hz = 50.0
max_charge_uc = 16.0
max_on_time_s = 10.0
min_rest_s = 3.0
max_step_ma = 2.0
[[muscles]]
name = "triceps"
[muscles.stim]
channel = 2
current_ma = 15.0
[muscles.limits]
max_current_ma = 30.0
[protocol]
kind = "reciprocal"
agonist = "biceps"
antagonist = "triceps"
co_contraction_gate = true
co_stimulation = false
[protocol.reciprocal]
gap_s = 0.3
[protocol.trials]
n_trials = 5
[safety]
session_dose_s = 1200.0
"""


def table(cls, data: dict, path: str = "", muscles=None):
    """``data`` read as the table ``path`` of test.toml into ``cls`` (``muscles``: the
    config's muscle names, for [protocol])."""
    context = {"muscles": muscles} if muscles is not None else None
    return parse_table(cls, data, source="test.toml", path=path, context=context)


def load(text: str = CONFIG) -> tuple[dict[str, MuscleStim], ProtocolSettings, SafetySettings]:
    """Each table of ``text`` on its own (no rules across tables)."""
    top = tomllib.loads(text)
    muscles = {}
    for i, mt in enumerate(top["muscles"]):
        name = mt["name"]
        stim = table(StimParams, mt["stim"], f"muscles[{i}].stim")
        lim = table(ChannelLimits, mt["limits"], f"muscles[{i}].limits")
        muscles[name] = MuscleStim(name, stim, lim)
    proto = table(ProtocolSettings, top["protocol"], "protocol", muscles=list(muscles))
    safety = table(SafetySettings, top["safety"], "safety")
    return muscles, proto, safety


def test_full_config_parses_and_validates():
    muscles, proto, safety = load()
    b = muscles["biceps"]
    assert b.stim == StimParams(1, 20.0, 250.0, 35.0, 0.5, 0.5, 5.0, 5.0)
    assert b.limits == ChannelLimits(40.0, 400.0, 50.0, 16.0, 10.0, 3.0, 2.0)
    assert b.stim.where == "test.toml: muscles[0].stim"
    t = muscles["triceps"]
    assert t.stim.pulse_width_us == 250.0 and t.stim.frequency_hz == 35.0
    # max_charge_uc defaults to max_current x max_pulse_width (30 mA x 300 us = 9 uC)
    assert t.limits.max_charge_uc == pytest.approx(9.0)
    assert proto.kind == "reciprocal" and proto.antagonist == "triceps"
    assert proto.reciprocal == ReciprocalSettings(0.3)
    assert proto.trials.n_trials == 5 and proto.trials.work_s == TrialSettings().work_s
    assert proto.stimulated == ("biceps", "triceps")
    assert safety == SafetySettings(1200.0, None)
    validate_stimulation(muscles, proto, safety)


def test_stim_params_required_keys_named():
    with pytest.raises(ConfigError, match=r"test.toml: stim.current_ma is missing"):
        table(StimParams, {"channel": 1}, "stim")
    with pytest.raises(ConfigError, match=r"stim.channel is missing"):
        table(StimParams, {"current_ma": 5.0}, "stim")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("current_ma", 150.0),
        ("current_ma", 0.0),
        ("pulse_width_us", 600.0),
        ("pulse_width_us", 10.0),
        ("frequency_hz", 120.0),
        ("on_time_s", 40.0),
        ("rest_time_s", 0.5),
        ("channel", 9),
        ("ramp_up_s", -1.0),
    ],
)
def test_stim_params_out_of_range_names_file_key_value_range(key, value):
    data = {"channel": 1, "current_ma": 20.0, key: value}
    with pytest.raises(ConfigError) as err:
        table(StimParams, data, "muscles[0].stim")
    msg = str(err.value)
    assert f"test.toml: muscles[0].stim.{key}" in msg
    assert repr(value) in msg or repr(float(value)) in msg
    assert "expected" in msg


def test_stim_params_charge_above_ceiling_rejected():
    # 80 mA x 400 us = 32 uC > 30 uC ceiling, although each value is within its ceiling
    with pytest.raises(ConfigError, match="charge per phase.*ceiling"):
        table(StimParams, {"channel": 1, "current_ma": 80.0, "pulse_width_us": 400.0}, "stim")


def test_unknown_keys_rejected():
    with pytest.raises(ConfigError, match="unknown key.*curent_ma"):
        table(StimParams, {"channel": 1, "current_ma": 5.0, "curent_ma": 5})
    with pytest.raises(ConfigError, match="unknown key.*max_curent"):
        table(ChannelLimits, {"max_current_ma": 5.0, "max_curent": 5})
    with pytest.raises(ConfigError, match="unknown key.*dose"):
        table(SafetySettings, {"dose": 5})
    with pytest.raises(ConfigError, match="unknown key.*gap"):
        table(ProtocolSettings, {"agonist": "a", "gap": 1}, muscles=["a"])
    with pytest.raises(ConfigError, match="trials.*unknown key.*work"):
        table(ProtocolSettings, {"agonist": "a", "trials": {"work": 1}}, "protocol",
              muscles=["a"])


def test_limits_defaults_and_ranges():
    lim = table(ChannelLimits, {"max_current_ma": 25.0})
    assert lim == ChannelLimits(25.0, 300.0, 50.0, 7.5, 10.0, 3.0, 2.0)
    big = table(ChannelLimits, {"max_current_ma": 100.0, "max_pulse_width_us": 500.0})
    assert big.max_charge_uc == ceilings.MAX_CHARGE_PER_PHASE_UC
    with pytest.raises(ConfigError, match="limits.max_current_ma is missing"):
        table(ChannelLimits, {}, "limits")
    for key, bad in [
        ("max_current_ma", 101.0),
        ("max_pulse_width_us", 501.0),
        ("max_frequency_hz", 101.0),
        ("max_charge_uc", 31.0),
        ("max_on_time_s", 31.0),
        ("min_rest_s", 0.9),
        ("max_step_ma", 5.5),
    ]:
        data = {"max_current_ma": 20.0, key: bad}
        with pytest.raises(ConfigError, match=f"limits.{key} = {bad!r}"):
            table(ChannelLimits, data, "limits")


def test_direct_construction_cannot_exceed_ceilings():
    with pytest.raises(ConfigError, match="ceiling"):
        ChannelLimits(max_current_ma=200.0)
    with pytest.raises(ConfigError, match="floor"):
        ChannelLimits(max_current_ma=20.0, min_rest_s=0.1)
    with pytest.raises(ConfigError, match="ceiling"):
        StimParams(channel=1, current_ma=20.0, pulse_width_us=900.0)
    with pytest.raises(ConfigError, match="channel"):
        StimParams(channel=0, current_ma=20.0)
    with pytest.raises(ConfigError, match="ceiling"):
        SafetySettings(session_dose_s=7200.0)
    with pytest.raises(ConfigError, match="ceiling"):
        SafetySettings(session_charge_mc=1e6)
    with pytest.raises(ConfigError, match="co_stimulation"):
        ProtocolSettings(agonist="a", reciprocal=ReciprocalSettings(-0.5))


def test_protocol_settings_checks():
    names = ["biceps", "triceps"]
    with pytest.raises(ConfigError, match=r"protocol.agonist = 'bicep'.*one of 'biceps'"):
        table(ProtocolSettings, {"agonist": "bicep"}, "protocol", muscles=names)
    with pytest.raises(ConfigError, match="antagonist.*kind = 'reciprocal' needs"):
        table(ProtocolSettings, {"kind": "reciprocal", "agonist": "biceps"}, muscles=names)
    with pytest.raises(ConfigError, match="co_contraction_gate = true needs"):
        table(ProtocolSettings, {"agonist": "biceps", "co_contraction_gate": True},
              muscles=names)
    with pytest.raises(ConfigError, match="other than the agonist"):
        table(ProtocolSettings, {"agonist": "biceps", "antagonist": "biceps"}, muscles=names)
    with pytest.raises(ConfigError, match="gap_s.*co_stimulation"):
        table(
            ProtocolSettings,
            {"agonist": "biceps", "antagonist": "triceps", "reciprocal": {"gap_s": -0.5}},
            muscles=names,
        )
    ok = table(
        ProtocolSettings,
        {
            "agonist": "biceps",
            "antagonist": "triceps",
            "co_stimulation": True,
            "reciprocal": {"gap_s": -0.5},
        },
        muscles=names,
    )
    assert ok.reciprocal.gap_s == -0.5
    with pytest.raises(ConfigError, match="response_window_s = 12.0"):
        table(
            ProtocolSettings,
            {"agonist": "biceps", "trials": {"work_s": 10.0, "response_window_s": 12.0}},
            "protocol",
            muscles=names,
        )
    with pytest.raises(ConfigError, match="kind = 'assist'.*one of"):
        table(ProtocolSettings, {"agonist": "biceps", "kind": "assist"}, muscles=names)
    assist = table(ProtocolSettings, {"agonist": "biceps"}, muscles=names)
    assert assist.stimulated == ("biceps",)
    trials = table(
        ProtocolSettings,
        {
            "agonist": "biceps",
            "antagonist": "triceps",
            "kind": "cued_trials",
            "trials": {"pattern": "reciprocal"},
        },
        muscles=names,
    )
    assert trials.stimulated == ("biceps", "triceps")


def test_safety_settings():
    assert table(SafetySettings, {}) == SafetySettings(1800.0, None)
    s = table(SafetySettings, {"session_dose_s": 600, "session_charge_mc": 400})
    assert s == SafetySettings(600.0, 400.0)
    with pytest.raises(ConfigError, match="session_dose_s = 4000.0"):
        table(SafetySettings, {"session_dose_s": 4000.0})


def _muscles(**over) -> dict[str, MuscleStim]:
    stim = dict(channel=1, current_ma=20.0)
    stim.update(over.pop("stim", {}))
    lim = dict(max_current_ma=40.0, max_pulse_width_us=400.0)
    lim.update(over.pop("limits", {}))
    out = {
        "biceps": MuscleStim("biceps", StimParams(**stim), ChannelLimits(**lim), "triceps"),
        "triceps": MuscleStim("triceps", StimParams(2, 10.0), ChannelLimits(30.0), "biceps"),
    }
    return out


ASSIST = ProtocolSettings(agonist="biceps", antagonist="triceps")


@pytest.mark.parametrize(
    ("stim", "limits", "match"),
    [
        (
            {"current_ma": 45.0},
            {"max_current_ma": 40.0},
            r"current_ma = 45 mA is above .*max_current_ma = 40 mA",
        ),
        (
            {"pulse_width_us": 350.0},
            {"max_pulse_width_us": 300.0},
            "pulse_width_us = 350 us is above",
        ),
        ({"frequency_hz": 60.0}, {"max_frequency_hz": 50.0}, "frequency_hz = 60 Hz is above"),
        (
            {"current_ma": 30.0, "pulse_width_us": 400.0, "ramp_up_s": 1.0},
            {"max_charge_uc": 10.0},
            r"12 uC per phase is above .*max_charge_uc = 10",
        ),
        ({"on_time_s": 9.5}, {"max_on_time_s": 10.0}, "longer than .*max_on_time_s"),
        ({"rest_time_s": 2.0}, {"min_rest_s": 3.0}, "rest_time_s = 2 s is shorter"),
        ({"ramp_up_s": 0.2}, {"max_step_ma": 2.0}, r"ramp_up_s = 0.2 s is too short.*>= 0.5"),
    ],
)
def test_validate_stimulation_rejects(stim, limits, match):
    with pytest.raises(ConfigError, match=match):
        validate_stimulation(_muscles(stim=stim, limits=limits), ASSIST, SafetySettings())


def test_validate_names_file_and_key():
    muscles, proto, safety = load(CONFIG.replace("current_ma = 20.0", "current_ma = 41.0"))
    with pytest.raises(ConfigError) as err:
        validate_stimulation(muscles, proto, safety)
    msg = str(err.value)
    assert "test.toml: muscles[0].stim.current_ma = 41 mA" in msg
    assert "test.toml: muscles[0].limits.max_current_ma = 40 mA" in msg


def test_validate_channels_distinct_and_protocol_muscles_stimulated():
    m = _muscles()
    m["triceps"] = MuscleStim("triceps", StimParams(1, 10.0), ChannelLimits(30.0))
    with pytest.raises(ConfigError, match="channel = 1 is already used by muscle 'biceps'"):
        validate_stimulation(m, ASSIST, SafetySettings())
    only_biceps = {"biceps": _muscles()["biceps"]}
    recip = ProtocolSettings(kind="reciprocal", agonist="biceps", antagonist="triceps")
    with pytest.raises(
        ConfigError,
        match="antagonist = 'triceps' is stimulated.*no "
        r"\[muscles.stim\]",
    ):
        validate_stimulation(only_biceps, recip, SafetySettings())
    # the gate only watches the antagonist's EMG: no stimulation needed
    gated = ProtocolSettings(agonist="biceps", antagonist="triceps", co_contraction_gate=True)
    validate_stimulation(only_biceps, gated, SafetySettings())


def test_validate_trials_fit_the_cycle():
    m = _muscles()
    tight = ProtocolSettings(
        kind="cued_trials",
        agonist="biceps",
        trials=TrialSettings(work_s=5.0, rest_s=2.0, response_window_s=2.0),
    )
    with pytest.raises(ConfigError, match="does not fit in work_s \\+ rest_s = 7 s"):
        validate_stimulation(m, tight, SafetySettings())
    roomy = ProtocolSettings(
        kind="cued_trials",
        agonist="biceps",
        trials=TrialSettings(work_s=8.0, rest_s=5.0, response_window_s=2.0),
    )
    validate_stimulation(m, roomy, SafetySettings())  # 2 + 6 + 3 <= 13


def test_validate_plateau_longer_than_dose():
    with pytest.raises(ConfigError, match="session_dose_s"):
        validate_stimulation(_muscles(), ASSIST, SafetySettings(session_dose_s=3.0))


def test_min_ramp():
    assert min_ramp_s(20.0, 2.0, 0.05) == pytest.approx(0.5)
    assert min_ramp_s(21.0, 2.0, 0.05) == pytest.approx(0.55)


def test_ceilings_stay_far_inside_iec_60601_2_10():
    # pulse energy at the largest current and pulse width into the IEC 500 ohm load
    e = ceilings.pulse_energy_mj(
        ceilings.MAX_CURRENT_MA, ceilings.MAX_PULSE_WIDTH_US, ceilings.IEC_PULSE_ENERGY_LOAD_OHM
    )
    assert e == pytest.approx(2.5)
    assert e < ceilings.IEC_MAX_PULSE_ENERGY_MJ / 100
    # r.m.s. current at the worst allowed combination, on a common 5 x 5 cm electrode
    rms = ceilings.rms_current_ma(
        ceilings.MAX_CURRENT_MA,
        ceilings.MAX_CHARGE_PER_PHASE_UC * 1000 / ceilings.MAX_CURRENT_MA,
        ceilings.MAX_FREQUENCY_HZ,
    )
    assert rms / 25.0 < ceilings.IEC_ATTENTION_CURRENT_DENSITY_MA_CM2
    assert ceilings.MAX_CURRENT_MA < 130.0 and ceilings.MAX_PULSE_WIDTH_US <= 500.0
