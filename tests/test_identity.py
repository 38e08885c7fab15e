"""Who a session runs for: the patient id rule (closedloop.identity) and the config key."""

from __future__ import annotations

import pytest

from closedloop.config import loads_config
from closedloop.errors import ConfigError
from closedloop.identity import check_operator, check_patient_id, patient_id_problem


@pytest.mark.parametrize("ok", ["P01", "p-01", "STUDY_2026-017", "7", "A" * 32])
def test_pseudonymous_ids(ok):
    assert patient_id_problem(ok) is None and check_patient_id(ok) == ok


@pytest.mark.parametrize("bad, why", [
    ("John Smith", "contains a space, as a person's name would"),
    ("Smith,John", "contains ','"),
    ("Müller", "contains 'ü'"),
    ("", "it is empty"),
    ("A" * 33, "33 characters long"),
    ("-P01", "does not start with a letter or digit"),
    ("P01\n", "contains a space"),
    (17, "it is int, not text"),
])
def test_what_is_not_a_pseudonymous_id(bad, why):
    assert why in patient_id_problem(bad)
    with pytest.raises(ConfigError, match="expected a pseudonymous id: 1 to 32 letters, "
                       "digits, - or _.*never the patient's name"):
        check_patient_id(bad, where="--patient")


def test_operators_may_be_named_on_one_line():
    assert check_operator(" Dr. Ada Lovelace ") == "Dr. Ada Lovelace"
    for bad in ("", "   ", "a\nb", "x" * 65):
        with pytest.raises(ConfigError, match="the operator's name or staff code"):
            check_operator(bad)


BASE = '''
name = "arm"
{patient}
[[muscles]]
name = "biceps"
'''


def test_the_config_key_names_file_key_value_and_rule():
    assert loads_config(BASE.format(patient='patient = "P01"')).patient == "P01"
    assert loads_config(BASE.format(patient="")).patient is None
    with pytest.raises(ConfigError, match=r"^arm.toml: patient = 'Jane Doe' is not allowed: "
                       "it contains a space"):
        loads_config(BASE.format(patient='patient = "Jane Doe"'), source="arm.toml")
    with pytest.raises(ConfigError, match="arm.toml: patient = 12 is not allowed; expected a "
                       "pseudonymous id"):
        loads_config(BASE.format(patient="patient = 12"), source="arm.toml")


def test_a_patient_given_on_the_command_line_overrides_the_config():
    config = loads_config(BASE.format(patient='patient = "P01"'))
    run = config.with_patient("P02", where="--patient")
    assert run.patient == "P02" and run.resolved["patient"] == "P02"
    with pytest.raises(ConfigError, match="--patient = 'Jane Doe'"):
        config.with_patient("Jane Doe", where="--patient")
