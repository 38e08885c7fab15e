"""The config model at its edges: files that are not UTF-8, absurd nesting, settings built
in code, keys that only code may set, and the per-kind hooks of [detector] and [protocol].

The ranges and messages of each table are tested with their layer (tests/stim/
test_settings.py, tests/core/test_blanking.py); every key of the shipped configs is
fuzzed in tests/faults/test_fuzz.py.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated

import pytest

import closedloop.config.model as model
from closedloop.config import default_config, load_config, loads_config, parse_config
from closedloop.config.schema import Range, settings
from closedloop.config.signal import CusumSettings, DetectorSettings
from closedloop.config.stimulation import ProtocolSettings, StimParams
from closedloop.errors import ConfigError

SHIPPED = Path(__file__).resolve().parents[2] / "configs" / "biceps_triceps.toml"
PYDANTIC_WORDS = ("pydantic", "Input should", "validation error", "Traceback", "type=")


def words_of_closedloop(msg: str) -> bool:
    return not any(w in msg for w in PYDANTIC_WORDS)


@pytest.mark.parametrize(
    ("raw", "said"),
    [
        (b"\xef\xbb\xbf" + SHIPPED.read_bytes(), "UTF-8 byte-order mark (BOM)"),
        (SHIPPED.read_text().encode("utf-16"), "UTF-16 byte-order mark (BOM)"),
        (SHIPPED.read_bytes().replace(b"Elbow", "Ellb\u00f6gen".encode("latin-1"), 1),
         "not UTF-8 text (byte 6, line 1"),
    ],
    ids=["utf8-bom", "utf16", "latin1"],
)
def test_a_file_that_is_not_plain_utf8_is_refused_saying_how_to_save_it(tmp_path, raw, said):
    path = tmp_path / "clinic.toml"
    path.write_bytes(raw)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: ") and said in msg and "save" in msg


def test_a_5000_deep_table_is_refused_without_a_traceback(tmp_path, capfd):
    text = SHIPPED.read_text()
    deep_inline = text + "\n[x]\ny = " + "{a = " * 5000 + "1" + "}" * 5000 + "\n"
    deep_header = text + "\n[session." + ".".join(["a"] * 5000) + "]\nx = 1\n"
    for i, bad in enumerate((deep_inline, deep_header)):
        path = tmp_path / f"deep{i}.toml"
        path.write_text(bad)
        with pytest.raises(ConfigError) as err:
            load_config(path)
        assert str(err.value).startswith(f"{path}: ") and words_of_closedloop(str(err.value))
    # a deep table where a value belongs (a parsed document, not only TOML text)
    deep: dict = {}
    node = deep
    for _ in range(5000):
        node["a"] = node = {}
    data = json.loads(json.dumps(load_config(SHIPPED).resolved))
    for where in ("channel", "stim"):
        data["muscles"][1][where] = deep
        with pytest.raises(ConfigError, match=r"^deep: muscles\[1\]\.") as err:
            parse_config(data, source="deep")
        assert len(str(err.value)) < 300
        data["muscles"][1][where] = "triceps" if where == "channel" else None
    out, errs = capfd.readouterr()
    assert errs == ""  # not even an "Exception ignored" from a repr that recursed


def test_settings_built_in_code_are_checked_like_a_file():
    with pytest.raises(ConfigError) as err:
        dataclasses.replace(DetectorSettings(), k_on=0.1)  # replace re-validates
    assert str(err.value) == ("<code>: DetectorSettings.k_on = 0.1 is not allowed; expected "
                              "a number >= 0.5 and <= 100")
    with pytest.raises(ConfigError) as err:
        StimParams(1, "20")
    assert str(err.value).startswith("<code>: StimParams.current_ma = '20' is not allowed")
    assert "100 is the absolute ceiling, closedloop/config/ceilings.py" in str(err.value)
    with pytest.raises(ConfigError, match="unknown key.*current"):
        StimParams(channel=1, current_ma=5.0, current=2.0)
    stim = StimParams(1, 20.0)
    assert dataclasses.replace(stim, current_ma=25.0).current_ma == 25.0
    assert dataclasses.asdict(stim)["current_ma"] == 20.0 and "where" not in dataclasses.asdict(
        stim)
    with pytest.raises(dataclasses.FrozenInstanceError):
        stim.current_ma = 90.0


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (lambda d: d.update(path="x.toml"), "top level: unknown key(s) path; known keys here: "
                                            "artifacts, description, detector, envelope"),
        (lambda d: d.update(text="name = 'x'"), "top level: unknown key(s) text;"),
        (lambda d: d["muscles"][0]["stim"].update(where="elsewhere"),
         "muscles[0].stim: unknown key(s) where; known keys here: channel, current_ma"),
        (lambda d: d["envelope"].update(kind="hilbert"),
         "envelope.kind = 'hilbert' is not allowed; expected one of 'rms', 'lowpass', 'tkeo'"),
        (lambda d: d.update(muscles=[]),
         "muscles is empty; add at least one [[muscles]] table"),
        (lambda d: d["muscles"][1]["stim"].update(current_ma=150.0),
         "muscles[1].stim.current_ma = 150.0 is not allowed; expected a number > 0 and <= 100 "
         "(100 is the absolute ceiling, closedloop/config/ceilings.py)"),
        (lambda d: d["muscles"][1]["limits"].pop("max_current_ma"),
         "muscles[1].limits.max_current_ma is missing; it is required"),
        (lambda d: d["detector"].update(k_of=1, min_onms=2),
         "detector: unknown key(s) k_of, min_onms; known keys here: ar_loading, ar_order"),
        (lambda d: d["protocol"].setdefault("mwave", {}).update(skip_ms=10.0, window_ms=8.0),
         "protocol.mwave.skip_ms = 10.0 is not allowed; expected a number below window_ms = "
         "8 (the window starts skip_ms after the pulse and ends at window_ms)"),
        (lambda d: d["protocol"].setdefault("mwave", {}).update(window_ms=500.0),
         "protocol.mwave.window_ms = 500.0 is not allowed; expected a number >= 2 and <= 100"),
        (lambda d: d.setdefault("sim", {}).update(gap_s=[8.0, 4.0]),
         "sim.gap_s = [8.0, 4.0] is not allowed; expected [shortest, longest]: the first "
         "number at most the second"),
        (lambda d: d.setdefault("sim", {}).update(attempt_s=[3.0, 1.0]),
         "sim.attempt_s = [3.0, 1.0] is not allowed; expected [shortest, longest]"),
    ],
    ids=["path", "text", "where", "choice", "no-muscles", "ceiling", "missing", "typos",
         "mwave-window", "mwave-range", "sim-gap-order", "sim-attempt-order"],
)
def test_messages_name_the_key_and_everything_allowed(change, said):
    data = json.loads(json.dumps(load_config(SHIPPED).resolved))
    change(data)
    with pytest.raises(ConfigError) as err:
        parse_config(data, source="clinic.toml")
    assert str(err.value).startswith("clinic.toml: " + said)


def test_a_config_for_a_sources_channels_takes_their_labels_as_they_are():
    # `closedloop detect` and `replay` without a config: any label a file or device has
    config = default_config(["EMG 1", "Fp1-A1"])
    assert config.muscle_names == ("EMG 1", "Fp1-A1")
    assert config.columns(["Fp1-A1", "EMG 1"], "file.csv") == [1, 0]
    # a config file's names are identifiers
    with pytest.raises(ConfigError) as err:
        loads_config(SHIPPED.read_text().replace('name = "biceps"', 'name = "bi ceps"'),
                     source="c.toml")
    assert str(err.value) == ("c.toml: muscles[0].name = 'bi ceps' is not allowed; expected a "
                              "non-empty name of letters, digits and _")


@settings(kw_only=True)
class BoostedProtocol(ProtocolSettings):
    """A protocol with one more setting, as a registered protocol might have."""

    boost: Annotated[float, Range(0.0, 1.0)] = 0.5


@settings
class OtherDetectorSettings(CusumSettings):
    """A detector with one more setting, as a registered detector might have."""

    smoothing: Annotated[int, Range(1, 9)] = 3


def test_protocol_and_detector_settings_come_from_the_per_kind_functions(monkeypatch):
    text = SHIPPED.read_text()
    boosted = text.replace('kind = "triggered_assist"', 'kind = "triggered_assist"\nboost = 0.7')
    smoothed = boosted.replace("h_nats = 18.0", "h_nats = 18.0\nsmoothing = 5")
    with pytest.raises(ConfigError, match="protocol: unknown key.*boost"):
        loads_config(boosted)
    kinds = []
    monkeypatch.setattr(model, "protocol_settings_for",
                        lambda kind: kinds.append(kind) or BoostedProtocol)
    monkeypatch.setattr(model, "detector_settings_for",
                        lambda kind: kinds.append(kind) or OtherDetectorSettings)
    config = loads_config(smoothed, source="p.toml")
    assert kinds == ["cusum", "triggered_assist"]
    assert config.protocol.boost == 0.7 and config.detector.smoothing == 5
    assert config.resolved["protocol"]["boost"] == 0.7
    assert config.resolved["detector"]["smoothing"] == 5
    again = parse_config(json.loads(json.dumps(config.resolved)), source="p.toml",
                         text=config.text)
    assert again == config
    with pytest.raises(ConfigError) as err:
        loads_config(smoothed.replace("boost = 0.7", "boost = 7"), source="p.toml")
    assert str(err.value) == ("p.toml: protocol.boost = 7 is not allowed; expected a number "
                              ">= 0 and <= 1")


@pytest.mark.parametrize("triceps", ['"biceps"', "0"])
def test_two_muscles_on_one_emg_channel_are_refused(triceps):
    """One electrode cannot tell two muscles apart (the co-contraction gate would see the
    agonist's own EMG as its antagonist's): by label or by index, it is refused naming both
    muscles and the channel."""
    config = loads_config(SHIPPED.read_text().replace('channel = "triceps"',
                                                      f"channel = {triceps}", 1),
                          source="c.toml")
    assert load_config(SHIPPED).columns(["triceps", "biceps"], "amp") == [1, 0]
    with pytest.raises(ConfigError) as err:
        config.columns(["biceps", "triceps"], "amp")
    assert "muscles 'biceps' and 'triceps' both read channel 'biceps' of 'amp'" in str(err.value)


@pytest.mark.parametrize("name", ["", "   ", "\t"], ids=["empty", "spaces", "tab"])
def test_a_blank_config_name_is_refused_at_load_by_the_command(tmp_path, name):
    """``name = ""`` (or only white space) names no program: the installed command refuses
    the config before anything runs, naming the file, the key and what is expected."""
    import subprocess

    text = SHIPPED.read_text().replace('name = "biceps_triceps"', f"name = {json.dumps(name)}",
                                       1)
    assert text != SHIPPED.read_text()
    path = tmp_path / "blank.toml"
    path.write_text(text)
    r = subprocess.run(["closedloop", "run", "--config", str(path), "--no-gui", "--no-outlets",
                        "--quiet", "--duration", "1"], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path)
    said = r.stdout + r.stderr
    assert r.returncode == ConfigError.exit_code, said
    assert f"blank.toml: name = {name!r} is not allowed" in said, said
    assert "at least one character that is not a space" in said and words_of_closedloop(said)
    assert not list(tmp_path.glob("*.xdf"))  # nothing ran, nothing was recorded


def test_a_recording_made_with_a_blank_name_still_reads_its_config():
    """Configs named "" were accepted before names were checked: their recordings' configs
    (resolved, or as TOML text in older recordings) still read, named 'session' as their
    sessions were, so those recordings stay replayable."""
    from types import SimpleNamespace

    from closedloop.io.recorded import LEGACY_NAME, recorded_config

    resolved = json.loads(json.dumps(load_config(SHIPPED).resolved))
    text = SHIPPED.read_text().replace('name = "biceps_triceps"', 'name = " "', 1)
    for metadata, config_text in (({"resolved_config": {**resolved, "name": ""}}, ""),
                                  ({}, text)):
        old = SimpleNamespace(path=Path("old.xdf"), metadata=metadata, config_text=config_text)
        config = recorded_config(old)
        assert config.name == LEGACY_NAME == "session"
        assert config.muscle_names == ("biceps", "triceps")


def test_a_cusum_recording_made_before_highpass_hz_reads_the_band_it_ran():
    """Before ``highpass_hz`` existed, cusum ran the ``[filters]`` band: a recorded cusum
    config without it (resolved, or TOML text) reads as ``highpass_hz = 0``; a recorded
    config with it, and a config file the user gives, keep theirs (30 Hz by default)."""
    from types import SimpleNamespace

    from closedloop.io.recorded import LEGACY_CUSUM_HIGHPASS_HZ, recorded_config

    config = load_config(SHIPPED)
    assert config.detector_kind == "cusum" and config.detector.highpass_hz == 30.0
    resolved = json.loads(json.dumps(config.resolved))
    before = {**resolved, "detector": {k: v for k, v in resolved["detector"].items()
                                       if k != "highpass_hz"}}
    text = SHIPPED.read_text()
    old_text = "\n".join(line for line in text.splitlines()
                         if not line.startswith("highpass_hz"))
    cases = (({"resolved_config": before}, "", LEGACY_CUSUM_HIGHPASS_HZ),
             ({}, old_text, LEGACY_CUSUM_HIGHPASS_HZ),
             ({"resolved_config": resolved}, "", 30.0),
             ({}, text, 30.0))
    for metadata, config_text, hz in cases:
        rec = SimpleNamespace(path=Path("r.xdf"), metadata=metadata, config_text=config_text)
        assert recorded_config(rec).detector.highpass_hz == hz
    assert LEGACY_CUSUM_HIGHPASS_HZ == 0.0


@pytest.mark.parametrize(("key", "before_value"), [
    ("rest_skips_ringing", False), ("artifact_mains_lag", False),
    ("hold_resets_evidence", False), ("artifact_ring_ms", 50.0)])
def test_a_cusum_recording_made_before_a_key_reads_what_cusum_did_then(key, before_value):
    """Before ``rest_skips_ringing`` existed, the block after an artefact hold entered the
    rest estimate; before ``artifact_mains_lag``, ``hold_resets_evidence`` and
    ``artifact_ring_ms``, the artefact test compared samples 5 ms apart, kept the evidence
    the rise gave and froze it 50 ms after the hold. A recorded cusum config without the
    key (resolved, or TOML text) reads what cusum did then; one with it, and a config file
    the user gives, keep theirs (the default)."""
    from types import SimpleNamespace

    from closedloop.io.recorded import LEGACY_CUSUM, recorded_config

    config = load_config(SHIPPED)
    default = getattr(config.detector, key)
    assert config.detector_kind == "cusum" and default != before_value
    resolved = json.loads(json.dumps(config.resolved))
    assert resolved["detector"][key] == default
    before = {**resolved, "detector": {k: v for k, v in resolved["detector"].items()
                                       if k != key}}
    text = SHIPPED.read_text()
    assert key not in text  # the default: older texts read as before
    set_so = {**resolved, "detector": {**resolved["detector"], key: before_value}}
    cases = (({"resolved_config": before}, "", before_value),
             ({}, text, before_value),
             ({"resolved_config": resolved}, "", default),
             ({"resolved_config": set_so}, "", before_value))
    for metadata, config_text, value in cases:
        rec = SimpleNamespace(path=Path("r.xdf"), metadata=metadata, config_text=config_text)
        assert getattr(recorded_config(rec).detector, key) == value
    assert LEGACY_CUSUM[key] == before_value


def test_a_recording_made_before_wait_for_rate_replays_without_the_wait():
    """Before ``[safety] wait_for_rate`` existed, stimulation could start in the stream's
    first 2 s: a recorded stimulating config without the key (resolved, or TOML text)
    reads ``wait_for_rate = false``, so its replay decides as it ran; one with it, and a
    config file the user gives, keep theirs (true by default). A config that does not
    stimulate gets no ``[safety]``."""
    from types import SimpleNamespace

    from closedloop.io.recorded import LEGACY_SAFETY, recorded_config

    config = load_config(SHIPPED)
    assert config.safety is not None and config.safety.wait_for_rate is True
    resolved = json.loads(json.dumps(config.resolved))
    assert resolved["safety"]["wait_for_rate"] is True
    before = {**resolved, "safety": {k: v for k, v in resolved["safety"].items()
                                     if k != "wait_for_rate"}}
    text = SHIPPED.read_text()
    assert "\nwait_for_rate = true " in text  # the shipped configs say it
    old_text = "\n".join(line for line in text.splitlines()
                         if not line.startswith("wait_for_rate"))
    cases = (({"resolved_config": before}, "", False),
             ({"resolved_config": {k: v for k, v in before.items() if k != "safety"}}, "",
              False),
             ({}, old_text, False),
             ({}, text, True),
             ({"resolved_config": resolved}, "", True))
    for metadata, config_text, value in cases:
        rec = SimpleNamespace(path=Path("r.xdf"), metadata=metadata, config_text=config_text)
        assert recorded_config(rec).safety.wait_for_rate is value
    quiet = {k: v for k, v in before.items() if k not in ("protocol", "safety")}
    rec = SimpleNamespace(path=Path("r.xdf"), metadata={"resolved_config": quiet},
                          config_text="")
    assert recorded_config(rec).safety is None
    assert LEGACY_SAFETY == {"wait_for_rate": False}
