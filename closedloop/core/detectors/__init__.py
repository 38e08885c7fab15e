"""Onset detectors behind one interface (:class:`~closedloop.core.detectors.base.Detector`).

Every detector runs live, in replay and offline alike, inside
:class:`~closedloop.core.pipeline.Pipeline`; a config chooses one with ``[detector] kind``
(:data:`closedloop.registry.DETECTORS`):

``threshold`` (default)
    :class:`~closedloop.core.detectors.threshold.ThresholdDetector`: rest mean + k x SD
    on an envelope, with a minimum on-time, hysteresis and an adaptive noise floor.
``tkeo``
    :class:`~closedloop.core.detectors.threshold.TkeoDetector`: the same rules on the
    Teager-Kaiser energy.
``double_threshold``
    :class:`~closedloop.core.detectors.bonato.DoubleThresholdDetector`: Bonato et al.
    (1998), made causal.
``cusum``
    :class:`~closedloop.core.detectors.cusum.CusumDetector`: a sequential likelihood-ratio
    test for a variance increase (Page's CUSUM, after Staude et al. 2001).
"""

from closedloop.core.detectors.base import Detection, Detector, RestNote

__all__ = ["Detection", "Detector", "RestNote"]
