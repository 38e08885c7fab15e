"""EMG from any BrainFlow board (OpenBCI Cyton, synthetic, playback file, ...).

Channels and rate come from BrainFlow's own board description: the EMG rows
(``get_emg_channels``) and ``get_sampling_rate``; for the playback board, those of its
``master_board``. Labels come from the description's ``eeg_names`` when the EMG rows
are EEG rows too (BrainFlow names the electrodes there), else ``EMG1..n``; both can be
overridden. BrainFlow scales ExG rows to microvolts, so units are ``"uV"``.

Stream time
-----------
BrainFlow's timestamp row is the host's wall clock at the moment each packet was
*received*: it jitters by milliseconds, arrives in bursts on Bluetooth and serial links,
and jumps when NTP adjusts the clock. Decisions must not depend on that, so this
source makes stream time from sample counts::

    t[i] = t0 + i / fs

where ``i`` counts the samples delivered since :meth:`BrainFlowSource.open` and ``t0``
is the board timestamp of the first sample, moved once into the LSL clock domain
(``pylsl.local_clock``) so the recording lines up with other LSL streams. Chunking
cannot change these values (they depend on ``i`` only), and a replay reads them back
from the recording. Lost samples do not shift later timestamps; they show up in the
counter instead. The board timestamps are still used for one thing: a watchdog
comparing the rate they imply with the nominal rate over ``rate_window`` seconds, which
raises :class:`~closedloop.errors.InputError` when the board runs far from the rate its
description claims (filters and detector timing would be wrong).

Counter
-------
The package-number row (where the board has one) wraps around (0..255 on the Cyton and
the synthetic board). It is unwrapped modulo ``counter_modulus`` into
:attr:`Chunk.counter`, which then counts packets since the start: a jump means lost
samples, a repeat a duplicate (see :mod:`closedloop.core.checks`). Boards whose
package numbers do not step by one per sample (e.g. the Ganglion's compressed packets)
should pass ``counter_modulus=None``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pylsl
from brainflow.board_shim import BoardIds, BoardShim, BrainFlowInputParams, IpProtocolTypes
from brainflow.exit_codes import BrainFlowError, BrainFlowExitCodes

from closedloop.core.stream import Chunk, SourceInfo
from closedloop.errors import ConfigError, DeviceLostError, InputError
from closedloop.sources.base import Source

#: Short names accepted besides every ``BoardIds`` member name.
BOARD_ALIASES: dict[str, BoardIds] = {
    "synthetic": BoardIds.SYNTHETIC_BOARD,
    "playback": BoardIds.PLAYBACK_FILE_BOARD,
    "cyton": BoardIds.CYTON_BOARD,
}

_STR_PARAMS = (
    "serial_port",
    "mac_address",
    "ip_address",
    "ip_address_aux",
    "ip_address_anc",
    "other_info",
    "serial_number",
    "file",
    "file_aux",
    "file_anc",
)
_INT_PARAMS = ("ip_port", "ip_port_aux", "ip_port_anc", "timeout")
#: Every BrainFlow parameter name :class:`BrainFlowSource` accepts.
PARAM_NAMES = (*_STR_PARAMS, *_INT_PARAMS, "ip_protocol", "master_board")

_CONFIG_CODES = {
    BrainFlowExitCodes.INVALID_ARGUMENTS_ERROR,
    BrainFlowExitCodes.UNSUPPORTED_BOARD_ERROR,
    BrainFlowExitCodes.JSON_NOT_FOUND_ERROR,
    BrainFlowExitCodes.NO_SUCH_DATA_IN_JSON_ERROR,
}
_HINTS = {
    BrainFlowExitCodes.PORT_ALREADY_OPEN_ERROR: "the port is already open (another "
    "program such as the OpenBCI GUI, or another session in this process, holds it)",
    BrainFlowExitCodes.UNABLE_TO_OPEN_PORT_ERROR: "could not open the port: check the "
    "dongle or cable is plugged in, the port name, and your permission to use it",
    BrainFlowExitCodes.SER_PORT_ERROR: "serial port error: check the port name and cable",
    BrainFlowExitCodes.BOARD_WRITE_ERROR: "could not write to the board: check it is "
    "switched on and in range",
    BrainFlowExitCodes.INCOMMING_MSG_ERROR: "unexpected answer from the board: check the "
    "board id matches the device",
    BrainFlowExitCodes.INITIAL_MSG_ERROR: "the board did not answer its start-up "
    "message: check it is switched on, charged and in range",
    BrainFlowExitCodes.BOARD_NOT_READY_ERROR: "the board is not ready: switch it off and "
    "on again, then retry",
    BrainFlowExitCodes.SYNC_TIMEOUT_ERROR: "the board did not answer in time: check "
    "power, range and the 'timeout' parameter",
    BrainFlowExitCodes.ANOTHER_BOARD_IS_CREATED_ERROR: "another session with the same "
    "board and parameters is open: close it first",
    BrainFlowExitCodes.STREAM_THREAD_ERROR: "BrainFlow's acquisition thread failed",
    BrainFlowExitCodes.STREAM_THREAD_IS_NOT_RUNNING: "BrainFlow's acquisition thread is "
    "not running",
    BrainFlowExitCodes.BOARD_NOT_CREATED_ERROR: "the board session does not exist any more",
}


def _board_choices() -> str:
    names = sorted({*BOARD_ALIASES, *(m.name.lower() for m in BoardIds if m.value >= -3)})
    return ", ".join(names)


def resolve_board(board: str | int) -> BoardIds:
    """The ``BoardIds`` member for a board name or id.

    Accepts ``"synthetic"``, ``"playback"``, ``"cyton"``, any ``BoardIds`` member name
    (case-insensitive, with or without the ``_BOARD`` suffix, e.g. ``"cyton_daisy"``)
    or its integer id (also as a string, e.g. ``"-1"``).

    Raises
    ------
    ConfigError
        Unknown board, with the list of accepted names.
    """
    if isinstance(board, bool):
        raise ConfigError(f"board {board!r} is not a board name or id")
    if isinstance(board, (int, np.integer)):
        try:
            return BoardIds(int(board))
        except ValueError:
            raise ConfigError(
                f"BrainFlow board id {board} is unknown; use one of: {_board_choices()}"
            ) from None
    text = str(board).strip()
    try:
        return resolve_board(int(text))
    except ValueError:
        pass
    key = text.lower().replace("-", "_")
    if key in BOARD_ALIASES:
        return BOARD_ALIASES[key]
    for cand in (key.upper(), key.upper() + "_BOARD"):
        if cand in BoardIds.__members__:
            return BoardIds[cand]
    raise ConfigError(f"BrainFlow board {board!r} is unknown; use one of: {_board_choices()}")


def _translate(exc: BrainFlowError, what: str, board: str) -> Exception:
    """A closedloop error for a BrainFlow error code, with what to check."""
    try:
        code = BrainFlowExitCodes(exc.exit_code)
    except ValueError:
        code = None
    hint = _HINTS.get(code, "see BrainFlow's log above for details") if code else str(exc)
    msg = f"{board}: {what} failed ({code.name if code else exc.exit_code}): {hint}"
    if code in _CONFIG_CODES:
        return ConfigError(msg)
    return DeviceLostError(msg)


def make_input_params(params: Mapping[str, str | int]) -> BrainFlowInputParams:
    """``BrainFlowInputParams`` from a mapping of parameter names to values.

    Values may be strings (as parsed from a source spec). ``master_board`` accepts a
    board name or id, ``ip_protocol`` ``"tcp"``, ``"udp"``, ``"none"`` or a number.

    Raises
    ------
    ConfigError
        Unknown key or a value of the wrong type, naming the key and the allowed values.
    """
    p = BrainFlowInputParams()
    for key, value in params.items():
        if key in _STR_PARAMS:
            setattr(p, key, str(value))
        elif key in _INT_PARAMS:
            try:
                setattr(p, key, int(value))
            except (TypeError, ValueError):
                raise ConfigError(
                    f"BrainFlow parameter {key} = {value!r} is not allowed; expected an integer"
                ) from None
        elif key == "ip_protocol":
            text = str(value).strip().upper()
            names = {
                "NONE": IpProtocolTypes.NO_IP_PROTOCOL,
                "UDP": IpProtocolTypes.UDP,
                "TCP": IpProtocolTypes.TCP,
            }
            if text in names:
                p.ip_protocol = names[text].value
            else:
                try:
                    p.ip_protocol = IpProtocolTypes(int(text)).value
                except ValueError:
                    raise ConfigError(
                        f"BrainFlow parameter ip_protocol = {value!r} is not allowed; "
                        "expected tcp, udp, none or 0..2"
                    ) from None
        elif key == "master_board":
            p.master_board = resolve_board(value).value
        else:
            raise ConfigError(
                f"BrainFlow parameter {key!r} is unknown; allowed: {', '.join(PARAM_NAMES)}"
            )
    return p


class BrainFlowSource(Source):
    """EMG from a BrainFlow board. See the module docstring for stream time and counter.

    Parameters
    ----------
    board : str or int
        Board name or id (see :func:`resolve_board`).
    params : mapping of str to str
        BrainFlow parameters (``serial_port``, ``ip_address``, ``ip_port``,
        ``mac_address``, ``serial_number``, ``file``, ``master_board``, ``timeout``,
        ``other_info``...). The playback board needs ``file`` and ``master_board``.
    chunk_timeout : float
        Seconds without any new sample after which the board counts as lost
        (:class:`~closedloop.errors.DeviceLostError`). Not applied once a playback
        file has been delivered completely (see :attr:`finished`).
    channels : sequence of int, optional
        1-based positions in the board's EMG channel list to use (default: all).
    labels : sequence of str, optional
        Channel labels, one per used channel (default: from the board description).
    counter_modulus : int or None
        Wrap-around of the package-number row; None to deliver no counter.
    poll_interval : float
        Seconds between polls of BrainFlow's ring buffer in :meth:`read`.
    buffer_seconds : float
        Size of BrainFlow's ring buffer, in seconds of data.
    rate_window, rate_tolerance : float
        The board-timestamp rate watchdog (see the module docstring).
    """

    kind = "brainflow"
    spec_form = "brainflow:BOARD[?k=v&...]  (e.g. brainflow:cyton?serial_port=/dev/ttyUSB0)"

    @classmethod
    def parse_spec(cls, spec: str, target: str, options: dict[str, str]) -> dict[str, str]:
        """``BOARD`` (a name or id) and BrainFlow's parameters plus ``channels``,
        ``labels``, ``chunk_timeout``, ``counter_modulus``."""
        from urllib.parse import unquote

        from closedloop.sources.spec import spec_error

        board = unquote(target).strip()
        if not board:
            raise spec_error(spec, "brainflow needs a board (brainflow:synthetic, brainflow:cyton)")
        if "board" in options:
            raise spec_error(spec, "give the board after 'brainflow:', not as an option")
        return {"board": board, **options}

    @classmethod
    def from_spec(cls, spec: str, params: dict[str, str], context) -> BrainFlowSource:  # noqa: ANN001
        """The source of a ``brainflow:BOARD`` spec's parameters."""
        from closedloop.sources.spec import csv_list, existing_file, number

        params = dict(params)
        board = params.pop("board")
        if "file" in params:
            existing_file(spec, "file", params["file"])
        kwargs: dict = {}
        if "channels" in params:
            kwargs["channels"] = [int(number(spec, "channels", c, int))
                                  for c in csv_list(params.pop("channels"))]
        if "labels" in params:
            kwargs["labels"] = csv_list(params.pop("labels"))
        if "chunk_timeout" in params:
            kwargs["chunk_timeout"] = number(spec, "chunk_timeout", params.pop("chunk_timeout"))
        if "counter_modulus" in params:
            text = params.pop("counter_modulus")
            kwargs["counter_modulus"] = (
                None if text.lower() == "none" else int(number(spec, "counter_modulus", text, int))
            )
        return cls(board, params, **kwargs)

    def __init__(
        self,
        board: str | int,
        params: Mapping[str, str] | None = None,
        *,
        chunk_timeout: float = 5.0,
        channels: Sequence[int] | None = None,
        labels: Sequence[str] | None = None,
        counter_modulus: int | None = 256,
        poll_interval: float = 0.002,
        buffer_seconds: float = 600.0,
        rate_window: float = 10.0,
        rate_tolerance: float = 0.05,
    ) -> None:
        super().__init__()
        self.board_id = resolve_board(board)
        self.params = dict(params or {})
        self._input = make_input_params(self.params)
        if chunk_timeout <= 0 or poll_interval <= 0:
            raise ConfigError("chunk_timeout and poll_interval must be positive numbers")
        self.chunk_timeout = float(chunk_timeout)
        self.poll_interval = float(poll_interval)
        self.buffer_seconds = float(buffer_seconds)
        self.rate_window = float(rate_window)
        self.rate_tolerance = float(rate_tolerance)
        self.counter_modulus = counter_modulus
        self._channels_sel = None if channels is None else [int(c) for c in channels]
        self._labels_override = None if labels is None else [str(x) for x in labels]
        self._stop = threading.Event()
        self._shim: BoardShim | None = None
        self._reset_stream_state()
        if self.board_id == BoardIds.PLAYBACK_FILE_BOARD:
            if self._input.master_board == BoardIds.NO_BOARD.value:
                raise ConfigError(
                    "brainflow playback board needs master_board (the board that recorded "
                    "the file, e.g. master_board=synthetic) and file"
                )
            if not self._input.file:
                raise ConfigError("brainflow playback board needs file=PATH of the recording")
        self.master_id = (
            BoardIds(self._input.master_board)
            if self.board_id == BoardIds.PLAYBACK_FILE_BOARD
            else self.board_id
        )
        self._describe()

    # -- description ---------------------------------------------------------------------
    @property
    def _name(self) -> str:
        if self.board_id == BoardIds.PLAYBACK_FILE_BOARD:
            return f"brainflow playback of {Path(self._input.file).name} ({self.master_id.name})"
        return f"brainflow {self.board_id.name}"

    def _describe(self) -> None:
        """Read rows, rate and labels from BrainFlow's board description."""
        mid = self.master_id.value
        try:
            emg_rows = list(BoardShim.get_emg_channels(mid))
        except BrainFlowError:
            raise ConfigError(
                f"{self._name}: BrainFlow's description of {self.master_id.name} lists no EMG "
                "channels; choose a board with ExG inputs"
            ) from None
        try:
            self.fs = float(BoardShim.get_sampling_rate(mid))
            self._ts_row = int(BoardShim.get_timestamp_channel(mid))
            self._n_rows = int(BoardShim.get_num_rows(mid))
            descr = BoardShim.get_board_descr(mid)
        except BrainFlowError as exc:
            raise _translate(exc, "reading the board description", self._name) from None
        try:
            self._pkg_row: int | None = int(BoardShim.get_package_num_channel(mid))
        except BrainFlowError:
            self._pkg_row = None
        names = [n.strip() for n in str(descr.get("eeg_names", "")).split(",") if n.strip()]
        eeg_rows = list(descr.get("eeg_channels", []))
        default_labels = []
        for k, row in enumerate(emg_rows):
            if row in eeg_rows and len(names) == len(eeg_rows):
                default_labels.append(names[eeg_rows.index(row)])
            else:
                default_labels.append(f"EMG{k + 1}")
        if len(set(default_labels)) != len(default_labels):
            default_labels = [f"EMG{k + 1}" for k in range(len(emg_rows))]
        if self._channels_sel is not None:
            bad = [c for c in self._channels_sel if not 1 <= c <= len(emg_rows)]
            if bad or not self._channels_sel:
                raise ConfigError(
                    f"{self._name}: channels {self._channels_sel} not allowed; the board has "
                    f"EMG channels 1..{len(emg_rows)} ({', '.join(default_labels)})"
                )
            emg_rows = [emg_rows[c - 1] for c in self._channels_sel]
            default_labels = [default_labels[c - 1] for c in self._channels_sel]
        labels = default_labels
        if self._labels_override is not None:
            if len(self._labels_override) != len(emg_rows) or len(
                set(self._labels_override)
            ) != len(self._labels_override):
                raise ConfigError(
                    f"{self._name}: {len(self._labels_override)} labels "
                    f"{self._labels_override} for {len(emg_rows)} channels; give one "
                    "distinct label per channel"
                )
            labels = list(self._labels_override)
        self._emg_rows = emg_rows
        self._labels = tuple(labels)

    def _check_playback_file(self) -> int:
        """Validate the playback file; return its number of samples."""
        path = Path(self._input.file)
        if not path.is_file():
            raise ConfigError(f"{self._name}: playback file {str(path)!r} does not exist")
        n_lines = 0
        with path.open("rb") as fh:
            first = fh.readline()
            if first.strip():
                n_lines = 1
            for line in fh:
                if line.strip():
                    n_lines += 1
        text = first.decode("utf-8", "replace").strip()
        n_cols = len(text.split("\t" if "\t" in text else ","))
        if n_lines == 0:
            raise ConfigError(f"{self._name}: playback file {str(path)!r} is empty")
        if n_cols != self._n_rows:
            raise ConfigError(
                f"{self._name}: playback file {str(path)!r} has {n_cols} columns but "
                f"{self.master_id.name} data has {self._n_rows}; set master_board to the board "
                "that recorded the file"
            )
        return n_lines

    # -- lifecycle -------------------------------------------------------------------------
    def _reset_stream_state(self) -> None:
        self._n_delivered = 0
        self._t0: float | None = None
        self._last_pkg: int | None = None
        self._counter = 0
        self._last_data_wall: float | None = None
        self._rate_marks: list[tuple[int, float]] = []
        self._file_samples: int | None = None

    def open(self) -> None:
        """Prepare the session and start streaming. Idempotent.

        Raises
        ------
        ConfigError
            Bad parameters or playback file.
        DeviceLostError
            The board cannot be reached, with what to check.
        """
        if self.is_open:
            return
        self._reset_stream_state()
        if self.board_id == BoardIds.PLAYBACK_FILE_BOARD:
            self._file_samples = self._check_playback_file()
        self._stop.clear()
        where = self._name
        if self.params:
            where += " (" + ", ".join(f"{k}={v!r}" for k, v in self.params.items()) + ")"
        shim = BoardShim(self.board_id.value, self._input)
        error: Exception | None = None
        try:
            shim.prepare_session()
            shim.start_stream(max(1000, int(self.buffer_seconds * self.fs)))
        except BrainFlowError as exc:
            step = "prepare_session" if not shim.is_prepared() else "start_stream"
            error = _translate(exc, step, where)
            _release(shim)
        if error is not None:
            del shim  # no BoardShim.__del__ at interpreter exit through the traceback
            raise error
        self._shim = shim
        self._info = SourceInfo(
            name=self._name, fs=self.fs, channels=self._labels, units="uV", kind="brainflow"
        )
        self._last_data_wall = time.perf_counter()
        super().open()

    def close(self) -> None:
        """Stop streaming and release the board. Idempotent."""
        self._stop.set()
        shim, self._shim = self._shim, None
        if shim is not None:
            try:
                shim.stop_stream()
            except BrainFlowError:
                pass
            _release(shim)
        super().close()

    @property
    def finished(self) -> bool:
        """True once a playback file has been delivered completely."""
        return self._file_samples is not None and self._n_delivered >= self._file_samples

    @property
    def samples_delivered(self) -> int:
        """Number of samples delivered since :meth:`open` (the same as :attr:`position`)."""
        return self._n_delivered

    @property
    def position(self) -> int:
        """Samples delivered since :meth:`open`."""
        return self._n_delivered

    @property
    def exhausted(self) -> bool:
        """A playback file delivered completely (:attr:`finished`); a live board never."""
        return self.finished

    # -- reading -----------------------------------------------------------------------------
    def read(self, timeout: float) -> Chunk | None:
        """Next chunk, or None when nothing arrived within ``timeout`` seconds.

        Polls BrainFlow's ring buffer every ``poll_interval`` seconds (an interruptible
        wait, not a busy loop); returns as soon as any sample is there.

        Raises
        ------
        DeviceLostError
            BrainFlow reports an error, or no sample arrived for ``chunk_timeout``.
        InputError
            The board's timestamps show a rate far from its nominal rate.
        """
        shim = self._shim
        if shim is None or not self.is_open:
            raise DeviceLostError(f"{self._name}: read() on a closed source; open() it first")
        deadline = time.perf_counter() + max(0.0, timeout)
        while True:
            try:
                count = int(shim.get_board_data_count())
                data = shim.get_board_data(count) if count > 0 else None
            except BrainFlowError as exc:
                raise _translate(exc, "reading data", self._name) from None
            now = time.perf_counter()
            if data is not None and data.shape[1] > 0:
                self._last_data_wall = now
                return self._make_chunk(data, now)
            if self._last_data_wall is not None and not self.finished:
                silent = now - self._last_data_wall
                if silent > self.chunk_timeout:
                    raise DeviceLostError(
                        f"{self._name}: no data for {silent:.1f} s (chunk_timeout = "
                        f"{self.chunk_timeout:g} s): check the board is on, charged and in "
                        "range, and the dongle or cable is plugged in"
                    )
            remaining = deadline - now
            if remaining <= 0 or self._stop.is_set():
                return None
            self._stop.wait(min(self.poll_interval, remaining))

    def _make_chunk(self, data: np.ndarray, arrival: float) -> Chunk:
        n = data.shape[1]
        samples = np.ascontiguousarray(data[self._emg_rows].T, dtype=np.float64)
        board_ts = np.asarray(data[self._ts_row], dtype=np.float64)
        if self._t0 is None:
            # one anchor: BrainFlow's wall-clock stamp of the first sample, in LSL time
            self._t0 = float(board_ts[0]) - (time.time() - pylsl.local_clock())
        idx = self._n_delivered + np.arange(n, dtype=np.float64)
        timestamps = self._t0 + idx / self.fs
        counter = None
        if self._pkg_row is not None and self.counter_modulus:
            counter = self._unwrap(np.asarray(data[self._pkg_row]))
        self._watch_rate(board_ts)
        self._n_delivered += n
        return Chunk(samples=samples, timestamps=timestamps, counter=counter, arrival_wall=arrival)

    def _unwrap(self, pkg: np.ndarray) -> np.ndarray:
        """Unwrap package numbers into a running packet count (first packet = 0)."""
        mod = int(self.counter_modulus or 0)
        raw = np.rint(pkg).astype(np.int64) % mod
        prev = np.empty_like(raw)
        prev[1:] = raw[:-1]
        if self._last_pkg is None:
            prev[0] = raw[0]
            base = 0
        else:
            prev[0] = self._last_pkg
            base = self._counter
        step = (raw - prev) % mod
        if self._last_pkg is None:
            step[0] = 0
        counter = base + np.cumsum(step)
        self._last_pkg = int(raw[-1])
        self._counter = int(counter[-1])
        return counter

    def _watch_rate(self, board_ts: np.ndarray) -> None:
        """Compare the rate implied by BrainFlow's timestamps with the nominal rate."""
        if self.rate_window <= 0:
            return
        end_index = self._n_delivered + board_ts.shape[0] - 1
        t_end = float(board_ts[-1])
        if not math.isfinite(t_end):
            return
        self._rate_marks.append((end_index, t_end))
        first_idx, first_t = self._rate_marks[0]
        span = t_end - first_t
        if span < self.rate_window:
            return
        rate = (end_index - first_idx) / span if span > 0 else math.inf
        while len(self._rate_marks) > 1 and t_end - self._rate_marks[1][1] >= self.rate_window:
            self._rate_marks.pop(0)
        if abs(rate / self.fs - 1.0) > self.rate_tolerance:
            raise InputError(
                f"{self._name}: the board delivers {rate:.1f} samples/s but BrainFlow's "
                f"description says {self.fs:g} Hz (over the last {span:.1f} s); check the "
                "board's sample-rate setting and the board id (e.g. cyton vs cyton_daisy)"
            )


def _release(shim: BoardShim) -> None:
    try:
        if shim.is_prepared():
            shim.release_session()
    except BrainFlowError:
        pass
