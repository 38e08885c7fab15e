"""The evoked response (M-wave) in the live view, over real LSL streams on loopback: a
session's ``MWave`` stream (published by :class:`~closedloop.io.outlets.SessionOutlets`)
shows per stimulated muscle the latest amplitude in µV and its % of the first trains,
and "no response" in the warning colour while the muscle is stimulated and silent; a
view opened late says its % is of the first trains it saw; a session without the
stream is shown as before."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import math
import time
import uuid
from dataclasses import replace

import numpy as np
import pylsl

from closedloop.core.evoked import MWave
from closedloop.core.stream import SourceInfo
from closedloop.io import outlets as lo
from closedloop.io.outlets import SessionOutlets
from closedloop.stim.commands import StimCommand
from closedloop.view.lsl_client import SessionClient
from tests.view.test_window import wait_for

FS = 1000.0
INFO = SourceInfo("amp", FS, ("biceps", "triceps"), "V", "sim")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def label(win, k: int) -> str:
    """The text of muscle ``k``'s label ("" before the window built its rows)."""
    return win.channel_labels[k].text() if len(win.channel_labels) > k else ""


class Feed:
    """A session's publishing, by hand: EMG up to a sample, commands, M-waves, totals."""

    def __init__(self, out: SessionOutlets) -> None:
        self.out = out
        self.t0 = time.monotonic()
        self.pos = 0
        self.rng = np.random.default_rng(0)

    def t(self, sample: int) -> float:
        return self.t0 + sample / FS

    def emg(self, until: int) -> None:
        while self.pos < until:
            n = min(100, until - self.pos)
            x = self.rng.normal(0.0, 1e-5, (n, 2))
            self.out.push_emg(x, self.t(self.pos) + np.arange(n) / FS, start=self.pos)
            self.pos += n
        self.out.push_tally(self.pos, self.t(self.pos), force=True)

    def stim(self, sample: int, current_ma: float) -> None:
        self.out.push_commands([StimCommand("biceps", 1, current_ma, 250.0, 35.0, sample,
                                            self.t(sample), "plateau" if current_ma else "off",
                                            effective_sample=sample + 1)])

    def mwave(self, sample: int, pp_v: float, present: bool = True,
              current_ma: float = 20.0) -> None:
        wave = np.zeros(20)
        wave[5], wave[9] = -pp_v / 2, pp_v / 2
        self.out.push_mwaves([MWave(
            sample=sample, time=self.t(sample), muscle="biceps", channel=1,
            first_sample=sample - 500, last_sample=sample - 30, n_pulses=17,
            current_ma=current_ma, pulse_width_us=250.0, peak_to_peak=pp_v,
            area=pp_v * 0.005, latency_s=0.004 if present else math.nan,
            end_s=0.015 if present else math.nan, noise=2e-6, present=present,
            offset_s=0.002, waveform=wave)])


def test_the_label_shows_the_m_wave_its_percent_and_no_response_in_red(qtbot):
    from closedloop.view.window import WARNING, SessionWindow

    with SessionOutlets(unique("mwaveview"), INFO, with_envelope=False) as out:
        client = SessionClient(out.session_name, window_s=5.0)
        win = SessionWindow(client, control=None)
        qtbot.addWidget(win)
        try:
            assert client.wait_connected(10.0)
            feed = Feed(out)
            feed.emg(500)
            feed.stim(500, 20.0)  # the muscle's first train
            feed.emg(1000)
            for k, pp in enumerate((1.9e-3, 1.8e-3, 1.7e-3)):  # its first trains
                feed.mwave(1025 + 500 * k, pp)
                feed.emg(1100 + 500 * k)
            assert wait_for(lambda: "M-wave" in label(win, 0), 10.0, qtbot)
            assert wait_for(lambda: "1700 µV" in label(win, 0), 5.0, qtbot)
            shown = label(win, 0)
            # 1.7 mV of the first trains' 1.8 mV (pulse-weighted mean of the three)
            assert "M-wave 1700 µV · 94 % of first trains" in shown
            assert "no response" not in shown and "M-wave" not in label(win, 1)
            s = client.snapshot()
            assert s.mwave["biceps"].percent == 100 * 1.7 / 1.8
            assert s.mwave_from_start == {"biceps": True}

            feed.mwave(2525, 1.2e-3)  # tiring: 67 %
            feed.emg(2600)
            assert wait_for(lambda: "67 % of first trains" in label(win, 0),
                            5.0, qtbot)
            feed.mwave(3025, 4e-6, present=False)  # the electrode came off
            feed.emg(3100)
            assert wait_for(lambda: "no response" in label(win, 0), 5.0, qtbot)
            shown = label(win, 0)
            assert f"color:{WARNING}" in shown and "M-wave: no response</b> at 20 mA" in shown
            assert "check the electrodes" in shown
            # stimulation over: no alarm, the last measurement in grey
            feed.stim(3200, 0.0)
            feed.emg(3400)
            assert wait_for(lambda: "check the electrodes" not in label(win, 0),
                            5.0, qtbot)
            assert "(no response)" in label(win, 0)
        finally:
            win.close()


