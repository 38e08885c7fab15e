"""``closedloop report`` as a command: it loads the recording and writes the page."""

from __future__ import annotations

from argparse import Namespace

import pytest

from closedloop.commands import report as cmd
from tests.analysis.test_report import _session


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    return _session(tmp_path_factory.mktemp("report"))


def test_main_loads_the_recording(session, monkeypatch, tmp_path):
    monkeypatch.setattr(cmd, "load_session", lambda path: session)
    out = tmp_path / "out.html"
    assert cmd.main(Namespace(input=str(tmp_path / "session.xdf"), out=str(out))) == 0
    assert out.read_text(encoding="utf-8").count("<svg") == 2  # the figures, inline
