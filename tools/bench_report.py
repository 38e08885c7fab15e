"""How long ``closedloop report`` takes for a long session.

``PYTHONPATH=. python tools/bench_report.py [--minutes 60] [--recording FILE.xdf]``
records a simulated session of ``--minutes`` (the soak's recording,
:func:`tools.soak.soak` at fast speed: the live loop, the simulated patient and
stimulator, a real LabRecorderCLI; about 5 minutes for an hour on one core), or takes
``--recording``, then builds its report as ``closedloop report`` does and prints:

* **load**: reading the XDF (:func:`closedloop.io.xdf.load_session`);
* **analyse**: the replay through the live pipeline (the envelope the detector saw,
  the effort of every attempt), the counts, and the figures;
* **render**: the HTML page from its template;
* the total, the page's size and the process's peak resident memory.

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _soak():
    spec = importlib.util.spec_from_file_location("soak", ROOT / "tools" / "soak.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bench(recording: str | Path) -> dict:
    """Build the report of ``recording`` (in memory), timed by stage."""
    from closedloop.analysis.report import analyse, render
    from closedloop.io.xdf import load_session

    t0 = time.perf_counter()
    session = load_session(recording)
    t1 = time.perf_counter()
    page = analyse(session)
    t2 = time.perf_counter()
    html = render(page)
    t3 = time.perf_counter()
    return {
        "recording": str(recording),
        "session_s": round(session.n / session.fs, 1),
        "samples": int(session.n),
        "channels": len(session.channels),
        "commands": len(session.commands),
        "load_s": round(t1 - t0, 2),
        "analyse_s": round(t2 - t1, 2),
        "render_s": round(t3 - t2, 3),
        "total_s": round(t3 - t0, 2),
        "html_kb": round(len(html.encode("utf-8")) / 1024),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tools/bench_report.py",
                                description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=60.0,
                   help="length of the simulated session to record (default 60)")
    p.add_argument("--recording", help="report this XDF recording instead of recording one")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="closedloop-bench-report-") as tmp:
        path = a.recording
        if path is None:
            path = Path(tmp) / "session.xdf"
            print(f"recording a {a.minutes:g}-minute simulated session ...", flush=True)
            f = _soak().soak(a.minutes, record=path)
            if not f["recording_ok"]:
                print(f"the recording is incomplete: {f['recording_summary']}", file=sys.stderr)
                return 1
        r = bench(path)
    print(f"report of a {r['session_s'] / 60:.1f}-minute session ({r['samples']} samples x "
          f"{r['channels']} channels, {r['commands']} stimulation commands):")
    print(f"  load XDF : {r['load_s']:.2f} s")
    print(f"  analyse  : {r['analyse_s']:.2f} s (replay through the pipeline, counts, figures)")
    print(f"  render   : {r['render_s']:.3f} s")
    print(f"  total    : {r['total_s']:.2f} s; page {r['html_kb']} kB; peak memory "
          f"{r['peak_rss_mb']} MB")
    print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
