"""``closedloop replay``'s progress bar: tqdm on a terminal, nothing at all into a pipe.

Both through the installed command on the shipped recording: stderr a pipe (as in a
script, CI or a log), then stderr a pseudo-terminal (as a user at a shell sees it).
"""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import termios
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REC = ROOT / "recordings" / "sim_biceps_triceps.xdf"


def test_into_a_pipe_the_replay_writes_no_bar_and_no_carriage_return(tmp_path):
    r = subprocess.run(["closedloop", "replay", str(REC), "--check"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "check passed" in r.stdout
    assert "\r" not in r.stdout + r.stderr
    assert "%|" not in r.stderr and "sample/s" not in r.stderr


def test_on_a_terminal_the_replay_shows_a_tqdm_bar(tmp_path):
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the terminal's last writer is gone
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        proc = subprocess.run(["closedloop", "replay", str(REC), "--check"], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=slave, text=True, timeout=300)
    finally:
        os.close(slave)
    reader.join(timeout=10)
    os.close(master)
    terminal = b"".join(chunks).decode("utf-8", "replace")
    assert proc.returncode == 0, terminal
    assert "check passed" in proc.stdout and "\r" not in proc.stdout
    # tqdm's bar: redrawn in place, with the rate in samples and the final 100 %
    assert "\r" in terminal and "replay: 100%|" in terminal, terminal[-2000:]
    assert "sample/s" in terminal, terminal[-2000:]
