"""Command-to-acknowledgement latency of the P24 driver, on the P24 emulator.

Run from the repository root (the emulator lives with the tests)::

    python tools/bench_p24.py [--n 1000] [--json]

The emulator runs as its own process on a pty (``python -m tests.emulators.p24``), as a
device would. Measured, for ``--n`` stimulation updates (``Ml_update``, alternating
between two levels on two channels at different frequencies):

* ``driver ack``: from the driver's write of the packet to the decoded acknowledgement
  (the driver's own clock, :attr:`closedloop.stim.drivers.p24.P24.ack_latencies_ms`);
* ``driver apply``: the caller's view, one :meth:`P24.apply` call (hand-over to the
  driver thread, the write, the acknowledgement, the hand-back);
* ``science-mode-4 update``: the library's own ``LayerMidLevel.update`` over its
  ``SerialPortConnection`` (``ProtocolHelper.send_packet_and_wait``, which polls for the
  answer every 10 ms), for comparison with the driver's event-driven transaction.

A pty is not a USB link: a real P24 adds its USB round trip and firmware time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from closedloop.stim.commands import StimCommand  # noqa: E402
from closedloop.stim.drivers.p24 import P24, _library  # noqa: E402


class Emulator:
    """The emulator script as a child process."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.emulators.p24"], cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.path = self.proc.stdout.readline().strip()

    def close(self) -> None:
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()


def commands(k: int) -> list[StimCommand]:
    level = 20.0 if k % 2 else 21.0
    return [StimCommand("biceps", 1, level, 250.0, 35.0, k, 0.0, "plateau"),
            StimCommand("triceps", 2, level / 2, 250.0, 20.0, k, 0.0, "plateau")]


def bench_driver(n: int) -> tuple[np.ndarray, np.ndarray]:
    emu = Emulator()
    try:
        with P24(emu.path, channels=(1, 2), response_timeout=0.5) as driver:
            driver.apply(commands(0))
            calls = []
            for k in range(1, n + 1):
                t0 = time.perf_counter()
                driver.apply(commands(k))
                calls.append(1000.0 * (time.perf_counter() - t0))
            acks = [ms for name, ms in driver.ack_latencies_ms if name == "Ml_update"][-n:]
            driver.check()
    finally:
        emu.close()
    return np.asarray(acks), np.asarray(calls)


def bench_library(n: int) -> np.ndarray:
    _library()  # its console log filtered, as the driver does
    from science_mode_4 import (
        ChannelPoint,
        DeviceP24,
        MidLevelChannelConfiguration,
        SerialPortConnection,
    )

    emu = Emulator()
    conn = SerialPortConnection(emu.path)
    conn.open()
    out = []

    async def run() -> None:
        ml = DeviceP24(conn).get_layer_mid_level()
        await ml.init(True)
        for k in range(n):
            level = 20.0 if k % 2 else 21.0
            cfg = [MidLevelChannelConfiguration(True, 0, period, [
                ChannelPoint(250, i), ChannelPoint(100, 0), ChannelPoint(250, -i)])
                for period, i in ((29, level), (50, level / 2))]
            t0 = time.perf_counter()
            await ml.update(cfg)
            out.append(1000.0 * (time.perf_counter() - t0))
        await ml.stop()

    try:
        asyncio.run(run())
    finally:
        conn.close()
        emu.close()
    return np.asarray(out)


def stats(x: np.ndarray) -> dict[str, float]:
    return {"n": int(x.size), "p50_ms": float(np.percentile(x, 50)),
            "p99_ms": float(np.percentile(x, 99)), "max_ms": float(x.max())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000, help="updates per measurement")
    p.add_argument("--json", action="store_true", help="last line: one JSON object")
    args = p.parse_args(argv)
    acks, calls = bench_driver(args.n)
    lib = bench_library(min(args.n, 300))
    results = {"driver_ack": stats(acks), "driver_apply": stats(calls),
               "science_mode_4_update": stats(lib)}
    print("P24 command -> acknowledgement on the emulator (pty, emulator in its own process)")
    for name, r in results.items():
        print(f"  {name:22s} p50 {r['p50_ms']:7.3f} ms   p99 {r['p99_ms']:7.3f} ms   "
              f"max {r['max_ms']:7.3f} ms   ({r['n']} updates)")
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
