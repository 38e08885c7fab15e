"""How fast ``closedloop stim-receiver`` switches off when its session dies or freezes.

Per round: one ``closedloop run --stimulator lsl`` session (simulated patient) and one
``closedloop stim-receiver --session NAME --json`` on it, both real processes. After a
second of heartbeats the session is killed (SIGKILL: the kernel closes its sockets, the
receiver sees the stream lost) or frozen (SIGSTOP: its sockets stay open, only the
missing heartbeat tells). The figure is the receiver's ``ALL OFF`` time (its
``t_monotonic``, this machine's monotonic clock) minus the moment the signal was sent.

Usage::

    PYTHONPATH=. python tools/bench_receiver_off.py [--rounds 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "biceps_triceps.toml")


def _line(stream, pattern: str) -> str:
    for line in stream:
        if re.search(pattern, line):
            return line
    raise RuntimeError(f"the process ended before printing {pattern!r}")


def one_round(exe: str, sig: signal.Signals) -> dict:
    """Start a session and its receiver, send ``sig`` to the session; the times."""
    run = subprocess.Popen(
        [exe, "run", "--config", CONFIG, "--stimulator", "lsl", "--no-gui",
         "--confirm-checklist", "--quiet", "--duration", "120"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    rx = None
    try:
        name = re.search(r"session (closedloop-\S+);",
                         _line(run.stderr, r"session closedloop-")).group(1)
        rx = subprocess.Popen([exe, "stim-receiver", "--session", name, "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        _line(rx.stdout, r'"action": "locked"')
        time.sleep(1.0)
        sent = time.monotonic()
        os.kill(run.pid, sig)
        off = json.loads(_line(rx.stdout, r'"action": "all_off"'))
        return {"signal": sig.name, "ms": 1000 * (off["t_monotonic"] - sent),
                "why": off["message"]}
    finally:
        if run.poll() is None:
            run.kill()
            os.kill(run.pid, signal.SIGCONT)
        run.wait(timeout=10)
        if rx is not None and rx.poll() is None:
            rx.kill()
            rx.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json", action="store_true", help="last line: one JSON object")
    args = p.parse_args(argv)
    exe = shutil.which("closedloop")
    if exe is None:
        print("bench_receiver_off: the closedloop script is not installed", file=sys.stderr)
        return 1
    figures: dict[str, list[float]] = {}
    for sig in (signal.SIGKILL, signal.SIGSTOP):
        for k in range(args.rounds):
            r = one_round(exe, sig)
            figures.setdefault(sig.name, []).append(r["ms"])
            print(f"{sig.name} round {k + 1}: receiver all off after {r['ms']:.1f} ms "
                  f"({r['why']})", flush=True)
    for name, ms in figures.items():
        print(f"{name} -> all off: min {min(ms):.1f} ms, median {sorted(ms)[len(ms) // 2]:.1f} "
              f"ms, max {max(ms):.1f} ms over {len(ms)} rounds")
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
