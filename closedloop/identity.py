"""Who a session is on the network.

Every LSL stream a session publishes (its outlets, its LSL stimulator) and every
stimulation message it sends carries one session id, so nothing on the network can
take one session for another: liblsl re-finds a lost stream by its ``source_id``, and
two sessions that shared one (as ``closedloop-stim`` once did) let a receiver of the
first go on receiving the second. The id is fresh for every session and never reused.

Every closedloop stream also says so in its description, under
``<desc><closedloop><session>NAME</session><session_uid>UID</session_uid>
<role>ROLE</role>...</closedloop></desc>``; :data:`OWN_STREAM_XPATH` matches them, so
an EMG source never mistakes a session's re-published EMG for an amplifier.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

#: Hex digits of a session uid (48 bits: a clash between two live sessions is negligible).
UID_HEX = 12

#: LSL XPath that is true for every stream closedloop publishes (liblsl evaluates it on
#: the sender's full stream description, so it can be used in a resolve predicate).
OWN_STREAM_XPATH = "desc/closedloop"

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class SessionId:
    """One session's identity on the network.

    Attributes
    ----------
    uid : str
        :data:`UID_HEX` random hex digits, fresh for every session.
    name : str
        ``closedloop-<label>-<uid>``: the prefix of every stream name of the session,
        printed when it starts (``closedloop view --session NAME``,
        ``closedloop stim-receiver --session NAME``).
    """

    uid: str
    name: str

    @classmethod
    def new(cls, label: str) -> SessionId:
        """A fresh identity; ``label`` (the config name) is kept readable but made safe
        for stream names and XML (anything but letters, digits, ``_.-`` becomes ``_``)."""
        uid = uuid.uuid4().hex[:UID_HEX]
        safe = _UNSAFE.sub("_", label).strip("_") or "session"
        return cls(uid=uid, name=f"closedloop-{safe}-{uid}")


def xpath_literal(value: str) -> str:
    """``value`` as an XPath 1.0 string literal (XPath has no escapes: ``concat`` joins
    the pieces when the value holds both kinds of quote)."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    return "concat(" + ", \"'\", ".join(f"'{p}'" for p in value.split("'")) + ")"
