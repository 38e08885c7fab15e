"""One function over many inputs: on this machine's cores, or on a Dask cluster.

``replay``, ``evaluate`` and ``export`` run one task per file (or per file and config);
:func:`run_batch` runs them and hands back one :class:`TaskResult` per task, **in input
order** whatever finished first, so a table or a printout does not depend on where or
in which order the tasks ran.

Where the tasks run
-------------------
* ``cluster=None`` (the default): worker processes on this machine, ``jobs`` of them
  (default: every core); one task or ``jobs=1`` runs in this process.
* ``cluster="tcp://HOST:8786"``: an existing Dask distributed scheduler (``pip install
  'closedloop[cluster]'``). The workers must have closedloop installed (the same
  version) and see the files at the same paths (a shared file system): the commands
  pass absolute paths. Nothing but the task's arguments and its result travel.

A failing task is reported, not fatal
-------------------------------------
Every task runs inside :func:`_call`: a :class:`~closedloop.errors.ClosedLoopError`
(a bad file, a bad config) becomes the result's ``error`` (its message), any other
exception ``error`` plus the traceback in ``detail`` (a bug, to be reported), and a
worker that died (killed, out of memory, a crash in a C library) becomes an error of
that task alone. The other tasks go on; the caller decides the exit code. Ctrl-C is
not caught: it ends the batch.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from closedloop.errors import ClosedLoopError, ConfigError

T = TypeVar("T")

#: ``progress(done, total)``: called in this process as tasks finish.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class TaskResult(Generic[T]):
    """What one task gave back.

    Attributes
    ----------
    index : int
        Position of the task in the input.
    value : object or None
        The function's return value (None when it failed).
    error : str or None
        One line saying what went wrong (None when it worked).
    detail : str
        The traceback of an unexpected exception (a bug), else "".
    exception : ClosedLoopError or None
        The closedloop error itself (for a caller that re-raises it).
    """

    index: int
    value: T | None = None
    error: str | None = None
    detail: str = ""
    exception: ClosedLoopError | None = None

    @property
    def ok(self) -> bool:
        """The task returned a value."""
        return self.error is None


def _call(fn: Callable[[Any], T], index: int, item: Any) -> TaskResult[T]:
    """Run one task; every exception but Ctrl-C becomes the result's error."""
    try:
        return TaskResult(index, fn(item))
    except ClosedLoopError as exc:
        return TaskResult(index, None, str(exc), exception=exc)
    except Exception as exc:  # noqa: BLE001 - one bad task must not end the batch
        return TaskResult(index, None, f"unexpected {type(exc).__name__}: {exc}",
                          traceback.format_exc())


def default_jobs() -> int:
    """Worker processes by default: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def run_batch(
    fn: Callable[[Any], T],
    items: Iterable[Any],
    *,
    jobs: int | None = None,
    cluster: str | None = None,
    progress: Progress | None = None,
) -> list[TaskResult[T]]:
    """Run ``fn(item)`` for every item; results in input order (module docstring).

    Parameters
    ----------
    fn : callable
        A module-level function (or a :func:`functools.partial` of one): it is sent to
        worker processes by reference, so the workers must be able to import it.
    items : iterable
        One argument per task; picklable.
    jobs : int, optional
        Local worker processes (default :func:`default_jobs`); ignored with ``cluster``.
    cluster : str, optional
        Address of a running Dask scheduler (``tcp://host:8786``).
    progress : callable, optional
        ``progress(done, total)`` after each finished task.

    Raises
    ------
    ConfigError
        ``cluster`` given but Dask distributed is not installed, or the scheduler cannot
        be reached.
    """
    todo = list(items)
    if cluster:
        return _on_dask(fn, todo, cluster, progress)
    n = min(default_jobs() if jobs is None else max(1, int(jobs)), len(todo))
    if n <= 1:
        out = []
        for i, item in enumerate(todo):
            out.append(_call(fn, i, item))
            if progress is not None:
                progress(i + 1, len(todo))
        return out
    results: list[TaskResult[T] | None] = [None] * len(todo)
    with ProcessPoolExecutor(max_workers=n) as pool:
        futures: dict[Future, int] = {pool.submit(_call, fn, i, item): i
                                      for i, item in enumerate(todo)}
        try:
            for done, fut in enumerate(as_completed(futures), start=1):
                i = futures[fut]
                try:
                    results[i] = fut.result()
                except Exception as exc:  # noqa: BLE001 - BrokenProcessPool: a worker died
                    results[i] = TaskResult(i, None, f"the worker process ended without a "
                                                     f"result ({type(exc).__name__}: {exc})")
                if progress is not None:
                    progress(done, len(todo))
        except BaseException:  # Ctrl-C, SIGTERM: no task goes on, none starts
            # (the executor has no public way to stop a running task: its workers are
            # ours, and end as SIGTERM always ended them)
            workers = list((getattr(pool, "_processes", None) or {}).values())
            pool.shutdown(wait=False, cancel_futures=True)
            for worker in workers:
                worker.terminate()
            raise
    return [r for r in results if r is not None]


def _on_dask(fn: Callable[[Any], T], todo: Sequence[Any], address: str,
             progress: Progress | None) -> list[TaskResult[T]]:
    """The tasks on an existing Dask scheduler; see :func:`run_batch`."""
    try:
        from distributed import Client
        from distributed import as_completed as dask_completed
    except ImportError:
        raise ConfigError(
            f"--cluster {address}: Dask distributed is not installed; install it with "
            "pip install 'closedloop[cluster]'"
        ) from None
    try:
        client = Client(address, timeout=10, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:  # ValueError: not an address
        raise ConfigError(
            f"--cluster {address}: cannot reach a Dask scheduler there ({exc}); check the "
            "address and that `dask scheduler` and its workers are running"
        ) from None
    results: list[TaskResult[T] | None] = [None] * len(todo)
    try:
        futures = client.map(_call, [fn] * len(todo), range(len(todo)), todo, pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        for done, fut in enumerate(dask_completed(futures, loop=client.loop), start=1):
            i = index[fut.key]
            try:
                results[i] = fut.result()
            except Exception as exc:  # noqa: BLE001 - KilledWorker, lost connection
                results[i] = TaskResult(i, None, f"the Dask task ended without a result "
                                                 f"({type(exc).__name__}: {exc})")
            if progress is not None:
                progress(done, len(todo))
    finally:
        client.close()
    return [r for r in results if r is not None]


__all__ = ["Progress", "TaskResult", "default_jobs", "run_batch"]
