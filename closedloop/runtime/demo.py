"""A simulated session to show: ``closedloop view --demo N``.

:class:`DemoSession` is a real session, built by :mod:`closedloop.runtime.session` as
``closedloop run`` builds one, with the simulated patient and the simulated stimulator:
the same input checks, signal core, cued-trials protocol, safety guard, artifact
blanking and LSL outlets, and the same STOP inlet. So the view shows what a session
does (the envelope after blanking, the events the loop decided, the commands the guard
let through, the trial markers), and STOP ends the demo as it ends a session: every
channel off at once. Only the config and the patient's script are the demo's own: a
cue for the first muscle every ``cue_every_s``, which the simulated patient answers
most of the time (some cues are missed on purpose), the other muscles moving now and
then.

The loop runs in a background thread (the view runs in the main thread, or its own
process); :meth:`DemoSession.close` stops it and closes the session.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import numpy as np

from closedloop.config import loads_config
from closedloop.errors import ClosedLoopError, InputError
from closedloop.runtime.outcome import LoopOptions, Outcome, StopRequest
from closedloop.runtime.session import Session, SessionPlan
from closedloop.sim.patient import Attempt

if TYPE_CHECKING:
    from closedloop.io.outlets import SessionOutlets
    from closedloop.runtime.control import ControlCommand

DEMO_MUSCLES = (
    "biceps", "triceps", "wrist_ext", "wrist_flex", "deltoid_ant", "deltoid_post",
    "tibialis_ant", "gastrocnemius",
)

#: The ways a demo ends that are not failures.
_NORMAL_ENDS = ("duration", "ended", "stop_button")


def demo_config_text(muscles: tuple[str, ...], fs: float, cue_every_s: float,
                     window_s: float, n_trials: int, *, chunk_ms: float = 10.0,
                     seed: int = 0, detector: str | None = None) -> str:
    """A cued-trials config for the demo's muscles (stimulating the first one), with
    the ``detector`` kind named (default: the built-in default).

    Its watchdog is generous (1 s): the demo shares its process with the window it
    feeds, and a slow frame must not end it as a stalled amplifier would.
    """
    lines = [
        'name = "demo"',
        'description = "closedloop view demo (simulated session)"',
        "[session]",
        f"fs = {fs!r}",
        f"chunk_ms = {chunk_ms!r}",
        "watchdog_ms = 1000.0",
        "[sim]",
        "snr_db = 12.0",
        f"seed = {seed}",
        "[protocol]",
        'kind = "cued_trials"',
        f'agonist = "{muscles[0]}"',
        "[protocol.trials]",
        f"n_trials = {n_trials}",
        "first_cue_s = 2.0",
        f"work_s = {cue_every_s - 2.0!r}",
        "rest_s = 2.0",
        f"response_window_s = {window_s!r}",
    ]
    if detector is not None:
        lines += ["[detector]", f'kind = "{detector}"']
    for k, m in enumerate(muscles):
        lines += ["[[muscles]]", f'name = "{m}"', f'placement = "demo electrodes on {m}"']
        if k == 0:
            lines += [
                "[muscles.stim]", "channel = 1", "current_ma = 20.0", "on_time_s = 2.0",
                "ramp_up_s = 0.2", "ramp_down_s = 0.2",
                "[muscles.limits]", "max_current_ma = 30.0", "max_step_ma = 5.0",
            ]
    return "\n".join(lines) + "\n"


def demo_script(muscles: tuple[str, ...], cue_every_s: float, n_trials: int,
                rng: np.random.Generator) -> list[Attempt]:
    """What the simulated patient does: answers most cues of the first muscle within a
    second or so (one in five is missed), the other muscles move now and then."""
    script = []
    for k in range(n_trials):
        cue = 2.0 + k * cue_every_s
        if rng.random() < 0.8:  # answers the cue
            script.append(Attempt(muscles[0], cue + rng.uniform(0.4, 1.2),
                                  rng.uniform(1.5, 2.5), rng.uniform(0.6, 1.0), 0.05))
        for m in muscles[1:]:  # other muscles move now and then
            if rng.random() < 0.5:
                script.append(Attempt(m, cue + rng.uniform(1.0, 3.0), rng.uniform(0.8, 1.5),
                                      rng.uniform(0.5, 1.0), 0.05))
    return script


class DemoSession:
    """A simulated session on LSL (see the module docstring).

    Parameters
    ----------
    session_name : str
        The session's name (the prefix of its streams).
    n_channels : int
        1..8 muscles (names from :data:`DEMO_MUSCLES`).
    fs : float
    chunk : int
        Samples per chunk.
    realtime : bool
        Pace the simulated patient against the wall clock (samples due since the
        start, no drift).
    cue_every_s, response_window_s, n_trials : float, float, int
        Trial timing: a cue for the first muscle every ``cue_every_s``, answered within
        ``response_window_s`` for a hit; the session ends after the last trial.
    seed : int

    Attributes
    ----------
    stim_stopped : threading.Event
        Set once the session has ended with every channel off (STOP included).
    outcome : Outcome or None
        How the session ended, once it has.
    error : BaseException or None
        Why it failed, if it did (anything but its end, STOP or :meth:`close`).
    """

    def __init__(
        self,
        session_name: str,
        *,
        n_channels: int = 2,
        fs: float = 2000.0,
        chunk: int = 20,
        realtime: bool = True,
        cue_every_s: float = 9.0,
        response_window_s: float = 3.0,
        n_trials: int = 60,
        seed: int = 0,
        detector: str | None = None,
    ) -> None:
        if not 1 <= n_channels <= len(DEMO_MUSCLES):
            raise InputError(f"n_channels = {n_channels}: the demo has 1..{len(DEMO_MUSCLES)}")
        self.session_name = session_name
        self.muscles = DEMO_MUSCLES[:n_channels]
        self.fs = float(fs)
        self.chunk = int(chunk)
        self.realtime = realtime
        self.cue_every_s = float(cue_every_s)
        self.window_s = float(response_window_s)
        self.n_trials = int(n_trials)
        self.seed = int(seed)
        self.config_text = demo_config_text(
            self.muscles, self.fs, self.cue_every_s, self.window_s, self.n_trials,
            chunk_ms=1000.0 * self.chunk / self.fs, seed=self.seed, detector=detector,
        )
        self.config = loads_config(self.config_text, source="<closedloop view demo>")
        self.session: Session | None = None
        self.outcome: Outcome | None = None
        self.error: BaseException | None = None
        self.stim_stopped = threading.Event()
        self.stops_received = 0
        self._stop = StopRequest()
        self._thread: threading.Thread | None = None

    @property
    def outlets(self) -> SessionOutlets | None:
        """The session's LSL outlets (None before :meth:`start`)."""
        return self.session.outlets if self.session is not None else None

    @property
    def duration_s(self) -> float:
        """Stream seconds the demo runs: every trial, and a second after the last."""
        return 2.0 + self.n_trials * self.cue_every_s + 1.0

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> DemoSession:
        """Build and open the session (outlets, STOP inlet) and run its loop in a
        background thread."""
        script = demo_script(self.muscles, self.cue_every_s, self.n_trials,
                             np.random.default_rng(self.seed))
        plan = SessionPlan(self.config, source="sim", stimulator="sim", seed=self.seed,
                           realtime=self.realtime, script=script, name=self.session_name,
                           metadata={"demo": True})
        self.session = Session(plan).open()
        self._thread = threading.Thread(target=self._run, name="closedloop-demo", daemon=True)
        self._thread.start()
        return self

    def stop_stimulation(self) -> None:
        """STOP pressed in this process (``closedloop view --demo``): the session ends
        with every channel off, as ``closedloop run`` does on STOP."""
        self._stop.set("stop_button")

    def close(self) -> None:
        """End the session (waits up to 3 s for its loop) and close it. Idempotent."""
        self._stop.set("ended")  # a request already made (STOP) keeps its reason
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=3.0)
        if self.session is not None:
            self.session.close(self.outcome)

    def __enter__(self) -> DemoSession:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the loop (its own thread) --------------------------------------------------------------
    def _poll(self) -> list[ControlCommand]:
        assert self.session is not None
        commands = self.session.poll()
        self.stops_received += sum(c.command == "stop" for c in commands)
        return commands

    def _run(self) -> None:
        assert self.session is not None
        try:
            out = self.session.run(
                LoopOptions(duration_s=self.duration_s,
                            watchdog_s=self.config.session.watchdog_ms / 1000.0),
                stop=self._stop, control=self._poll)
            self.outcome = out
            if out.reason not in _NORMAL_ENDS:
                self.error = out.error or ClosedLoopError(out.message)
        except BaseException as exc:  # noqa: BLE001 - kept for the caller to see
            self.error = exc
        finally:
            self.stim_stopped.set()


__all__ = ["DEMO_MUSCLES", "DemoSession", "demo_config_text", "demo_script"]
