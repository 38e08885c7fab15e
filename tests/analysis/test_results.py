"""Publishable figures: metrics, bootstrap intervals reproducible from a seed, outputs."""

from __future__ import annotations

import csv
import io
import json

import pytest

from closedloop.analysis import evaluate as ev
from closedloop.analysis.results import (
    METRICS,
    Bootstrap,
    bootstrap_ci,
    choose_format,
    figures,
    to_csv,
    trial_units,
    write_output,
)
from closedloop.analysis.scoring import Score, merge_scores, score_onsets
from closedloop.core.events import ONSET, Event
from closedloop.errors import ConfigError

FS = 1000.0


def known_score() -> Score:
    """4 references (3 hits: 20, 40, 60 ms), 2 false detections, 60 s."""
    refs = [(1000, "a"), (11000, "a"), (21000, "a"), (31000, "a")]
    dets = [Event(1020, 1.02, "a", ONSET), Event(11040, 11.04, "a", ONSET),
            Event(21060, 21.06, "a", ONSET), Event(5000, 5.0, "a", ONSET),
            Event(45000, 45.0, "a", ONSET)]
    return score_onsets(refs, dets, FS, 60.0)


def test_metrics_on_a_known_case() -> None:
    s = known_score()
    f = figures(s)
    assert f["sensitivity"] == 0.75
    assert f["precision"] == 0.6  # 3 hits of 5 detections
    assert f["f1"] == pytest.approx(2 * 0.75 * 0.6 / (0.75 + 0.6))
    assert f["false_per_min"] == 2.0
    assert f["latency_median_ms"] == pytest.approx(40.0)
    assert f["latency_p90_ms"] == pytest.approx(56.0)
    assert s.reference_hit == (True, True, True, False)
    assert s.false_samples == (5000, 45000)
    assert figures(None) == dict.fromkeys(METRICS)
    empty = score_onsets([], [], FS, 60.0)  # rest only, nothing detected
    assert figures(empty)["sensitivity"] is None and figures(empty)["f1"] is None
    assert figures(empty)["false_per_min"] == 0.0


def test_trial_units_add_up_to_the_recording() -> None:
    s = known_score()
    units = trial_units(s)
    assert len(units) == 4
    assert [u.hits for u in units] == [1, 1, 1, 0]
    # false detection at 5 s belongs to the first trial (before the 6 s midpoint), the
    # one at 45 s to the last
    assert [u.false_detections for u in units] == [1, 0, 0, 1]
    pooled = merge_scores(units)
    assert (pooled.n_reference, pooled.hits, pooled.false_detections) == (4, 3, 2)
    assert pooled.duration_s == pytest.approx(60.0)
    assert pooled.latencies_s == s.latencies_s
    assert trial_units(score_onsets([], [], FS, 60.0)) == []


def test_bootstrap_intervals_are_reproducible_from_the_seed() -> None:
    s = known_score()
    units = trial_units(s)
    a = bootstrap_ci(units, Bootstrap(2000, seed=7), "row")
    b = bootstrap_ci(units, Bootstrap(2000, seed=7), "row")
    c = bootstrap_ci(units, Bootstrap(2000, seed=8), "row")
    assert a == b
    assert a != c
    # the interval brackets the estimate and stays within [0, 1] for proportions
    lo, hi = a["sensitivity"]
    assert 0.0 <= lo <= 0.75 <= hi <= 1.0
    lo, hi = a["latency_median_ms"]
    assert 20.0 <= lo <= 40.0 <= hi <= 60.0
    # a row's interval does not depend on the others: same key and seed, same result
    assert bootstrap_ci(list(units), Bootstrap(2000, seed=7), "row") == a
    assert bootstrap_ci(units, Bootstrap(2000, seed=7), "another row") != a
    # no interval from one unit, or with n = 0
    assert bootstrap_ci(units[:1], Bootstrap(), "row") == dict.fromkeys(METRICS)
    assert bootstrap_ci(units, Bootstrap(0), "row") == dict.fromkeys(METRICS)


