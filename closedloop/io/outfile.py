"""Files closedloop writes: none is ever destroyed, none is written by two at once.

Every command that writes a file (``run --record``, ``detect --out``, ``calibrate
--out``, ``report --out``, ``view --screenshot``; ``tools/soak.py --record``) claims it
with :func:`claim_output` before it opens a device or starts any work:

* an existing file is refused unless ``--overwrite`` is given; the message names the
  file and the flag;
* the output may never be one of the command's inputs (the config, the recording, the
  EMG file), not even with ``--overwrite``: the same path, a symlink or a hard link;
* a folder, an empty name or a place that cannot be written is refused with what to do;
  missing parent folders are created; so is a device, a pipe or a socket (``/dev/full``;
  opening a pipe waits for a reader for ever);
* the claim holds an exclusive lock (``fcntl.flock``) on the file for as long as the
  command writes it, so a second session naming the same file refuses at its start
  while the first goes on. The lock is on the file itself, not on a side file, so there
  is nothing to clean up after a crash: the kernel drops it with the last process that
  holds it (a recorder child process can hold it too, see :attr:`OutputClaim.fd`).

The claim never truncates: an existing file is replaced only when the command really
writes it. A file the claim created and nothing was written into is removed when the
claim is released, so a command refused later (a bad source, a failed calibration)
leaves no empty file behind. :func:`write_whole` writes a claimed file completely or not
at all (a full disk leaves no part of a file).

On a system without ``fcntl`` (Windows) the lock is not taken; the other rules hold.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from closedloop.errors import ConfigError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

#: The command-line flag that allows replacing an existing file.
OVERWRITE_FLAG = "--overwrite"


@dataclass
class OutputClaim:
    """An output file claimed for writing (see the module docstring).

    Attributes
    ----------
    path : Path
        The file.
    fd : int
        An open descriptor of the file carrying the lock (-1 once released). A child
        process that writes the file can inherit it (``subprocess.Popen(pass_fds=...)``)
        so that the lock lasts until the child is done too.
    created : bool
        The claim created the file (it did not exist before).
    """

    path: Path
    fd: int
    created: bool

    def release(self) -> None:
        """Drop the lock; remove the file if the claim created it and it is still empty.
        Idempotent."""
        fd, self.fd = self.fd, -1
        if fd < 0:
            return
        try:
            if self.created and os.fstat(fd).st_size == 0 and _same_inode(fd, self.path):
                self.path.unlink(missing_ok=True)
        except OSError:
            pass  # nothing was written; a file left behind is harmless
        finally:
            os.close(fd)

    def discard(self) -> None:
        """Empty a file the claim created (the command failed before writing anything
        worth keeping), so that :meth:`release` removes it."""
        if self.fd >= 0 and self.created and _same_inode(self.fd, self.path):
            os.ftruncate(self.fd, 0)

    def __enter__(self) -> OutputClaim:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def _same_inode(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file: the same path once resolved, a symlink or a hard
    link to it."""
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
        return os.path.realpath(a) == os.path.realpath(b)
    except (OSError, ValueError):
        return False


