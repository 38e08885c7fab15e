"""Fuzzing the two ways bad data gets in: the config file and the EMG stream.

Configs: every key of the shipped configs is mutated one at a time (wrong type, NaN,
infinity, negative, huge, an unknown key beside it): each must be refused with a
:class:`~closedloop.errors.ConfigError` naming the file and the key, except the few
values that are in range (listed below, each with why). Hypothesis then throws arbitrary
TOML values at random keys: a config either loads or is refused with a ConfigError
naming the key, never another exception.

EMG: random streams (attempts, bursts, NaN and inf runs, artefact spikes, lost samples,
flat and pinned stretches) in random chunk sizes through the whole loop (input checks,
core, protocol, guard) with the simulated stimulator: what the stimulator was told is
checked against every limit of the config and the ceilings, the antagonist interlock,
the on-time, the rest, and the end (all off).
"""

from __future__ import annotations

import copy
import math
import re
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from closedloop.config import ceilings, load_config, parse_config
from closedloop.errors import ConfigError
from closedloop.runtime.loop import LoopOptions, run_loop
from closedloop.sim.patient import Attempt, SimulatedPatient
from closedloop.sources.sim import patient_settings
from closedloop.stim.drivers.sim import SimStimulator
from tests.conftest import CONFIGS
from tests.helpers import ArraySource

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SHIPPED = sorted(CONFIGS.glob("*.toml"))


def leaves(data, path=()):
    """Every (path, value) of a parsed TOML document; tables are leaves too."""
    if isinstance(data, dict):
        if path:
            yield path, data
        for k, v in data.items():
            yield from leaves(v, (*path, k))
    elif isinstance(data, list) and data and all(isinstance(v, dict) for v in data):
        for i, v in enumerate(data):
            yield from leaves(v, (*path, i))
    else:
        yield path, data


def dotted(path) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


def set_at(data, path, value):
    d = copy.deepcopy(data)
    node = d
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return d


def mutations(value):
    """(kind, bad value) for one key's value."""
    if isinstance(value, dict):
        return [("wrong type", 7), ("wrong type", "text")]
    if isinstance(value, bool):
        return [("wrong type", "yes"), ("wrong type", 1)]
    if isinstance(value, str):
        return [("wrong type", 3), ("wrong type", ["a"]), ("NaN", math.nan)]
    if isinstance(value, list):
        return [("wrong type", "text"), ("NaN", [math.nan] * len(value)),
                ("negative", [-1.0] * len(value)), ("huge", [1e12] * len(value)),
                ("wrong length", [*value, *value[:1]])]
    return [("wrong type", "text"), ("wrong type", True), ("NaN", math.nan),
            ("infinity", math.inf), ("negative", -1.0 if isinstance(value, float) else -1),
            ("huge", 1e12 if isinstance(value, float) else 10**12)]


#: The mutated values that are in range, and why (everything else must be refused).
ALLOWED = {
    ("sim.snr_db", "negative"): "the simulated patient's SNR may be -20..60 dB",
    ("sim.seed", "huge"): "any seed >= 0",
    ("muscles.channel", "wrong type"): "a channel is a label or a 0-based index (3)",
}


def cases():
    for path in SHIPPED:
        data = tomllib.loads(path.read_text())
        for key, value in leaves(data):
            for kind, bad in mutations(value):
                yield pytest.param(path, key, kind, bad, id=f"{path.stem}:{dotted(key)}:{kind}")
            if isinstance(value, dict):
                yield pytest.param(path, (*key, "bogus_key"), "unknown key", 1.0,
                                   id=f"{path.stem}:{dotted(key)}.bogus_key")
        yield pytest.param(path, ("bogus_key",), "unknown key", 1.0, id=f"{path.stem}:bogus_key")


@pytest.mark.parametrize(("path", "key", "kind", "bad"), list(cases()))
def test_every_bad_value_of_every_key_is_refused_naming_the_key(path, key, kind, bad):
    data = set_at(tomllib.loads(path.read_text()), key, bad)
    name = dotted(key)
    try:
        parse_config(data, source=str(path))
    except ConfigError as exc:
        msg = str(exc)
        assert msg.startswith(str(path)), msg
        leaf = str(key[-1]) if not isinstance(key[-1], int) else str(key[-2])
        assert leaf in msg, f"{name}: {msg}"
        return
    assert _allowed(name, kind), f"{name} = {bad!r} ({kind}) was accepted"


def _allowed(name: str, kind: str) -> bool:
    generic = re.sub(r"\[\d+\]", "", name)
    return (generic, kind) in ALLOWED


def test_the_allowed_values_are_really_allowed():
    """Keep :data:`ALLOWED` honest: each entry loads in at least one shipped config."""
    hit = set()
    for case in cases():
        path, key, kind, bad = case.values
        generic = (re.sub(r"\[\d+\]", "", dotted(key)), kind)
        if generic in ALLOWED:
            try:
                parse_config(set_at(tomllib.loads(path.read_text()), key, bad),
                             source=str(path))
            except ConfigError:
                continue  # another bad value of the same kind (a list for a channel)
            hit.add(generic)
    assert hit == set(ALLOWED)


# -- arbitrary values: never anything but a ConfigError -----------------------------------
toml_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=st.sampled_from(SHIPPED), pick=st.integers(0, 10**6), value=toml_values)
def test_arbitrary_values_load_or_are_refused_with_a_config_error(config, pick, value):
    data = tomllib.loads(config.read_text())
    keys = [k for k, _ in leaves(data)]
    key = keys[pick % len(keys)]
    try:
        parse_config(set_at(data, key, value), source=str(config))
    except ConfigError as exc:
        assert str(exc).startswith(str(config))


