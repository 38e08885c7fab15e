"""The live view: what a running session sees, and the controls a clinician needs.

* :mod:`~closedloop.view.buffers` — pure ring buffers, peak decimation and display state;
* :mod:`~closedloop.view.lsl_client` — subscribes to a session's LSL streams (read only);
* :mod:`~closedloop.view.control` — the STOP path: a control marker stream the loop polls;
* :mod:`~closedloop.view.window` — the pyqtgraph window;
* :mod:`~closedloop.view.app` — ``closedloop view`` and :func:`run_view`;
* :mod:`~closedloop.view.calibration`, :mod:`~closedloop.view.checklist_dialog` — dialogs.

Only :mod:`buffers` and :mod:`control` import without Qt.
"""
