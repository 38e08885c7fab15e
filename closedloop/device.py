"""One lifecycle for every device: sources and stimulators, real or simulated.

Every device has ``open()`` / ``close()``, a clear ``is_open`` and context-manager
support. ``close()`` must be safe to call twice and after a failed ``open()``.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType


def _never() -> bool:
    return False


class Device:
    """Base class of every EMG source and stimulator.

    Attributes
    ----------
    cancelled : callable
        Asked during a long wait in :meth:`open` (a stream that has not appeared yet):
        True means give up, because the session was asked to stop while it opened (a
        signal). The session sets it; by default it never is.
    """

    def __init__(self) -> None:
        self._is_open = False
        self.cancelled: Callable[[], bool] = _never

    @property
    def is_open(self) -> bool:
        """True between a successful :meth:`open` and :meth:`close`."""
        return self._is_open

    def open(self) -> None:
        """Connect to the device. Subclasses call ``super().open()`` once connected."""
        self._is_open = True

    def close(self) -> None:
        """Release the device. Idempotent. Subclasses call ``super().close()``."""
        self._is_open = False

    def __enter__(self):  # noqa: ANN204 - returns the subclass
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
