"""The session config: TOML loaded into typed, validated settings.

Layout of a config file and where each section is declared::

    name = "biceps_triceps"           # Config
    description = "..."
    [session]    SessionSettings      source, stimulator, fs (sim), chunk_ms, watchdog_ms
    [sim]        SimSettings          the simulated patient: snr_db, cocontraction, gap_s,
                                      attempt_s, artifacts, seed
    [filters]    FilterSettings       bandpass_hz, order, notch_hz, notch_harmonics, notch_q
    [envelope]   EnvelopeSettings     kind, window_ms, cutoff_hz
    [detector]   DetectorSettings     k_on, off_fraction, mvc_fraction, min_on_ms,
                                      min_off_ms, refractory_ms, baseline, adaptive floor
    [artifacts]  ArtifactSettings     blank_ms, comb, comb_pulses (stimulation artifacts);
                                      hum_db, hum_block_ms, hum_recover_s (mains hum)
    [[muscles]]  MuscleConfig         name, channel, antagonist, placement, picture
      [muscles.stim]         StimParams       channel, current_ma, pulse_width_us, ...
      [muscles.limits]       ChannelLimits    max_current_ma, ..., min_rest_s, max_step_ma
      [muscles.calibration]  Calibration      rest_mean, rest_sd, mvc (from calibrate)
    [protocol]   ProtocolSettings     kind, agonist, antagonist, gate, co_stimulation, ...
      [protocol.reciprocal]  ReciprocalSettings   gap_s
      [protocol.trials]      TrialSettings        n_trials, work_s, rest_s, ...
    [safety]     SafetySettings       session_dose_s, session_charge_mc, wait_for_rate

Modules:

* :mod:`~closedloop.config.model`: :class:`Config`, ``[session]``, ``[sim]``,
  ``[[muscles]]``, the loaders and the rules across sections;
* :mod:`~closedloop.config.signal`: filters, envelope, detector, artifacts, calibration;
* :mod:`~closedloop.config.stimulation`: stimulation, limits, protocol, safety, and the
  rules across them (:func:`~closedloop.config.stimulation.validate_stimulation`);
* :mod:`~closedloop.config.ceilings`: the per-device ceilings no config may exceed;
* :mod:`~closedloop.config.schema`: how a field declares its range, choices and default,
  and how a finding becomes a :class:`~closedloop.errors.ConfigError`.

Why pydantic dataclasses
------------------------
Each settings class is a frozen ``pydantic.dataclasses.dataclass`` with
``extra="forbid"`` (:func:`~closedloop.config.schema.settings`), not a ``BaseModel``:
the rest of closedloop reads settings by attribute and builds variants with
``dataclasses.replace`` and ``dataclasses.asdict``, and a pydantic dataclass keeps all
of that, frozen, with the same equality and repr. ``replace`` goes through the
validating constructor, so a variant is checked like a config file (a variant above a
ceiling raises :class:`~closedloop.errors.ConfigError`). The ranges are declared once,
next to each field, and pydantic enforces them for a TOML table and for a constructor
call alike; :mod:`~closedloop.config.schema` turns its findings into closedloop's
messages (file, dotted key path, value, everything that is allowed), so no pydantic
message reaches a user. ``Config.resolved`` is the model's own dump.
"""

from closedloop.config.model import (
    Config,
    MuscleConfig,
    SessionSettings,
    SimSettings,
    default_config,
    detector_settings_for,
    load_config,
    loads_config,
    parse_config,
    protocol_settings_for,
)
from closedloop.config.schema import parse_table

__all__ = [
    "Config",
    "MuscleConfig",
    "SessionSettings",
    "SimSettings",
    "default_config",
    "detector_settings_for",
    "load_config",
    "loads_config",
    "parse_config",
    "parse_table",
    "protocol_settings_for",
]
