"""Real disk faults for tests: read-only files and folders, a full disk.

As an ordinary user, permissions do it (``chmod``). As root, permissions do not stop
writes, so the faults are real filesystems: a read-only bind mount of the file, and a
small ``tmpfs`` mounted on the folder (remounted read-only, or filled to the last
byte). Without the right to mount, those tests are skipped with the reason.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = os.geteuid() == 0


def _mount(*args: str) -> None:
    r = subprocess.run(["mount", *args], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount as root here ({r.stderr.strip()}): needs a real "
                    "read-only or full filesystem")


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@contextlib.contextmanager
def _mode(path: Path, inside: int, after: int) -> Iterator[Path]:
    os.chmod(path, inside)
    try:
        yield path
    finally:
        os.chmod(path, after)


@contextlib.contextmanager
def read_only_file(path: Path) -> Iterator[Path]:
    """``path`` (an existing file) cannot be written while inside."""
    if not ROOT:
        with _mode(path, 0o400, 0o600):
            yield path
        return
    _mount("--bind", str(path), str(path))
    try:
        _mount("-o", "remount,bind,ro", str(path))
        yield path
    finally:
        _umount(path)


@contextlib.contextmanager
def own_filesystem(folder: Path, size_kib: int = 1024) -> Iterator[Path]:
    """``folder`` on a filesystem of its own (root: a ``tmpfs`` of ``size_kib``; an
    ordinary user: the folder as it is) for :func:`read_only_folder` and
    :func:`fill`."""
    folder.mkdir(parents=True, exist_ok=True)
    if not ROOT:
        yield folder
        return
    _mount("-t", "tmpfs", "-o", f"size={size_kib}k,mode=0700", "tmpfs", str(folder))
    try:
        yield folder
    finally:
        _umount(folder)


@contextlib.contextmanager
def read_only_folder(folder: Path) -> Iterator[Path]:
    """Nothing can be created or written in ``folder`` (made by :func:`own_filesystem`)."""
    if not ROOT:
        with _mode(folder, 0o500, 0o700):
            yield folder
        return
    _mount("-o", "remount,ro", str(folder))
    try:
        yield folder
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(folder)], capture_output=True)


def fill(folder: Path) -> Path:
    """Fill the filesystem of ``folder`` (made by :func:`own_filesystem`, as root) to the
    last byte; the filler file's path."""
    if not ROOT:
        pytest.skip("filling a disk needs a tmpfs of its own (root)")
    filler = folder / "filler"
    block = b"\0" * 4096
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(block)
        except OSError:
            pass
        try:
            while True:
                f.write(b"\0")
        except OSError:
            pass
    return filler
