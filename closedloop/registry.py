"""One registry per kind of add-on: detectors, protocols, stimulator drivers, sources.

A registry maps a name (what a config's ``kind``, ``--source`` or ``--stimulator``
says) to the class that implements it. There are three ways in, looked up in this
order:

1. **built-in names** (``threshold``, ``triggered_assist``, ``rehastim2``, ``lsl``...),
   stored as ``"module:attribute"`` strings and imported only when used, so this module
   sits below every layer it names and a missing optional dependency (one device's
   library) breaks only that device;
2. **entry points** of installed packages, in the group of the registry's kind
   (``closedloop.detectors``, ``closedloop.protocols``, ``closedloop.stimulators``,
   ``closedloop.sources``), so a lab's own package adds a name without editing
   closedloop::

       # the lab package's pyproject.toml
       [project.entry-points."closedloop.detectors"]
       my_detector = "mylab.detectors:MyDetector"

3. a **spec** ``"package.module:Class"`` given directly where a name is accepted (a
   detector or protocol ``kind``, the name part of ``--source``/``--stimulator``).

Registries are immutable tables: nothing registers itself at import time and there is
no global state to reset between tests (a test builds its own :class:`Registry`). The
interface each kind must implement, and a worked example of each, are in
``docs/architecture.md``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from closedloop.errors import ConfigError


@dataclass(frozen=True)
class Registry:
    """Names of one kind of add-on, mapped to their implementations.

    Parameters
    ----------
    kind : str
        What is registered, for messages (``"detector"``).
    group : str
        The entry-point group that installed packages add names to.
    builtins : mapping of str to str
        Built-in names and their ``"module:attribute"`` specs.
    interface : str, optional
        ``"module:Class"`` every implementation must subclass; checked on load.
    """

    kind: str
    group: str
    builtins: Mapping[str, str] = field(default_factory=dict)
    interface: str | None = None

    def _entry_points(self) -> dict[str, metadata.EntryPoint]:
        found = {}
        for ep in metadata.entry_points(group=self.group):
            found.setdefault(ep.name, ep)
        return found

    def names(self) -> list[str]:
        """Every name this registry knows: built-in first, then installed add-ons."""
        extra = sorted(n for n in self._entry_points() if n not in self.builtins)
        return list(self.builtins) + extra

    def knows(self, name: str) -> bool:
        """Whether ``name`` is registered (built-in names are answered without looking
        through the installed packages, which takes a tenth of a second)."""
        return name in self.builtins or name in self._entry_points()

    def describe(self) -> str:
        """One line for ``--help``: the names, and how to add one."""
        return (f"{', '.join(self.names())}, or module:Class (entry-point group "
                f"{self.group})")

    @staticmethod
    def is_spec(name: str) -> bool:
        """True for a ``"package.module:Class"`` spec rather than a registered name."""
        module, sep, attr = name.partition(":")
        return bool(sep) and bool(attr) and attr.isidentifier() and all(
            part.isidentifier() for part in module.split(".")
        )

    def load(self, name: str) -> Any:
        """The implementation of ``name`` (a registered name or a ``module:Class`` spec).

        Raises
        ------
        ConfigError
            Unknown name (the message lists the known ones), a spec that cannot be
            imported, or a class that does not implement the interface.
        """
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{self.kind}: expected a name, got {name!r}; known: "
                              f"{self.describe()}")
        if name in self.builtins:
            obj = self._import(self.builtins[name], name)
        else:
            ep = self._entry_points().get(name)
            if ep is not None:
                try:
                    obj = ep.load()
                except Exception as exc:  # noqa: BLE001 - a broken add-on, named
                    raise ConfigError(
                        f"{self.kind} {name!r} (entry point {ep.value} of group {self.group}) "
                        f"failed to load: {type(exc).__name__}: {exc}"
                    ) from None
            elif self.is_spec(name):
                obj = self._import(name, name)
            else:
                raise ConfigError(
                    f"unknown {self.kind} {name!r}; known: {self.describe()}"
                )
        self._check(obj, name)
        return obj

    def _import(self, spec: str, name: str) -> Any:
        module, _, attr = spec.partition(":")
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(
                f"{self.kind} {name!r}: cannot import {module!r} ({exc}); install the "
                "package that provides it"
            ) from None
        try:
            return getattr(mod, attr)
        except AttributeError:
            raise ConfigError(f"{self.kind} {name!r}: {module!r} has no {attr!r}") from None

    def _check(self, obj: Any, name: str) -> None:
        if self.interface is None:
            return
        base = self._import(self.interface, self.interface)
        if not (isinstance(obj, type) and issubclass(obj, base)):
            raise ConfigError(
                f"{self.kind} {name!r}: {obj!r} does not implement {self.interface} "
                "(subclass it; see docs/architecture.md)"
            )


# -- the four registries ---------------------------------------------------------------------
#: Onset detectors: a config's ``[detector] kind``.
DETECTORS = Registry(
    "detector", "closedloop.detectors",
    {
        "threshold": "closedloop.core.detectors.threshold:ThresholdDetector",
        "tkeo": "closedloop.core.detectors.threshold:TkeoDetector",
        "double_threshold": "closedloop.core.detectors.bonato:DoubleThresholdDetector",
        "cusum": "closedloop.core.detectors.cusum:CusumDetector",
    },
    interface="closedloop.core.detectors.base:Detector",
)

#: Stimulation protocols: a config's ``[protocol] kind``.
PROTOCOLS = Registry(
    "protocol", "closedloop.protocols",
    {
        "triggered_assist": "closedloop.stim.protocol:TriggeredAssist",
        "reciprocal": "closedloop.stim.protocol:Reciprocal",
        "cued_trials": "closedloop.stim.protocol:CuedTrials",
        "proportional": "closedloop.stim.proportional:Proportional",
    },
    interface="closedloop.stim.protocol:Protocol",
)

#: Stimulator drivers: ``--stimulator NAME[:ARG]`` and ``[session] stimulator``.
STIMULATORS = Registry(
    "stimulator", "closedloop.stimulators",
    {
        "sim": "closedloop.stim.drivers.sim:SimStimulator",
        "rehastim2": "closedloop.stim.drivers.rehastim2:RehaStim2",
        "p24": "closedloop.stim.drivers.p24:P24",
        "lsl": "closedloop.stim.drivers.lsl:LslStimulator",
    },
    interface="closedloop.stim.base:Stimulator",
)

#: EMG sources: ``--source NAME[:ARG][?k=v...]`` and ``[session] source``.
SOURCES = Registry(
    "source", "closedloop.sources",
    {
        "sim": "closedloop.sources.sim:SimSource",
        "brainflow": "closedloop.sources.brainflow:BrainFlowSource",
        "lsl": "closedloop.sources.lsl:LslSource",
        "replay": "closedloop.sources.replay:ReplaySource",
    },
    interface="closedloop.sources.base:Source",
)
