"""One place that builds a session: a config and the command line's specs in, opened
devices, outlets, recorder, STOP inlet and view out; closed again in the right order.

``closedloop run``, ``closedloop bench --latency``, ``tools/soak.py`` and the view's demo
(``closedloop view --demo``) all build their session here, so what they run and measure
is what a clinician's session does::

    plan = SessionPlan("configs/biceps_triceps.toml", source="sim", record="s.xdf")
    with Session(plan).open() as session:
        out = session.run(LoopOptions(duration_s=60), stop=stop)
        closed = session.close(out)

:meth:`Session.open` goes step by step, each only once the one before has succeeded:

1. claim the recording file (before anything else: a file that may not be written stops
   the session first, and a session never writes over its config or a replayed
   recording: :func:`~closedloop.io.outfile.claim_output`);
2. the config (loaded when given as a file; ``--patient`` and ``--operator`` checked),
   the session id; the stimulator and the source from their registries
   (:mod:`closedloop.runtime.devices`: the stimulator's program is checked against what
   the device can do, no port opened yet);
3. open the stimulator; the simulated stimulator follows the simulated patient's clock
   (its pulses start at the next sample, as a real device's start when told);
4. the pre-stimulation safety checklist (a real stimulator only; :func:`checklist_for`);
5. open the source; refuse to stimulate from another session's re-published stream;
6. the patient's stored calibration when the config has none (before anything is
   published, so the recording keeps what the session runs with);
7. the LSL outlets and the STOP inlet (the view, or any program, can stop the session;
   nothing over the network can start or raise stimulation);
8. the live view in its own process (it can never stall or crash the loop);
9. the recorder (LabRecorderCLI), then the config and metadata announced to it.

A failure at any step closes what was opened (every channel off) and raises.
:meth:`Session.close` undoes it all, whatever happened: the stimulator first (closing
switches every channel off), the source, the STOP inlet, the view; then the recorder is
stopped and the file proved to hold every sample, the outlets closed, and the file let
go (a file claimed for a session that never recorded is removed). Closing never raises:
what failed is in the :class:`Closed` it returns and in the outcome it is given.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from closedloop.children import python_command
from closedloop.config import Config, load_config
from closedloop.core.stream import SourceInfo
from closedloop.errors import SafetyError
from closedloop.identity import UID_HEX, SessionId, check_operator
from closedloop.io.records import now_iso, resolve_path
from closedloop.runtime.devices import check_input, make_source, make_stimulator
from closedloop.runtime.outcome import LoopOptions, Outcome, StoppedWhileOpeningError, StopRequest
from closedloop.sim.patient import Attempt
from closedloop.sources.base import Source
from closedloop.sources.sim import SimSource
from closedloop.stim.base import Stimulator
from closedloop.stim.drivers.sim import SimStimulator

if TYPE_CHECKING:
    from closedloop.io.outfile import OutputClaim
    from closedloop.io.outlets import SessionOutlets
    from closedloop.io.recorder import RecordingReport, XdfRecorder
    from closedloop.runtime.control import ControlCommand, ControlInlet
    from closedloop.runtime.patient_record import CalibrationChoice


@dataclass(frozen=True)
class SessionPlan:
    """What to build (see the module docstring).

    Attributes
    ----------
    config : Config, str or Path
        The session's config, or its TOML file (loaded by :meth:`Session.open`, after
        the recording is claimed). With a patient id, the patient's stored calibration
        is used when the config has none.
    patient : str or None
        The patient's pseudonymous id, over the config's (``--patient``).
    source, stimulator : str, a device, or None
        A spec of the registry (``sim``, ``lsl:name=NAME``, ``p24:/dev/ttyUSB0``,
        ``none``...; None: the config's ``[session]`` choice), or a device built by the
        caller (not yet opened; the session opens and closes it).
    seed : int or None
        The simulated patient's seed (``--seed``).
    realtime : bool
        Pace a simulated or replayed source in real time.
    script : sequence of Attempt or None
        What the simulated patient does (default: attempts at random).
    name : str or None
        The session's name, the prefix of its streams (default: a fresh
        ``closedloop-<config name>-<uid>``).
    record : str or Path or None
        Record the session to this XDF file (LabRecorderCLI); never over an existing
        file unless ``overwrite``, never over an input.
    overwrite : bool
    publish : bool
        Publish the session's LSL outlets and listen for STOP (always, when recording
        or showing the view).
    view : bool
        Show the live view (``closedloop view``, its own process). Without a display
        it is left out (and said), unless ``view_offscreen``.
    view_offscreen : bool
        A benchmark measuring what the view costs: without a display it runs
        offscreen, its output discarded.
    confirm_checklist : bool
        The safety checklist was checked (``--confirm-checklist``); otherwise a real
        stimulator needs it answered on the terminal.
    patient_db : Path or None
        The patient record (default: :func:`~closedloop.io.records.resolve_path`).
    operator : str or None
        Who runs the session (``--operator``; checked when the session opens).
    metadata : mapping
        Further metadata for the recording.
    """

    config: Config | str | Path
    patient: str | None = None
    source: str | Source | None = None
    stimulator: str | Stimulator | None = None
    seed: int | None = None
    realtime: bool = True
    script: Sequence[Attempt] | None = None
    name: str | None = None
    record: str | Path | None = None
    overwrite: bool = False
    publish: bool = True
    view: bool = False
    view_offscreen: bool = False
    confirm_checklist: bool = False
    patient_db: Path | None = None
    operator: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def publishes(self) -> bool:
        """The session has LSL outlets (asked for, or needed to record or to view)."""
        return self.publish or self.record is not None or self.view


@dataclass
class Closed:
    """What closing a session found.

    Attributes
    ----------
    stimulator_error : str
        Closing the stimulator failed ("" when it did not): its channels may be on.
    channels_on : list of int
        The channels the driver last told to be on, after the loop's and close()'s
        stop (empty when every channel is off).
    recorded : str or None
        The summary's line about the recording (None: nothing was recorded).
    report : RecordingReport or None
        What the file holds against what was published.
    recorder_error : str or None
        The recorder failed to stop, or its file could not be checked.
    """

    stimulator_error: str = ""
    channels_on: list[int] = field(default_factory=list)
    recorded: str | None = None
    report: RecordingReport | None = None
    recorder_error: str | None = None

    def apply(self, out: Outcome) -> None:
        """Say in ``out`` what closing found: channels not confirmed off (a device
        fault when the session had ended normally), a recording incomplete or failed
        (an error when it had)."""
        if self.stimulator_error:
            out.all_off = False
            out.message += (f"; closing the stimulator failed ({self.stimulator_error}) - "
                            "switch it off by hand")
            if out.exit_code == 0:
                out.reason = "device"
        if out.exit_code != 0:
            return
        if self.recorder_error is not None:
            out.reason, out.message = "error", f"recording failed: {self.recorder_error}"
        elif self.report is not None and not self.report.ok:
            out.reason, out.message = "error", f"recording incomplete: {self.report.summary()}"


class Session:
    """The devices, outlets, recorder, STOP inlet and view of one session.

    Build it from a :class:`SessionPlan`, :meth:`open` it, :meth:`run` the loop and
    :meth:`close` it (a ``with`` block closes it too). ``tell`` gets what the session
    has to say while it opens (a stream that is another session's, the calibration
    used, no display for the view).
    """

    def __init__(self, plan: SessionPlan, *,
                 tell: Callable[[str], None] | None = None) -> None:
        self.plan = plan
        #: The config the session runs with (None until :meth:`open` has loaded it).
        self.config: Config | None = plan.config if isinstance(plan.config, Config) else None
        self.operator: str | None = None
        self.tell = tell or (lambda _line: None)
        self.started = now_iso()
        self.ident: SessionId | None = None
        self.claim: OutputClaim | None = None
        self.stimulator: Stimulator | None = None
        self.source: Source | None = None
        self.checklist: dict[str, Any] | None = None
        self.calibration: CalibrationChoice | None = None
        self.outlets: SessionOutlets | None = None
        self.control: ControlInlet | None = None
        self.view: subprocess.Popen[bytes] | None = None
        self.recorder: XdfRecorder | None = None
        self._closed: Closed | None = None
        self._stop: StopRequest | None = None

    @property
    def name(self) -> str:
        """The session's name (the prefix of its streams); "" before :meth:`open`."""
        return self.ident.name if self.ident is not None else ""

    # -- open ---------------------------------------------------------------------------------
    def open(self, stop: StopRequest | None = None) -> Session:
        """Build and open everything, in order (module docstring); on any failure close
        what was opened and raise.

        ``stop`` (the request a signal sets, :func:`~closedloop.runtime.signals.stop_on_signals`)
        is looked at between the steps and during the waits that can be long (a stream
        that has not appeared yet, the checklist's questions): a request made meanwhile
        ends the opening at once with :class:`~closedloop.runtime.outcome.StoppedWhileOpeningError`,
        what was opened closed, nothing stimulated.

        Raises
        ------
        ConfigError
            The recording file may not be written, the config is not valid, a spec is
            not understood, the stimulator cannot run the program.
        SafetyError
            The checklist was not confirmed; the source is another session's stream.
        DeviceError, InputError
            A device could not be opened.
        StoppedWhileOpeningError
            ``stop`` was requested.
        """
        self._stop = stop
        try:
            self._open()
        except BaseException:
            self._shut()
            raise
        return self

    def _stopped(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    def _halt(self) -> None:
        """Between two steps of opening: end it if a stop was requested."""
        if self._stop is not None and self._stop.is_set():
            raise StoppedWhileOpeningError(self._stop.reason)

    def _open(self) -> None:
        plan = self.plan
        if plan.record is not None:  # first: a file that may not be written stops us
            self.claim = _claim_recording(plan)
        config = plan.config if isinstance(plan.config, Config) else load_config(plan.config)
        if plan.patient:
            config = config.with_patient(plan.patient, where="--patient")
        self.operator = check_operator(plan.operator) if plan.operator is not None else None
        self.config = config
        self.ident = _identity(config, plan.name)
        self.stimulator = stim = (
            plan.stimulator if isinstance(plan.stimulator, Stimulator)
            else make_stimulator(config, plan.stimulator, session=self.ident))
        self.source = source = (
            plan.source if isinstance(plan.source, Source)
            else make_source(config, plan.source, seed=plan.seed, realtime=plan.realtime,
                             stimulator=stim, script=plan.script))
        source.cancelled = self._stopped  # a stream awaited: a signal ends the wait
        self._halt()
        if stim is not None:
            stim.open()
            if isinstance(stim, SimStimulator) and stim.clock is None \
                    and isinstance(source, SimSource):
                stim.follow(source.now)  # pulses start at the next sample
        self._halt()
        self.checklist = checklist_for(stim, confirmed=plan.confirm_checklist,
                                       stop=self._stop)
        self._halt()
        source.open()
        self._halt()
        note = check_input(source, stim)
        if note:
            self.tell(note)
        if config.patient:  # before anything is published or recorded: they keep it
            from closedloop.runtime.patient_record import start_calibration

            self.calibration = start_calibration(config, resolve_path(plan.patient_db),
                                                 source.info.units)
            self.config = config = self.calibration.config
            if self.calibration.note:
                self.tell(self.calibration.note)
        if plan.publishes:
            self.outlets = self._outlets(config, source, stim)
            from closedloop.runtime.control import ControlInlet

            self.control = ControlInlet(self.name)
        self._halt()
        if plan.view:
            self.view = open_view(self.name, offscreen=plan.view_offscreen, tell=self.tell)
        if plan.record is not None and self.outlets is not None:
            from closedloop.io.recorder import XdfRecorder

            self.recorder = XdfRecorder(plan.record, self.outlets.recorder_predicates(),
                                        claim=self.claim)
            self.recorder.start()
            self.outlets.announce()

    def _outlets(self, config: Config, source: Source,
                 stim: Stimulator | None) -> SessionOutlets:
        from closedloop.core.detectors.base import statistic_of
        from closedloop.io.outlets import SessionOutlets

        sim = source if isinstance(source, SimSource) else None
        assert self.ident is not None
        return SessionOutlets(
            self.name, muscle_info(config, source.info), config_text=config.text,
            metadata={"config": config.path, "source": source.info.name,
                      "stimulator": type(stim).__name__ if stim else "none",
                      "started": self.started,
                      "patient": config.patient, "operator": self.operator,
                      "calibration": self.calibration.metadata if self.calibration else None,
                      "checklist": self.checklist,
                      "resolved_config": config.resolved,
                      **({"sim_seed": sim.seed} if sim is not None else {}),
                      **self.plan.metadata},
            session_uid=self.ident.uid,
            # the simulated patient's true onsets, recorded as truth markers
            truth=sim.true_onsets_between if sim is not None else None,
            # the envelope and thresholds streams' units: what the detector decides on
            statistic=statistic_of(config.detector_kind),
        )

    # -- run ----------------------------------------------------------------------------------
    def poll(self) -> list[ControlCommand]:
        """Control commands (STOP) received since the last call; none without outlets."""
        return self.control.poll() if self.control is not None else []

    def run(self, options: LoopOptions, *, stop: StopRequest | None = None,
            status: Callable[[str], None] | None = None,
            control: Callable[[], Sequence[ControlCommand]] | None = None) -> Outcome:
        """Run the loop (:func:`~closedloop.runtime.loop.run_loop`) on the opened
        session: its devices, its outlets, its recorder checked after every chunk, and
        its STOP inlet (``control`` replaces it: a tool that also wants a call per
        chunk calls :meth:`poll` itself)."""
        from closedloop.runtime.loop import run_loop

        if self.source is None or self.config is None:
            raise RuntimeError("Session.run() before open()")
        return run_loop(self.config, self.source, self.stimulator, options=options,
                        stop=stop, outlets=self.outlets, recorder=self.recorder,
                        status=status, control=control or self.poll)

    # -- after ------------------------------------------------------------------------------
    def save_record(self, out: Outcome, *, recorded: bool) -> tuple[int | None, str | None]:
        """Add the session to the patient record, once every channel is off and the
        recording is closed: (row id, the summary's line). No patient: nothing stored
        (the line says how to store it); no config (it could not be loaded, the
        recording or ``--operator`` was refused first): nothing at all. Never raises: a
        record that cannot be written is said in the line and never changes how the
        session ended."""
        from closedloop.runtime.patient_record import save, session_record

        config = self.config
        if config is None:
            return None, None
        if not config.patient:
            return None, "none (no patient id: --patient ID or patient = \"ID\" stores it)"
        choice = self.calibration
        record = session_record(
            out, config, started=self.started, units=self.units,
            operator=self.operator,
            recording=str(self.plan.record) if recorded and self.plan.record else None,
            calibration_from=choice.record.id if choice and choice.record else None)
        return save(record, resolve_path(self.plan.patient_db))

    @property
    def units(self) -> str:
        """Units of the EMG source ("" when it never opened)."""
        try:
            return self.source.info.units if self.source is not None else ""
        except Exception:  # noqa: BLE001 - a source that failed to open may not know
            return ""

    # -- close --------------------------------------------------------------------------------
    def close(self, out: Outcome | None = None) -> Closed:
        """Close everything (module docstring; idempotent) and say in ``out`` what
        closing found (:meth:`Closed.apply`)."""
        closed = self._shut()
        if out is not None:
            closed.apply(out)
        return closed

    def _shut(self) -> Closed:
        if self._closed is not None:
            return self._closed
        self._closed = closed = Closed()
        stim = self.stimulator
        try:
            if stim is not None:
                stim.close()
        except Exception as exc:  # noqa: BLE001 - reported, and the rest still closes
            closed.stimulator_error = f"{type(exc).__name__}: {exc}"
        if stim is not None:  # what the driver last told the device
            closed.channels_on = sorted(ch for ch, o in stim.outputs.items() if o.is_on)
        for step in (self._close_source, self._close_control, self._close_view,
                     lambda: self._close_recording(closed)):
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - one failure must not leave the rest open
                self.tell(f"closing the session: {type(exc).__name__}: {exc}")
        return closed

    def _close_source(self) -> None:
        if self.source is not None:
            self.source.close()

    def _close_control(self) -> None:
        if self.control is not None:
            self.control.close()

    def _close_view(self) -> None:
        view = self.view
        if view is not None and view.poll() is None:
            view.terminate()
            try:
                view.wait(timeout=5)
            except subprocess.TimeoutExpired:
                view.kill()
                view.wait(timeout=5)

    def _close_recording(self, closed: Closed) -> None:
        """Stop the recorder and prove every sample is in the file; close the outlets;
        let the file go."""
        try:
            if self.recorder is not None and self.outlets is not None:
                path, shown = self.recorder.path, self.plan.record  # as the user wrote it
                try:
                    self.recorder.stop()
                except Exception as exc:  # noqa: BLE001 - reported; the file is still read
                    closed.recorder_error = str(exc)
                counts = self.outlets.counts
                try:
                    from closedloop.io.recorder import verify_recording

                    closed.report = verify_recording(path, counts)
                except Exception as exc:  # noqa: BLE001
                    closed.recorder_error = closed.recorder_error or str(exc)
                closed.recorded = (f"{shown} - recorder failed: {closed.recorder_error}"
                                   if closed.recorder_error is not None or closed.report is None
                                   else f"{shown} - {closed.report.summary()}")
        finally:
            if self.outlets is not None:
                self.outlets.close()
            if self.claim is not None:
                self.claim.release()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._shut()


def _identity(config: Config, name: str | None) -> SessionId:
    """A fresh identity, named ``name`` when given (in every stream and stimulation
    message)."""
    if name is None:
        return SessionId.new(config.name)
    return SessionId(uid=uuid.uuid4().hex[:UID_HEX], name=name)


def _claim_recording(plan: SessionPlan) -> OutputClaim:
    """Claim the recording (:mod:`closedloop.io.outfile`): never over the config or a
    replayed recording, never over an existing file without ``overwrite``, never while
    another session writes it."""
    from closedloop.io.outfile import claim_output
    from closedloop.sources.spec import files_read

    assert plan.record is not None
    config = plan.config.path if isinstance(plan.config, Config) else plan.config
    inputs: list[tuple[str, str | Path | None]] = [
        ("config", config), ("patient record", resolve_path(plan.patient_db))]
    if isinstance(plan.source, str):
        inputs += files_read(plan.source)
    return claim_output(plan.record, overwrite=plan.overwrite, inputs=inputs,
                        what="recording")


def checklist_for(stimulator: Stimulator | None, *, confirmed: bool,
                  stop: StopRequest | None = None) -> dict[str, Any]:
    """The pre-stimulation safety checklist, as recorded in the session metadata.

    Required before a real stimulator is used: asked on the terminal, or confirmed with
    ``--confirm-checklist`` (``confirmed``) for scripted use. A session without a
    stimulator, or with the simulated one (no patient attached), records why it was not
    asked. While a question waits for its answer, a ``stop`` request (Ctrl-C: the
    session's signal handlers only record it) ends the checklist at once.

    Raises
    ------
    SafetyError
        A real stimulator, no confirmation and no terminal to ask on.
    ChecklistRefusedError
        A question was not answered yes.
    """
    from closedloop.runtime.checklist import ask_checklist, confirmed_by_flag

    if stimulator is None:
        return {"required": False, "why": "no stimulator"}
    if isinstance(stimulator, SimStimulator):
        return {"required": False, "why": "simulated stimulator"}
    if confirmed:
        return confirmed_by_flag().to_dict()
    if not sys.stdin.isatty():
        raise SafetyError(
            "the safety checklist must be confirmed before stimulating a patient: run "
            "closedloop run in a terminal to answer it, or pass --confirm-checklist once "
            "it has been checked"
        )
    if stop is None:
        return ask_checklist().to_dict()
    from closedloop.runtime.signals import stoppable_input

    return ask_checklist(input=stoppable_input(stop)).to_dict()


def has_display() -> bool:
    """Whether a window can be shown (X11, Wayland, or a Qt platform chosen)."""
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
                or os.environ.get("QT_QPA_PLATFORM"))


def open_view(session_name: str, *, offscreen: bool = False,
              tell: Callable[[str], None] | None = None) -> subprocess.Popen[bytes] | None:
    """Start ``closedloop view`` for this session in its own process (it reads the
    session's LSL streams, so it can never stall or crash the loop), or None when there
    is no display (said through ``tell``). ``offscreen``: a benchmark of what watching
    costs: without a display the view runs offscreen, and its output is discarded."""
    env = dict(os.environ)
    if not has_display():
        if not offscreen:
            if tell is not None:
                tell("no display; running without the live view (use --no-gui to silence this)")
            return None
        env["QT_QPA_PLATFORM"] = "offscreen"
    output = subprocess.DEVNULL if offscreen else None  # a window's messages: the session's
    argv, env = python_command("-m", "closedloop", "view", "--session", session_name,
                               env=env)
    return subprocess.Popen(argv, env=env, stdout=output, stderr=output)


def muscle_info(config: Config, info: SourceInfo) -> SourceInfo:
    """The source's info with the config's muscle names as its channels (what the
    session's EMG stream is labelled with)."""
    return replace(info, channels=config.muscle_names)


__all__ = ["Closed", "Session", "SessionPlan", "checklist_for", "has_display", "muscle_info",
           "open_view"]
