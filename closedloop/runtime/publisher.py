"""Where the loop publishes what it saw and decided: the :class:`Publisher` interface.

:func:`~closedloop.runtime.loop.run_loop` hands every segment of samples, every block
of the signal core (envelope, thresholds, events), every command handed to the
stimulator and every marker (trial events, input issues, who sent STOP) to one
publisher. A live session's is :class:`~closedloop.io.outlets.SessionOutlets` (LSL
streams, which LabRecorder records and the live view shows); a session that publishes
nothing gets :class:`NullPublisher`; a test may keep what it is given. The interface is
structural (a :class:`typing.Protocol`): an implementation need not import it, so the io
layer implements it without depending on the runtime above it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from closedloop.core.events import Block
from closedloop.core.evoked import MWave
from closedloop.stim.commands import StimCommand


@runtime_checkable
class Publisher(Protocol):
    """What the loop publishes to (see the module docstring)."""

    def push_emg(self, samples: np.ndarray, timestamps: np.ndarray, *,
                 start: int | None = None,
                 source_counter: np.ndarray | None | bool = False) -> None:
        """Samples as received (NaN and inf included), from sample ``start`` on, with
        the source's own counter (None: it has none)."""

    def push_block(self, block: Block) -> None:
        """The signal core's output for these samples: envelope, thresholds, events."""

    def push_commands(self, commands: Sequence[StimCommand]) -> None:
        """Commands handed to the stimulator (and the final off-commands)."""

    def push_marker(self, label: str, time: float, *, sample: int | None = None,
                    **fields: Any) -> None:
        """A marker at stream time ``time`` (``cue``, ``hit``, ``input_issue``,
        ``channel_restart``, ``stop_request``, ...)."""

    def push_mwaves(self, records: Sequence[MWave]) -> None:
        """Evoked-response records (M-waves) as the loop measured them."""

    def push_tally(self, position: int, time: float, *, duration_s: float | None = None,
                   force: bool = False) -> bool:
        """The session's running totals up to sample ``position`` (onsets, triggers,
        stimulation trains and time), so a view that attaches late shows them from the
        session's start; published only when due. True when something was published."""


class NullPublisher:
    """Publishes nothing: the default of a loop run without outlets."""

    def push_emg(self, samples: np.ndarray, timestamps: np.ndarray, *,
                 start: int | None = None,
                 source_counter: np.ndarray | None | bool = False) -> None:
        """Nothing."""

    def push_block(self, block: Block) -> None:
        """Nothing."""

    def push_commands(self, commands: Sequence[StimCommand]) -> None:
        """Nothing."""

    def push_marker(self, label: str, time: float, *, sample: int | None = None,
                    **fields: Any) -> None:
        """Nothing."""


    def push_mwaves(self, records: Sequence[MWave]) -> None:
        """Nothing."""

    def push_tally(self, position: int, time: float, *, duration_s: float | None = None,
                   force: bool = False) -> bool:
        """Nothing (False)."""
        return False


__all__ = ["NullPublisher", "Publisher"]
