"""closedloop: EMG-triggered electrical stimulation for stroke rehabilitation.

Layers, bottom to top (lower layers never import higher ones):

* ``closedloop.errors``: the exception family.
* ``closedloop.config``: the session config, typed settings of every layer (TOML in).
* ``closedloop.identity``: a session's id on the network.
* ``closedloop.core``: the pure signal core (filters, envelopes, detectors), numpy in/out.
* ``closedloop.stim``: protocols and the safety guard (pure), stimulator drivers (edge).
* ``closedloop.sim``: the simulated patient.
* ``closedloop.sources``: EMG sources (sim, BrainFlow, LSL, replay), all one interface.
* ``closedloop.io``: files, LSL outlets, XDF recording.
* ``closedloop.runtime``: the closed loop that wires one source, the core, protocol,
  guard and driver together.
* ``closedloop.cli``: the ``closedloop`` command.
"""

__version__ = "0.1.0"
