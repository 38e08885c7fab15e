"""Headless Chromium for tests that check a page as a browser renders it.

Debian's ``chromium`` package (``.ci/run`` installs it). Every call gets its own
profile folder and no network services, so nothing leaks between runs and nothing is
fetched from the internet.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run")


def chromium() -> str:
    """The browser's executable (the test is skipped, with how to install it, if none)."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium; .ci/run does)")
    return exe


def _run(args: list[str], profile: Path, timeout: float) -> subprocess.CompletedProcess:
    profile.mkdir(parents=True, exist_ok=True)
    return subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=timeout)


def dump_dom(page: Path, profile: Path, timeout: float = 60.0) -> str:
    """The DOM of ``page`` after the browser loaded and laid it out."""
    r = _run(["--dump-dom", page.resolve().as_uri()], profile, timeout)
    assert r.returncode == 0 and "<html" in r.stdout, r.stderr[-2000:]
    return r.stdout


def screenshot(page: Path, png: Path, profile: Path, size: tuple[int, int] = (1100, 1500),
               timeout: float = 60.0) -> Path:
    """A PNG of ``page`` rendered in a window of ``size`` pixels."""
    r = _run([f"--screenshot={png.resolve()}", f"--window-size={size[0]},{size[1]}",
              "--hide-scrollbars", page.resolve().as_uri()], profile, timeout)
    assert r.returncode == 0 and png.exists(), r.stderr[-2000:]
    return png


def print_pdf(page: Path, pdf: Path, profile: Path, timeout: float = 60.0) -> Path:
    """``page`` printed to a PDF as the browser's print dialog would (the page's own
    print CSS and ``@page`` size; no header or footer added by the browser)."""
    r = _run([f"--print-to-pdf={pdf.resolve()}", "--no-pdf-header-footer",
              page.resolve().as_uri()], profile, timeout)
    assert r.returncode == 0 and pdf.exists(), r.stderr[-2000:]
    return pdf


def pdf_pages(pdf: Path) -> list[tuple[float, float]]:
    """Width and height (points) of each page of a PDF Chromium printed (its page
    objects are not compressed: read from the file's text)."""
    data = pdf.read_bytes()
    boxes = re.findall(rb"/MediaBox\s*\[\s*0\s+0\s+([\d.]+)\s+([\d.]+)\s*\]", data)
    counts = [int(c) for c in re.findall(rb"/Type\s*/Pages\s*/Count\s+(\d+)", data)]
    assert counts and max(counts) == len(boxes), "not a PDF Chromium printed"
    return [(float(w), float(h)) for w, h in boxes]


#: A4 in PDF points (210 x 297 mm).
A4_PT = (595.3, 841.9)
