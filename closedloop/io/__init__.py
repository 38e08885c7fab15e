"""Files, LSL outlets and XDF recording: where a session's data leaves the process.

* :mod:`closedloop.io.outlets`: :class:`SessionOutlets`, the LSL streams of one session.
* :mod:`closedloop.io.recorder`: :class:`XdfRecorder` (LabRecorderCLI) and
  :func:`verify_recording`.
* :mod:`closedloop.io.xdf`: :func:`load_session`, reading recordings back (and saying
  what is damaged and what is intact).
* :mod:`closedloop.io.xdfreader`: the XDF reader under it: structure checks, numeric
  samples decoded with numpy, bit for bit as pyxdf.
* :mod:`closedloop.io.xdfwrite`: XDF files in LabRecorder's layout, for tests and
  benchmarks.
"""
