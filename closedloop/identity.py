"""Who a session is: on the network, and for whom it runs.

Every LSL stream a session publishes (its outlets, its LSL stimulator) and every
stimulation message it sends carries one session id, so nothing on the network can
take one session for another: liblsl re-finds a lost stream by its ``source_id``, and
two sessions that shared one (as ``closedloop-stim`` once did) let a receiver of the
first go on receiving the second. The id is fresh for every session and never reused.

Every closedloop stream also says so in its description, under
``<desc><closedloop><session>NAME</session><session_uid>UID</session_uid>
<role>ROLE</role>...</closedloop></desc>``; :data:`OWN_STREAM_XPATH` matches them, so
an EMG source never mistakes a session's re-published EMG for an amplifier.

A session runs for a patient, named by a pseudonymous id (:func:`check_patient_id`:
the study's code such as ``P01``, never a name), and may name its operator
(:func:`check_operator`: staff, so a name is allowed). Both go into the recording, the
summary and the patient record; the rules are here so every entry point applies the
same ones.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from closedloop.errors import ConfigError

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


#: Longest patient id and operator name accepted.
PATIENT_ID_MAX = 32
OPERATOR_MAX = 64

_PATIENT_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_-]{{0,{PATIENT_ID_MAX - 1}}}")

#: The rule, as every error about a patient id states it.
PATIENT_ID_RULE = (
    f"a pseudonymous id: 1 to {PATIENT_ID_MAX} letters, digits, - or _, starting with a "
    "letter or digit (the study's code, e.g. P01), never the patient's name"
)


def patient_id_problem(value: object) -> str | None:
    """Why ``value`` is not a valid patient id, or None when it is.

    The id is pseudonymous: closedloop stores it in recordings and in the patient
    record, which may leave the clinic (research, support), so it must not identify
    the person. A name cannot be told from a code in general; what can be told is
    refused: a space (a first and last name), and anything beyond the character set
    of a study code.
    """
    if not isinstance(value, str):
        return f"it is {type(value).__name__}, not text"
    if not value:
        return "it is empty"
    if any(c.isspace() for c in value):
        return "it contains a space, as a person's name would"
    if len(value) > PATIENT_ID_MAX:
        return f"it is {len(value)} characters long"
    if not _PATIENT_ID.fullmatch(value):
        bad = sorted({c for c in value if not (c.isascii() and (c.isalnum() or c in "-_"))})
        if bad:
            return "it contains " + " ".join(repr(c) for c in bad)
        return "it does not start with a letter or digit"
    return None


def check_patient_id(value: object, where: str = "patient") -> str:
    """``value`` when it is a valid patient id (:data:`PATIENT_ID_RULE`).

    Raises
    ------
    ConfigError
        Naming ``where`` (the config key or option), the value, why and the rule.
    """
    problem = patient_id_problem(value)
    if problem:
        raise ConfigError(f"{where} = {value!r} is not allowed: {problem}; expected "
                          f"{PATIENT_ID_RULE}")
    return value  # type: ignore[return-value]


def check_operator(value: object, where: str = "--operator") -> str:
    """``value`` when it can name the operator (staff: a name is fine) on one line.

    Raises
    ------
    ConfigError
        Empty, longer than :data:`OPERATOR_MAX`, or holding control characters.
    """
    if (not isinstance(value, str) or not value.strip() or len(value) > OPERATOR_MAX
            or any(not c.isprintable() for c in value)):
        raise ConfigError(f"{where} = {value!r} is not allowed; expected the operator's name "
                          f"or staff code on one line, 1 to {OPERATOR_MAX} printable characters")
    return value.strip()
