"""A short soak (``tools/soak.py``): a simulated session at fast speed, recorded by a
real LabRecorderCLI. Nothing may be lost; the figures (memory, latency per window) are
printed, not asserted beyond sanity: the long soaks are run by hand (see docs)."""

from __future__ import annotations

import importlib.util
import json

from tests.conftest import ROOT


def load_tool():
    spec = importlib.util.spec_from_file_location("soak_tool", ROOT / "tools" / "soak.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_short_fast_soak_loses_nothing(capsys):
    soak = load_tool()
    code = soak.main(["--minutes", "1.5", "--window", "0.5"])
    printed = capsys.readouterr().out
    figures = json.loads(printed.strip().splitlines()[-1])
    with capsys.disabled():
        print("\n" + "\n".join(printed.strip().splitlines()[:-1]))
    assert code == 0
    assert figures["exit_code"] == 0 and figures["samples"] == 1.5 * 60 * 2000
    assert figures["samples_lost"] == 0 and figures["recording_ok"]
    assert figures["triggers"] >= 3 and figures["all_off"]
    assert {"samples_lost", "rss_start_mb", "rss_end_mb", "triggers"} <= set(figures)
    assert [w["minute"] for w in figures["windows"]] == [0.0, 0.5, 1.0]
    assert figures["rss_end_mb"] - figures["rss_start_mb"] < 50  # sanity, not a figure
