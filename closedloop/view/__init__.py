"""The live view: what a running session sees, and the controls a clinician needs.

* :mod:`~closedloop.view.buffers` — pure ring buffers, peak decimation and display state;
* :mod:`~closedloop.view.lsl_client` — subscribes to a session's LSL streams (read only);
* :mod:`~closedloop.runtime.control` — the STOP path: a control marker stream the loop polls;
* :mod:`~closedloop.view.window` — the pyqtgraph window;
* :mod:`~closedloop.view.sessions` — the running sessions (patient, host, start) and
  which one to show;
* :mod:`~closedloop.view.app` — ``closedloop view`` and :func:`run_view`;
* :mod:`~closedloop.view.calibration`, :mod:`~closedloop.view.checklist_dialog` — dialogs.

Only :mod:`buffers`, :mod:`sessions` and :mod:`control` import without Qt.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys

_PINNED = False


def qt_workarounds() -> bool:
    """Work around a reference-count bug of some PySide6 wheels on CPython < 3.12.

    PySide6 6.12's ``abi3`` wheels drop one reference to ``None`` (and sometimes to
    ``True``/``False``) on many calls, e.g. every ``QObject.setObjectName`` and
    ``QGraphicsItem.setVisible``: built for Python >= 3.12, where those objects are
    immortal, they skip the increment that Python 3.11 needs. A live view makes
    thousands of such calls per second, so on 3.11 the interpreter soon aborts with
    "Fatal Python error: none_dealloc". When a probe shows the leak, this function
    gives the three singletons 2**40 extra references (what 3.12 does by making them
    immortal). No-op on 3.12+ or when the probe shows no leak; safe to call repeatedly.

    Returns
    -------
    bool
        True when the leak was found and the singletons are pinned.
    """
    global _PINNED
    if _PINNED:
        return True
    if sys.version_info >= (3, 12) or sys.implementation.name != "cpython":
        return False
    from PySide6 import QtCore

    probe = QtCore.QObject()
    before = sys.getrefcount(None)
    for _ in range(64):
        probe.setObjectName("closedloop-probe")
    if sys.getrefcount(None) >= before - 32:
        return False
    for obj in (None, True, False):
        # ob_refcnt is the first field of every CPython object
        ctypes.c_ssize_t.from_address(id(obj)).value += 1 << 40
    _PINNED = True
    return True


#: How much lower than a session's loop the view's process runs (``nice``): when the
#: computer is busy, the loop gets the processor first; the view still gets a share.
VIEW_NICENESS = 5


def yield_to_the_loop() -> bool:
    """Lower this process's scheduling priority by :data:`VIEW_NICENESS` (POSIX).

    Called at the start of ``closedloop view`` (also when ``closedloop run`` opens it),
    before the Qt, LSL and drawing threads start, so they inherit it; threads that
    exist already (a BLAS library's workers) are lowered one by one (Linux keeps a
    priority per thread). A live view must never take the processor from the closed
    loop it shows. Returns False where priorities cannot be lowered (Windows, a
    sandbox that refuses).
    """
    if not hasattr(os, "setpriority"):
        return False
    try:
        target = min(19, os.getpriority(os.PRIO_PROCESS, 0) + VIEW_NICENESS)
        tids = [0]
        if os.path.isdir("/proc/self/task"):
            tids = [int(t) for t in os.listdir("/proc/self/task")]
        for tid in tids:
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, tid, target)
        return os.getpriority(os.PRIO_PROCESS, 0) == target
    except OSError:
        return False