# -- EMG streams through the loop -----------------------------------------------------------
FS = 2000.0
SECONDS = 6.0


@st.composite
def emg_streams(draw, config):
    n = int(SECONDS * FS)
    names = config.muscle_names
    attempts = [Attempt(draw(st.sampled_from(names)), draw(st.floats(0.3, SECONDS - 0.5)),
                        draw(st.floats(0.1, 2.0)), draw(st.floats(0.3, 3.0)), 0.04)
                for _ in range(draw(st.integers(1, 4)))]
    x = SimulatedPatient(patient_settings(config), sorted(attempts, key=lambda a: a.onset_s),
                         seed=draw(st.integers(0, 3))).read(n)
    for _ in range(draw(st.integers(0, 6))):
        c = draw(st.integers(0, len(names) - 1))
        a = draw(st.integers(0, n - 2))
        b = min(n, a + draw(st.integers(1, int(0.8 * FS))))
        kind = draw(st.sampled_from(["burst", "nan", "inf", "spike", "flat", "rail"]))
        if kind == "burst":
            x[a:b, c] += draw(st.floats(1e-4, 1e-2)) * np.random.default_rng(a).standard_normal(
                b - a)
        elif kind == "nan":
            x[a:b, c] = np.nan
        elif kind == "inf":
            x[a:b, c] = -np.inf
        elif kind == "spike":
            x[a, c] += draw(st.floats(-1.0, 1.0))
        elif kind == "flat":
            x[a:b, c] = x[a, c]
        else:
            x[a:b, c] = 5e-3
    keep = np.ones(n, dtype=bool)
    for _ in range(draw(st.integers(0, 3))):  # samples lost on the way
        a = draw(st.integers(1, n - 2))
        keep[a : a + draw(st.integers(1, 200))] = False
    counter = np.flatnonzero(keep)
    sizes = draw(st.lists(st.integers(1, 400), min_size=1, max_size=5))
    return x[keep], 100.0 + counter / FS, counter, sizes


def check_commands(config, stim: SimStimulator) -> None:
    """What the stimulator was told stays within every limit, and ends off."""
    muscles = {m.name: m for m in config.muscles if m.stim is not None}
    pairs = {(m.name, m.antagonist) for m in muscles.values() if m.antagonist}
    proto = config.protocol
    if proto.antagonist and not proto.co_stimulation:
        pairs |= {(proto.agonist, proto.antagonist), (proto.antagonist, proto.agonist)}
    level: dict[str, float] = {}
    on_since: dict[str, int] = {}
    off_since: dict[str, int] = {}
    for a in stim.log:
        c = a.command
        if c.phase == "stop":  # stop_all: every channel off
            level = {m: 0.0 for m in level}
            continue
        lim = muscles[c.muscle].limits
        assert c.current_ma <= min(lim.max_current_ma, ceilings.MAX_CURRENT_MA) + 1e-9, c
        if c.is_on:
            assert c.pulse_width_us <= min(lim.max_pulse_width_us,
                                           ceilings.MAX_PULSE_WIDTH_US) + 1e-9, c
            assert c.frequency_hz <= min(lim.max_frequency_hz,
                                         ceilings.MAX_FREQUENCY_HZ) + 1e-9, c
            assert c.charge_uc <= min(lim.max_charge_uc,
                                      ceilings.MAX_CHARGE_PER_PHASE_UC) * (1 + 1e-9), c
            step = min(lim.max_step_ma, ceilings.MAX_STEP_MA)
            assert c.current_ma - level.get(c.muscle, 0.0) <= step + 1e-9, c
            if level.get(c.muscle, 0.0) == 0.0:
                on_since[c.muscle] = c.sample
                if c.muscle in off_since:  # min rest
                    rest = max(lim.min_rest_s, ceilings.MIN_REST_FLOOR_S)
                    assert c.sample - off_since[c.muscle] >= math.ceil(rest * FS - 1e-9), c
            max_on = min(lim.max_on_time_s, ceilings.MAX_ON_TIME_S)
            assert c.sample - on_since[c.muscle] <= max_on * FS, c
        elif level.get(c.muscle, 0.0) > 0.0:
            off_since[c.muscle] = c.sample
        level[c.muscle] = c.current_ma
        for m1, m2 in pairs:  # never both antagonists on at once
            assert not (level.get(m1, 0.0) > 0 and level.get(m2, 0.0) > 0), (c, level)
    assert not stim.any_on


CONFIG_CASES = [load_config(p) for p in SHIPPED]
CONFIG_CASES.append(replace(CONFIG_CASES[0], protocol=replace(CONFIG_CASES[0].protocol,
                                                              end_on_offset=True)))


@pytest.mark.parametrize("config", CONFIG_CASES, ids=lambda c: f"{c.name}:{c.protocol.kind}"
                         f"{':end_on_offset' if c.protocol.end_on_offset else ''}")
@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_streams_never_drive_the_stimulator_outside_its_limits(config, data):
    x, ts, counter, sizes = data.draw(emg_streams(config))
    stim = SimStimulator()
    stim.open()
    src = ArraySource(x, FS, config.muscle_names, sizes, timestamps=ts, counter=counter,
                      name="fuzz")
    src.open()
    out = run_loop(config, src, stim, options=LoopOptions(watchdog_s=5.0))
    assert out.exit_code in (0, 6), out.message  # the guard may stop a session; never more
    assert out.all_off
    check_commands(config, stim)


def test_the_shipped_configs_are_found():
    assert len(SHIPPED) >= 2 and all(Path(p).exists() for p in SHIPPED)
