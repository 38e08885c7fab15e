"""Source specs: parsing, errors that list the allowed forms, and building sources."""

from __future__ import annotations

import math

import pytest

from closedloop.errors import ConfigError
from closedloop.sources.base import Source
from closedloop.sources.brainflow import BrainFlowSource
from closedloop.sources.lsl import LslSource
from closedloop.sources.replay import ReplaySource
from closedloop.sources.spec import open_source, parse_source_spec


@pytest.mark.parametrize(
    ("spec", "kind", "params"),
    [
        ("sim", "sim", {}),
        ("sim?seed=3&muscles=biceps", "sim", {"seed": "3", "muscles": "biceps"}),
        ("brainflow:synthetic", "brainflow", {"board": "synthetic"}),
        (
            "brainflow:cyton?serial_port=/dev/ttyUSB0&timeout=5",
            "brainflow",
            {"board": "cyton", "serial_port": "/dev/ttyUSB0", "timeout": "5"},
        ),
        (
            "brainflow:playback?file=C:%5Cdata%5Cr%26d.csv&master_board=synthetic",
            "brainflow",
            {"board": "playback", "file": "C:\\data\\r&d.csv", "master_board": "synthetic"},
        ),
        ("lsl:name=OpenBCI EEG", "lsl", {"name": "OpenBCI EEG"}),
        ("lsl:type=EMG", "lsl", {"type": "EMG"}),
        (
            "lsl:source_id=amp-123?resolve_timeout=2",
            "lsl",
            {"source_id": "amp-123", "resolve_timeout": "2"},
        ),
        ("replay:out/s1.xdf", "replay", {"path": "out/s1.xdf"}),
        (
            "replay:C:/rec/what%3F.xdf?stream=Amp-EMG&speed=realtime",
            "replay",
            {"path": "C:/rec/what?.xdf", "stream": "Amp-EMG", "speed": "realtime"},
        ),
        ("  REPLAY:a.xdf?speed=2  ", "replay", {"path": "a.xdf", "speed": "2"}),
    ],
)
def test_valid_specs(spec: str, kind: str, params: dict[str, str]) -> None:
    assert parse_source_spec(spec) == (kind, params)


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("", "it is empty"),
        ("serial:/dev/ttyUSB0", "unknown source kind 'serial'"),
        ("brainflow", "needs a board"),
        ("brainflow:", "needs a board"),
        ("lsl:EMG", "exactly one of name=, type=, source_id="),
        ("lsl:host=x", "exactly one of name=, type=, source_id="),
        ("lsl:name=", "exactly one of"),
        ("lsl:type=EMG?foo=1", "unknown lsl option"),
        ("replay:", "needs a file"),
        ("replay:a.xdf?speed", "must be key=value"),
        ("replay:a.xdf?speed=fast&speed=realtime", "given twice"),
        ("replay:a.xdf?rate=3", "unknown replay option"),
        ("sim:thing", "sim takes no target"),
    ],
)
def test_bad_specs_list_the_allowed_forms(spec: str, why: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_source_spec(spec)
    msg = str(err.value)
    assert why in msg
    for form in ("sim[?k=v", "brainflow:BOARD", "lsl:name=NAME", "replay:FILE.xdf"):
        assert form in msg


def test_open_source_builds_unopened_sources() -> None:
    bf = open_source("brainflow:synthetic?labels=biceps,triceps&channels=1,2&chunk_timeout=3")
    assert isinstance(bf, BrainFlowSource) and not bf.is_open
    assert bf._labels == ("biceps", "triceps") and bf.chunk_timeout == 3.0
    lsl = open_source("lsl:type=EMG?resolve_timeout=0.5&channels=a,b&lost_after=2")
    assert isinstance(lsl, LslSource) and lsl.selector == "type=EMG"
    assert lsl.resolve_timeout == 0.5 and lsl.channels_wanted == ["a", "b"]
    assert lsl.lost_after == 2.0 and not lsl.is_open
    rp = open_source("replay:x.xdf?speed=fast&chunk_size=32&stream=EMG")
    assert isinstance(rp, ReplaySource) and math.isinf(rp.speed)
    assert (rp._chunk_size_arg, rp.stream) == (32, "EMG") and not rp.is_open


class OwnSource(Source):
    """A lab's own source, named by its module:Class (no registry entry needed)."""

    kind = "own"
    seen: dict = {}

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target

    @property
    def position(self) -> int:
        return 0

    @property
    def exhausted(self) -> bool:
        return False

    def read(self, timeout):
        return None

    @classmethod
    def parse_spec(cls, spec, target, options):
        return {"target": target, **options}

    @classmethod
    def from_spec(cls, spec, params, context):
        cls.seen = {**params, "seed": context.seed}
        return cls(params["target"])


def test_a_module_class_spec_builds_a_users_source() -> None:
    from closedloop.sources.base import SourceContext

    src = open_source(f"{__name__}:OwnSource:amp-7?gain=3", SourceContext(seed=4))
    assert isinstance(src, OwnSource) and src.target == "amp-7"
    assert OwnSource.seen == {"target": "amp-7", "gain": "3", "seed": 4}
    assert parse_source_spec(f"{__name__}:OwnSource:x")[0] == f"{__name__}:OwnSource"
    with pytest.raises(ConfigError, match="has no 'Nope'"):
        open_source(f"{__name__}:Nope")


def test_open_source_value_errors() -> None:
    with pytest.raises(ConfigError, match="chunk_size='x' must be a number"):
        open_source("replay:a.xdf?chunk_size=x")
    with pytest.raises(ConfigError, match="unknown; use one of"):
        open_source("brainflow:nonsense")
    with pytest.raises(ConfigError, match="'sport' is unknown; allowed: serial_port"):
        open_source("brainflow:cyton?sport=COM3")
    with pytest.raises(ConfigError, match="expected 'fast', 'realtime'"):
        open_source("replay:a.xdf?speed=warp")