def claim_output(
    path: str | Path,
    *,
    overwrite: bool = False,
    inputs: Iterable[tuple[str, str | Path | None]] = (),
    what: str = "output file",
    flag: str = OVERWRITE_FLAG,
) -> OutputClaim:
    """Claim ``path`` for writing: validate it, create it if needed, lock it.

    Parameters
    ----------
    path : str or Path
        The file the command will write.
    overwrite : bool
        Allow replacing an existing file (``--overwrite``).
    inputs : iterable of (role, path)
        The command's input files, e.g. ``[("config", "c.toml")]``; the output may be
        none of them, whatever ``overwrite`` says. None paths are skipped.
    what : str
        What the file is, for messages ("recording", "events file"...).
    flag : str
        How the user allows overwriting, for messages.

    Returns
    -------
    OutputClaim
        Release it (or use it as a context manager) when the file is written.

    Raises
    ------
    ConfigError
        The path is empty, a folder, one of the inputs, an existing file without
        ``overwrite``, locked by another session, or cannot be created; the message
        says what to do.
    """
    text = os.fspath(path)
    if not text.strip():
        raise ConfigError(f"the {what} has an empty file name; give a file name")
    if "\x00" in text:
        raise ConfigError(f"the {what} name {text!r} contains a NUL character; give a "
                          "plain file name")
    p = Path(text)
    if os.path.isdir(p) or text.endswith(("/", os.sep)):
        raise ConfigError(f"the {what} {text!r} is a folder; give a file name in it, e.g. "
                          f"{str(p / _EXAMPLES.get(what, 'out'))!r}")
    if os.path.islink(p) and not os.path.exists(p):
        raise ConfigError(f"the {what} {text!r} is a symbolic link to {os.readlink(p)!r}, which "
                          "does not exist; give another name, or remove the link")
    try:
        mode = os.stat(p).st_mode
    except (OSError, ValueError):
        mode = None  # nothing there
    if mode is not None and not stat.S_ISREG(mode):  # opening a FIFO waits for a reader
        raise ConfigError(f"the {what} {text!r} is not a regular file (a device, a pipe or "
                          f"a socket); give the name of a file to write, e.g. "
                          f"{_EXAMPLES.get(what, 'out')!r}")
    for role, other in inputs:
        if other is not None and str(other) and same_file(p, other):
            raise ConfigError(
                f"the {what} {text!r} is the {role} {str(other)!r}: writing it would destroy "
                f"the {role}. Give the {what} another name ({flag} never allows this)")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the folder of the {what} {text!r} ({_why(exc)}); "
                          "choose a folder you can write to") from None
    for _attempt in range(3):
        created = True
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            if not overwrite:
                raise ConfigError(f"the {what} {text!r} already exists; give another name, "
                                  f"or {flag} to replace it") from None
            created = False
            try:
                fd = os.open(p, os.O_WRONLY)  # no truncation: the writer replaces it
            except FileNotFoundError:
                continue  # removed in between: try to create it again
            except OSError as exc:
                raise _cannot(what, text, exc) from None
        except OSError as exc:
            raise _cannot(what, text, exc) from None
        if not _lock(fd):
            os.close(fd)
            raise ConfigError(
                f"the {what} {text!r} is being written by another closedloop session right "
                "now; let it finish, or give another name")
        if _same_inode(fd, p):
            return OutputClaim(p, fd, created)
        os.close(fd)  # the file was removed or replaced before the lock: take the new one
    raise ConfigError(f"the {what} {text!r} keeps being replaced by another program; give "
                      "another name")


def files_of(role: str, paths: Iterable[str | Path | None]
             ) -> list[tuple[str, str | Path | None]]:
    """``(role, file)`` for :func:`claim_output`'s ``inputs``: each path, and every file
    inside a path that is a folder (an output inside an input folder may be one of the
    recordings the command reads)."""
    out: list[tuple[str, str | Path | None]] = []
    for p in paths:
        if p is None:
            continue
        out.append((role, p))
        if os.path.isdir(p):
            out += [(role, f) for f in Path(p).rglob("*") if f.is_file()]
    return out


def write_whole(path: str | Path, data: str | bytes, *, what: str = "output file") -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` completely or not at all.

    The data go to a temporary file beside ``path``, which then replaces it: a failure
    (the disk full, the folder made read-only) leaves ``path`` as it was (the empty file
    of a claim, which releasing it removes, or the file ``--overwrite`` was to replace)
    and no part of a file behind. Call it on a path claimed with :func:`claim_output`
    (which refuses devices and pipes: they are never replaced).

    Raises
    ------
    ConfigError
        The file could not be written; the message names it, says why and what to do.
    """
    p = Path(path)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise ConfigError(f"cannot write the {what} {str(p)!r} ({_why(exc)}); nothing of it "
                          "was written. Free disk space, or choose a folder you can write "
                          "to") from None
    return p


def _lock(fd: int) -> bool:
    """Take an exclusive, non-blocking lock; False when another process holds one."""
    if fcntl is None:  # pragma: no cover - Windows
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def _cannot(what: str, text: str, exc: OSError) -> ConfigError:
    if isinstance(exc, IsADirectoryError):
        return ConfigError(f"the {what} {text!r} is a folder; give a file name in it")
    return ConfigError(f"cannot write the {what} {text!r} ({_why(exc)}); choose a file name "
                       "in a folder you can write to")


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


#: A file name to suggest, by what the file is.
_EXAMPLES = {"recording": "session.xdf", "report": "report.html", "events file": "events.csv",
             "patient config": "patient.toml", "screenshot": "view.png"}


__all__ = ["OVERWRITE_FLAG", "OutputClaim", "claim_output", "files_of", "same_file",
           "write_whole"]