def test_cluster_bootstrap_is_wider_than_pooling_trials_when_recordings_differ() -> None:
    """Recordings that differ (one patient found everything, the other half): resampling
    recordings shows that spread, resampling their pooled trials hides it."""
    good = score_onsets([(k * 10000, "a") for k in range(1, 21)],
                        [Event(k * 10000 + 30, 0.0, "a", ONSET) for k in range(1, 21)],
                        FS, 220.0)
    poor = score_onsets([(k * 10000, "a") for k in range(1, 21)],
                        [Event(k * 10000 + 30, 0.0, "a", ONSET) for k in range(1, 21, 2)],
                        FS, 220.0)
    recs = [good, poor, good, poor, good, poor]
    boot = Bootstrap(4000, seed=1)
    by_recording = bootstrap_ci(recs, boot, "x")["sensitivity"]
    by_trial = bootstrap_ci([u for r in recs for u in trial_units(r)], boot, "x")["sensitivity"]
    assert by_recording[1] - by_recording[0] > by_trial[1] - by_trial[0]


def test_evaluate_rows_carry_intervals_reproducibly() -> None:
    recs = [ev.simulated_recording(0.0, 1.0, s) for s in (1, 2, 3)]
    boot = Bootstrap(500, seed=3)
    one = [r.as_dict() for r in ev.evaluate(recs, ["threshold"], jobs=1, bootstrap=boot)]
    two = [r.as_dict() for r in ev.evaluate(list(reversed(recs)), ["threshold"], jobs=2,
                                            bootstrap=boot)]
    by_name = {r["recording"]: r for r in two}
    for r in one:  # the same row, whatever the order of the inputs and the jobs
        assert by_name[r["recording"]] == r
    overall = by_name["overall"]
    assert overall["ci_unit"] == "recordings" and overall["ci_n"] == 3
    assert one[0]["ci_unit"] == "trials" and one[0]["ci_n"] == one[0]["n_reference"]
    assert overall["sensitivity_ci_low"] <= overall["sensitivity"] <= \
        overall["sensitivity_ci_high"]


def test_csv_and_json_outputs(tmp_path) -> None:
    rows = ev.evaluate([ev.simulated_recording(10.0, 1.0, 1)], ["threshold", "reference"],
                       jobs=1, bootstrap=Bootstrap(200))
    text = ev.render(rows, "csv", Bootstrap(200))
    table = list(csv.DictReader(io.StringIO(text)))
    assert list(table[0]) == ev.CSV_COLUMNS
    assert len(table) == len(rows) == 4
    ref = next(r for r in table if r["detector"] == "reference" and r["recording"] != "overall")
    assert ref["sensitivity"] == "1" and ref["latency_median_ms"] == "0"
    assert ref["error"] == ""  # empty cells where nothing to say
    js = json.loads(ev.render(rows, "json", Bootstrap(200)))
    assert js["bootstrap"]["n"] == 200 and len(js["rows"]) == 4
    assert to_csv([{"a": 1.0, "b": None, "c": float("nan")}], ["a", "b", "c"]) == "a,b,c\n1,,\n"


def test_outputs_never_replace_a_file(tmp_path) -> None:
    p = tmp_path / "t.csv"
    write_output("one\n", p)
    with pytest.raises(ConfigError, match="already exists.*--overwrite"):
        write_output("two\n", p)
    assert p.read_text() == "one\n"
    write_output("two\n", p, overwrite=True)
    assert p.read_text() == "two\n"
    with pytest.raises(ConfigError, match="cannot create the folder"):
        write_output("x", p / "under_a_file.csv")  # its "folder" is the file t.csv


def test_format_choice() -> None:
    assert choose_format(None, None) == "text"
    assert choose_format(None, "r.md") == "md" and choose_format("csv", "r.md") == "csv"
    assert choose_format(None, "R.JSON") == "json"
    with pytest.raises(ConfigError, match="cannot tell the format"):
        choose_format(None, "r.xlsx")
    with pytest.raises(ConfigError, match="level"):
        Bootstrap(10, level=1.5)


def test_row_percentiles_match_numpy() -> None:
    import warnings

    import numpy as np

    from closedloop.analysis.results import _row_percentile

    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 40))
    a[rng.random(a.shape) < 0.4] = np.nan
    a[7] = np.nan  # a resample of misses only
    a[8, 1:] = np.nan  # a single latency
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for q in (0.0, 50.0, 90.0, 100.0):
            assert np.allclose(_row_percentile(a, q), np.nanpercentile(a, q, axis=1),
                               equal_nan=True)
