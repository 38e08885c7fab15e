"""The suite's own honesty checks (tests/conftest.py) do what they say.

A throwaway git repository stands in for the checkout: a file a test writes there, new
or changed (tracked, untracked or ignored), is seen; what Python and the test tools
cache is not. And ``../shared`` missing skips on a developer's machine but fails in CI.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.conftest import shared_data_dir, tree_changes, tree_state


def _git(repo, *args):
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path):
    _git(tmp_path, "init", "-q")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "view.png").write_bytes(b"picture")
    (tmp_path / ".gitignore").write_text("/out/\n__pycache__/\n")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    return tmp_path


def test_a_write_into_the_tree_is_seen_and_caches_are_not(repo):
    before = tree_state(repo)
    assert before == {}
    (repo / "__pycache__").mkdir()
    (repo / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"cache")
    assert tree_changes(before, tree_state(repo)) == []
    (repo / "docs" / "view.png").write_bytes(b"another picture")  # as the old screenshot test
    (repo / "out").mkdir()
    (repo / "out" / "session.xdf").write_bytes(b"x")  # ignored by git, still a write
    (repo / "events.csv").write_text("sample\n")
    assert tree_changes(before, tree_state(repo)) == ["docs/view.png", "events.csv",
                                                      "out/session.xdf"]


def test_a_file_already_modified_and_written_again_is_seen(repo):
    (repo / "docs" / "view.png").write_bytes(b"work in progress")
    before = tree_state(repo)
    time.sleep(0.01)
    (repo / "docs" / "view.png").write_bytes(b"overwritten by a test")
    assert tree_changes(before, tree_state(repo)) == ["docs/view.png"]


def test_outside_a_git_checkout_the_check_stands_aside(tmp_path):
    assert tree_state(tmp_path) is None


def test_missing_shared_data_skips_on_a_desk_and_fails_in_ci(tmp_path):
    with pytest.raises(pytest.skip.Exception):
        shared_data_dir(tmp_path, env={})
    with pytest.raises(pytest.fail.Exception, match="in CI it must be there"):
        shared_data_dir(tmp_path, env={"CI": "true"})
    (tmp_path / "data").mkdir()
    assert shared_data_dir(tmp_path, env={"CI": "true"}) == tmp_path / "data"
