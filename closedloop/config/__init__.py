"""The session config: TOML loaded into typed, validated models.

* :mod:`~closedloop.config.model`: :class:`Config` and the loaders;
* :mod:`~closedloop.config.signal`: filters, envelope, detector, artifacts, calibration;
* :mod:`~closedloop.config.stimulation`: stimulation, limits, protocol, safety;
* :mod:`~closedloop.config.ceilings`: the per-device ceilings no config may exceed;
* :mod:`~closedloop.config.table`: typed reading of TOML tables.
"""

from closedloop.config.model import (
    Config,
    MuscleConfig,
    SessionSettings,
    SimSettings,
    default_config,
    load_config,
    loads_config,
    parse_config,
)

__all__ = [
    "Config",
    "MuscleConfig",
    "SessionSettings",
    "SimSettings",
    "default_config",
    "load_config",
    "loads_config",
    "parse_config",
]
