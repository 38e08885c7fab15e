"""Batches on local cores and on a Dask cluster: the same results, in input order, and a
failing file reported without ending the batch."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil

import pytest

from closedloop.analysis import evaluate as ev
from closedloop.analysis.results import Bootstrap
from closedloop.cli import main
from closedloop.errors import InputError
from closedloop.runtime.batch import run_batch
from tests.conftest import ROOT

SHIPPED = ROOT / "recordings" / "sim_biceps_triceps.xdf"


def _square_or_fail(x: int) -> int:
    if x == 3:
        raise InputError("three is a bad file")
    if x == 5:
        raise ZeroDivisionError("a bug")
    if x == 7:
        os._exit(1)  # the worker dies (out of memory, a crash in a C library)
    return x * x


def test_local_batch_keeps_input_order_and_reports_failures() -> None:
    done = []
    items = [4, 3, 0, 5, 2]
    for jobs in (1, 2):
        res = run_batch(_square_or_fail, items, jobs=jobs,
                        progress=lambda k, n: done.append((k, n)))
        assert [r.index for r in res] == [0, 1, 2, 3, 4]
        assert [r.value for r in res] == [16, None, 0, None, 4]
        assert res[1].error == "three is a bad file" and isinstance(res[1].exception,
                                                                     InputError)
        assert res[3].error == "unexpected ZeroDivisionError: a bug"
        assert "Traceback" in res[3].detail and res[3].exception is None
    assert done[-1] == (5, 5)


def test_a_dead_worker_fails_its_task_only() -> None:
    res = run_batch(_square_or_fail, [2, 7], jobs=2)
    assert res[1].error and "without a result" in res[1].error
    assert res[0].value == 4 or res[0].error  # the pool may take its neighbour down too


def test_cluster_needs_a_reachable_scheduler() -> None:
    pytest.importorskip("distributed")
    from closedloop.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot reach a Dask scheduler"):
        run_batch(_square_or_fail, [1], cluster="tcp://127.0.0.1:9")


@pytest.fixture(scope="module")
def cluster():
    """A Dask cluster of two worker processes on this machine, as an address."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  dashboard_address=None, silence_logs=40) as c:
        yield c.scheduler_address


def _strip_speed(lines: list[str]) -> list[str]:
    return [ln.split(" replayed in ")[0] if " replayed in " in ln else ln for ln in lines]


def test_dask_batch_equals_the_local_batch(cluster, tmp_path, capsys) -> None:
    files = []
    for i in range(3):
        files.append(tmp_path / f"copy{i}.xdf")
        shutil.copy(SHIPPED, files[-1])
    bad = tmp_path / "bad.xdf"
    bad.write_bytes(b"not an xdf file")
    inputs = [str(files[0]), str(bad), str(files[1]), str(files[2])]
    k5 = tmp_path / "k5.toml"
    k5.write_text((ROOT / "configs" / "biceps_triceps.toml").read_text()
                  .replace("h_nats = 18.0", "h_nats = 9.0"))
    argv = ["replay", *inputs, "--check", "--quiet", "--config", "recorded", "--config", str(k5)]
    out = {}
    for how, extra in (("local", ["--jobs", "2"]), ("dask", ["--cluster", cluster])):
        path = tmp_path / f"{how}.json"
        rc = main([*argv, *extra, "--out", str(path)])
        out[how] = (rc, _strip_speed(capsys.readouterr().out.splitlines()),
                    json.loads(path.read_text()))
    assert out["local"] == out["dask"]
    rc, lines, table = out["dask"]
    assert rc == 8  # the k5 replays differ from the recording; the bad file fails too
    assert sum("check passed" in ln for ln in lines) == 3
    assert [ln.split(":")[0] for ln in lines if "bad.xdf" in ln] == [str(bad)] * 2
    assert [r["recording"] for r in table["rows"] if r["group"] == "failed"] == [str(bad)] * 2
    # evaluate and export: the same on the cluster as on local cores
    specs = ["threshold", "recorded"]
    local = [r.as_dict() for r in ev.evaluate(inputs, specs, jobs=2, on_error="report",
                                              bootstrap=Bootstrap(300))]
    dask = [r.as_dict() for r in ev.evaluate(inputs, specs, cluster=cluster,
                                             on_error="report", bootstrap=Bootstrap(300))]
    assert dask == local
    assert [r["recording"] for r in dask if r["group"] == "failed"] == ["bad.xdf"] * 2
    digests = {}
    for how, extra in (("local", ["--jobs", "2"]), ("dask", ["--cluster", cluster])):
        root = tmp_path / f"bids_{how}"
        rc = main(["export", *inputs, "--bids", str(root), "--subject", "01", *extra])
        printed = capsys.readouterr().out.splitlines()
        # the bad file cannot be read: its error's code, as replay and every command give
        assert rc == InputError.exit_code and "bad.xdf: export FAILED" in printed[1]
        digests[how] = {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                        for p in sorted(root.rglob("*")) if p.is_file()}
    assert digests["local"] == digests["dask"]
    assert len([k for k in digests["dask"] if k.endswith("_emg.bdf")]) == 3


def test_sum_on_the_cluster_in_input_order(cluster) -> None:
    res = run_batch(functools.partial(pow, 2), list(range(12)), cluster=cluster)
    assert [r.value for r in res] == [2**k for k in range(12)]
    res = run_batch(_square_or_fail, [4, 3, 5], cluster=cluster)
    assert [r.value for r in res] == [16, None, None]
    assert res[1].error == "three is a bad file" and "ZeroDivisionError" in res[2].error
