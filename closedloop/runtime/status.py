"""The one-line live status: time, each channel's envelope and threshold, stimulation."""

from __future__ import annotations

import math
from collections.abc import Sequence

from closedloop.core.events import Block

_WHY = {"hum": "mains hum", "signal": "flat, saturated or NaN signal",
        "impulse": "far outside its range", "settling": "signal back, settling"}


def status_line(block: Block, fs: float, stimulator, protocol, why: Sequence[str]) -> str:
    """One line: time, per-channel envelope/threshold (or why it is suspended),
    the stimulator's outputs, the trial counts."""
    parts = [f"t={block.stop / fs:7.1f}s"]
    for c, name in enumerate(block.channels):
        env = float(block.envelope[-1, c])
        thr = float(block.on_threshold[c])
        if why[c] == "impulse":  # the impulse gate holds it: no new onset for a moment
            flag = " HELD (" + _WHY[why[c]] + ")"
        elif why[c]:
            flag = " SUSPENDED (" + _WHY.get(why[c], why[c]) + ")"
        else:
            flag = "" if math.isfinite(thr) else " (learning rest)"
        parts.append(f"{name} {env:.3g}/{thr:.3g}{flag}")
    if stimulator is not None:
        on = [f"ch{ch} {o.current_ma:.0f}mA"
              for ch, o in sorted(stimulator.outputs.items()) if o.is_on]
        parts.append("stim " + (", ".join(on) if on else "off"))
    if protocol is not None:
        c = protocol.counts
        parts.append(f"trials {c.trials} hits {c.hits} misses {c.misses}")
    return " | ".join(parts)


__all__ = ["status_line"]
