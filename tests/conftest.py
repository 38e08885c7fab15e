"""Shared test fixtures: paths to ../shared and the shipped configs, and the suite's own
honesty checks.

* :func:`source_tree_untouched`: the session fails (an error at the teardown of its last
  test) when a test wrote into the source tree. Tests write into ``tmp_path``; the
  check compares ``git status`` (changed, untracked and ignored files, with their size
  and modification time) before and after the session, tool caches aside. Outside a
  git checkout it does nothing.
* :func:`shared_data`: the public recordings in ``../shared/data``. Missing, the tests
  that need them are skipped on a developer's machine, but fail in CI (``CI=true``):
  there, a skip would hide that they never ran.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CONFIGS = ROOT / "configs"

#: Test folders of whole processes, real-time streams, devices and faults: marked ``slow``,
#: left out of the default run (``python -m pytest``, a few minutes) and run by ``.ci/run``
#: (``python -m pytest -m slow``).
SLOW_FOLDERS = ("e2e", "faults", "view")
#: Other test files whose tests run for seconds each (minutes of simulated sessions,
#: real-time LSL streams, processes): ``slow`` too (measured with ``--durations``).
SLOW_FILES = (
    "core/test_effort.py", "core/test_evoked.py", "core/test_sim_detection.py",
    "io/test_outfile.py", "io/test_recording.py", "io/test_xdf_damage.py",
    "io/test_xdf_reader.py", "runtime/test_artifacts.py", "runtime/test_batch.py",
    "runtime/test_cusum_live.py", "runtime/test_input_edges.py",
    "runtime/test_proportional.py", "sources/test_lsl.py", "sources/test_replay.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test in :data:`SLOW_FOLDERS` and :data:`SLOW_FILES` ``slow``."""
    tests = ROOT / "tests"
    for item in items:
        path = Path(str(item.fspath))
        if not path.is_relative_to(tests):
            continue
        rel = path.relative_to(tests)
        if rel.parts[0] in SLOW_FOLDERS or rel.as_posix() in SLOW_FILES:
            item.add_marker(pytest.mark.slow)


#: Folders tools write into a checkout by themselves (Python, pytest, hypothesis, ruff, mypy,
#: pip's egg-info): not a test writing into the tree.
TOOL_CACHES = ("__pycache__", ".pytest_cache", ".hypothesis", ".ruff_cache", ".mypy_cache")


def in_ci(env: Mapping[str, str] = os.environ) -> bool:
    """Whether the suite runs in CI (``CI=true``, as GitHub Actions and others set it)."""
    return env.get("CI", "").strip().lower() in ("true", "1", "yes")


def shared_data_dir(shared: Path = SHARED, env: Mapping[str, str] = os.environ) -> Path:
    """``shared/data``; skips the test when it is missing, fails it in CI."""
    d = shared / "data"
    if not d.is_dir():
        why = f"the shared data folder {d} is missing (it sits beside the project root)"
        if in_ci(env):
            pytest.fail(f"{why}; in CI it must be there, or these tests never run",
                        pytrace=False)
        pytest.skip(why)
    return d


@pytest.fixture
def shared_data() -> Path:
    return shared_data_dir()


def tree_state(root: Path = ROOT) -> dict[str, tuple[int, int] | None] | None:
    """Every file ``git status`` reports in ``root`` (changed, untracked or ignored; tool
    caches aside) with its (size, mtime in ns), None for a deleted one; None when
    ``root`` is not a git checkout."""
    try:
        r = subprocess.run(
            ["git", "status", "--porcelain", "-z", "--untracked-files=all", "--ignored"],
            cwd=root, capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0:
        return None
    state: dict[str, tuple[int, int] | None] = {}
    for entry in r.stdout.decode("utf-8", "surrogateescape").split("\0"):
        path = entry[3:] if len(entry) > 3 and entry[2] == " " else entry  # "XY path"
        parts = Path(path).parts
        if not path or any(p in TOOL_CACHES or p.endswith(".egg-info") for p in parts):
            continue
        try:
            st = (root / path).stat()
            state[path] = (st.st_size, st.st_mtime_ns)
        except OSError:
            state[path] = None
    return state


def tree_changes(before: Mapping, after: Mapping) -> list[str]:
    """Paths whose state differs between two :func:`tree_state` results."""
    return sorted(p for p in set(before) | set(after) if before.get(p, "-") != after.get(p, "-"))


@pytest.fixture(scope="session", autouse=True)
def source_tree_untouched() -> Iterator[None]:
    before = tree_state()
    yield
    if before is None:
        return
    after = tree_state()
    changed = tree_changes(before, after or {})
    if changed:
        pytest.fail(
            f"the tests wrote into the source tree ({ROOT}): {', '.join(changed[:20])}"
            f"{' ...' if len(changed) > 20 else ''}. Tests write into tmp_path; tools that "
            "refresh shipped files are run by hand (or the tree was edited during the run)",
            pytrace=False)
