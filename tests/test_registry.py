"""The registries: built-in names, entry points of installed packages, module:Class specs."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from closedloop.core.detectors.base import Detector
from closedloop.errors import ConfigError
from closedloop.registry import DETECTORS, PROTOCOLS, SOURCES, STIMULATORS, Registry


def test_every_builtin_loads_and_implements_its_interface():
    for reg in (DETECTORS, PROTOCOLS, STIMULATORS, SOURCES):
        base = reg._import(reg.interface, reg.interface)
        for name in reg.builtins:
            cls = reg.load(name)
            assert issubclass(cls, base), (reg.kind, name)
            assert cls.kind == name, f"{reg.kind} {name!r} says its kind is {cls.kind!r}"


def test_unknown_names_list_the_known_ones_and_how_to_add_one():
    with pytest.raises(ConfigError) as err:
        DETECTORS.load("nope")
    msg = str(err.value)
    assert "unknown detector 'nope'" in msg
    assert all(n in msg for n in DETECTORS.builtins) and "module:Class" in msg
    assert "closedloop.detectors" in msg  # the entry-point group


def test_a_spec_must_name_a_class_that_implements_the_interface():
    with pytest.raises(ConfigError, match="does not implement"):
        DETECTORS.load("collections:OrderedDict")
    with pytest.raises(ConfigError, match="cannot import 'no_such_module'"):
        DETECTORS.load("no_such_module:Thing")
    with pytest.raises(ConfigError, match="has no 'Nope'"):
        DETECTORS.load("closedloop.core.detectors.threshold:Nope")
    assert DETECTORS.load("closedloop.core.detectors.threshold:TkeoDetector").kind == "tkeo"


def test_registries_are_tables_not_global_state():
    reg = Registry("gadget", "closedloop.test_gadgets", {"a": "collections:OrderedDict"})
    assert reg.names() == ["a"] and reg.load("a").__name__ == "OrderedDict"
    assert not hasattr(reg, "register")  # nothing registers itself at import time
    with pytest.raises(Exception):  # noqa: B017 - frozen dataclass
        reg.builtins = {}  # type: ignore[misc]


def _installed_addon(root: Path) -> None:
    """A lab's package as pip installs it: the module, and a dist-info folder whose
    entry_points.txt adds a detector to closedloop's group."""
    pkg = root / "lablib"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "detectors.py").write_text(textwrap.dedent("""
        from closedloop.core.detectors.threshold import ThresholdDetector

        class LabDetector(ThresholdDetector):
            kind = "lab"
    """))
    info = root / "lablib-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lablib\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[closedloop.detectors]\nlab = lablib.detectors:LabDetector\n")


def test_an_installed_entry_point_adds_a_name(tmp_path, monkeypatch):
    _installed_addon(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "lab" in DETECTORS.names() and "lab" not in DETECTORS.builtins
    cls = DETECTORS.load("lab")
    assert issubclass(cls, Detector) and cls.__name__ == "LabDetector"
    from closedloop.config import loads_config

    cfg = loads_config('[detector]\nkind = "lab"\nk_on = 7\n[[muscles]]\nname = "a"\n')
    assert cfg.detector_kind == "lab" and cfg.detector.k_on == 7.0


def test_cli_help_lists_what_is_registered(tmp_path):
    _installed_addon(tmp_path)
    env = {"PYTHONPATH": f"{tmp_path}"}
    import os

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(tmp_path), os.environ.get("PYTHONPATH", "")) if p)}
    r = subprocess.run([sys.executable, "-m", "closedloop", "detect", "--help"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0
    assert "lab" in r.stdout and "cusum" in r.stdout
    r = subprocess.run([sys.executable, "-m", "closedloop", "run", "--help"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert "rehastim2" in r.stdout and "brainflow" in r.stdout
