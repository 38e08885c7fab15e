"""Record a simulated session with knocks, with the closedloop checked out where this runs.

``python tests/data/make_cusum_knocks.py OUT.xdf [SIZE] [gate-off]``, from the root of
a checkout (``PYTHONPATH`` at it): a 30 s session of the shipped biceps/triceps config
(the simulated patient and stimulator, seed 0), recorded as ``closedloop run --record``
records it (as bench's ``record_simulated_session``, faster than real time), with a
5 ms half-sine knock of SIZE (default 40) times the patient's voluntary EMG RMS on the
biceps every 3 s from 2.3 s; ``gate-off`` turns the input's impulse gate off
(``[artifacts] impulse_ratio = 0``), so cusum's own hold takes the knocks.

``cusum_knocks_before_ringing.xdf`` is ``... 100 gate-off`` run at 5825859, before
``rest_skips_ringing`` existed.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from closedloop.config import loads_config
from closedloop.core.detectors.base import statistic_of
from closedloop.identity import SessionId
from closedloop.io.outlets import SessionOutlets
from closedloop.io.xdfwrite import SessionFile
from closedloop.runtime.devices import make_source, make_stimulator
from closedloop.runtime.loop import LoopOptions, run_loop
from closedloop.sources.base import Source

SECONDS, SEED = 30.0, 0


class Knocks(Source):
    """The opened ``inner`` source with ``shape * size`` added to channel 0 from each of
    ``starts`` (absolute sample indices), whatever the chunking."""

    def __init__(self, inner, starts, shape):
        super().__init__()
        self.inner, self.starts, self.shape = inner, list(starts), np.asarray(shape)
        self._info = inner.info
        self._pos = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    @property
    def position(self):
        return self._pos

    @property
    def exhausted(self):
        return self.inner.exhausted

    def read(self, timeout):
        chunk = self.inner.read(timeout)
        if chunk is None:
            return None
        x = chunk.samples.copy()
        a, b = self._pos, self._pos + chunk.n
        for s in self.starts:
            for j, v in enumerate(self.shape):
                if a <= s + j < b:
                    x[s + j - a, 0] += v
        self._pos = b
        return replace(chunk, samples=x)


def main(out: str) -> None:
    text = Path("configs/biceps_triceps.toml").read_text()
    if len(sys.argv) > 3 and sys.argv[3] == "gate-off":
        text += "\n[artifacts]\nimpulse_ratio = 0.0\n"
    config = loads_config(text, source="configs/biceps_triceps.toml")
    ident = SessionId.new(config.name)
    stim = make_stimulator(config, None, session=ident)
    source = make_source(config, None, seed=SEED, realtime=False, stimulator=stim)
    fs = config.session.fs
    voluntary = float(sys.argv[2]) if len(sys.argv) > 2 else 40.0
    rms = 5e-6 * 10 ** (config.sim.snr_db / 20)  # the patient's noise RMS is 5 uV
    n = int(round(0.005 * fs))
    shape = voluntary * rms * np.sin(np.pi * np.arange(n) / n)
    starts = [int(round((2.3 + 3 * k) * fs)) for k in range(10)]
    with SessionFile(out) as file:
        stim.open()
        stim.follow(source.now)
        source.open()
        src = Knocks(source, starts, shape)
        try:
            info = replace(source.info, channels=config.muscle_names)
            outlets = SessionOutlets(
                ident.name, info, config_text=config.text,
                metadata={"source": info.name, "resolved_config": config.resolved,
                          "sim_seed": SEED, "made_by": " ".join(sys.argv)},
                session_uid=ident.uid, truth=source.true_onsets_between,
                outlet_factory=file.outlet, with_filtered=False,
                statistic=statistic_of(config.detector_kind))
            outlets.announce(source.now())
            res = run_loop(config, src, stim, outlets=outlets,
                           options=LoopOptions(duration_s=SECONDS, watchdog_s=30.0, history=0))
        finally:
            stim.close()
            source.close()
    print(res.reason, res.message)


if __name__ == "__main__":
    main(sys.argv[1])