def test_a_view_opened_after_the_first_train_compares_with_the_first_it_saw():
    with SessionOutlets(unique("mwavelate"), INFO, with_envelope=False) as out:
        feed = Feed(out)
        feed.emg(200)
        feed.stim(200, 20.0)  # a train before the view opens
        feed.emg(1200)
        feed.stim(1200, 0.0)
        feed.emg(1500)
        with SessionClient(out.session_name, window_s=5.0) as client:
            assert client.wait_connected(10.0)
            feed.emg(1600)
            feed.stim(1600, 20.0)
            feed.emg(2000)
            feed.mwave(2025, 1.5e-3)
            feed.emg(2100)
            assert wait_for(lambda: "biceps" in client.snapshot().mwave
                            and client.snapshot().counts_complete, 10.0)
            s = client.snapshot()
    assert s.counts.stim["biceps"].trains == 2
    assert s.mwave_from_start == {"biceps": False}
    assert s.mwave["biceps"].percent == 100.0  # of the first measurement the view saw
    from closedloop.view.window import mwave_text

    assert "100 % of first seen" in mwave_text(s, "biceps")


def test_a_session_without_the_m_wave_stream_is_shown_as_before(qtbot):
    """An older session: only its EMG stream (with the counter), no MWave stream."""
    from closedloop.view.window import SessionWindow

    name, uid = unique("nomwave"), uuid.uuid4().hex
    info = pylsl.StreamInfo(f"{name}-EMG", "EMG", 3, FS, pylsl.cf_double64,
                            f"closedloop.{uid}.{lo.ROLE_EMG}")
    chans = info.desc().append_child("channels")
    for name_, unit in (("biceps", "V"), ("triceps", "V"), (lo.COUNTER_LABEL, "samples")):
        ch = chans.append_child("channel")
        ch.append_child_value("label", name_)
        ch.append_child_value("unit", unit)
    outlet = pylsl.StreamOutlet(info)
    client = SessionClient(name, window_s=5.0)
    win = SessionWindow(client, control=None)
    qtbot.addWidget(win)
    try:
        assert client.wait_connected(10.0)
        assert lo.ROLE_MWAVE not in client._inlets
        rng = np.random.default_rng(1)
        t0 = pylsl.local_clock()
        for a in range(0, 2000, 100):
            x = np.column_stack([rng.normal(0, 1e-5, (100, 2)), np.arange(a, a + 100)])
            outlet.push_chunk(x.tolist(), (t0 + np.arange(a, a + 100) / FS).tolist())
        assert wait_for(lambda: client.snapshot().samples >= 2000 and
                        "signal" in label(win, 0), 10.0, qtbot)
        s = client.snapshot()
        assert s.mwave == {} and "M-wave" not in label(win, 0)
        assert win.curve_data(0)["emg"][0].size > 100
    finally:
        win.close()
        del outlet


def test_the_m_wave_line_words():
    from closedloop.runtime.mwaves import MWavePoint
    from closedloop.view.buffers import display_units
    from closedloop.view.lsl_client import Snapshot
    from closedloop.view.window import mwave_text

    p = MWavePoint("biceps", 1000, 10.0, 20.0, 250.0, 1.234e-3, True, 81.4, False)
    s = Snapshot(now=10.5, display=display_units("V"), mwave={"biceps": p},
                 mwave_from_start={"biceps": True}, stim_now={"biceps": 20.0})
    assert "M-wave 1234 µV · 81 % of first trains" in mwave_text(s, "biceps")
    assert mwave_text(s, "triceps") == ""
    silent = replace(p, present=False, no_response=True, percent=math.nan)
    s.mwave = {"biceps": silent}
    assert "no response</b> at 20 mA" in mwave_text(s, "biceps")
    s.now = 13.0  # an old measurement is not the stimulation under way
    assert "check the electrodes" not in mwave_text(s, "biceps")
    s.now, s.stim_now = 10.5, {}
    assert "check the electrodes" not in mwave_text(s, "biceps")
