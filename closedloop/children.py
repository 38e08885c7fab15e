"""Python child processes of closedloop run the same closedloop as their parent.

``python -m closedloop ...`` and ``python -c ...`` put the current directory first on
``sys.path``. Started from a folder that holds another closedloop (a checkout of another
version, say), the child would import that one: the live view would draw with other code
than the session that started it, and ``closedloop bench --replay`` would time other code
than the installed one. :func:`python_command` starts Python with the folder this package
was imported from first on the path and, from Python 3.11, without the current directory
(``PYTHONSAFEPATH``; on 3.10 this folder comes right after it).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

#: The folder this ``closedloop`` package was imported from.
HOME = str(Path(__file__).resolve().parents[1])


def python_command(*args: str, env: Mapping[str, str] | None = None,
                   ) -> tuple[list[str], dict[str, str]]:
    """The argv and environment of a Python child that imports this closedloop: e.g.
    ``python_command("-m", "closedloop", "view")`` for ``subprocess.Popen(argv, env=env)``.

    ``env`` is the child's environment to start from (default: this process's).
    """
    out = dict(os.environ if env is None else env)
    path = [p for p in out.get("PYTHONPATH", "").split(os.pathsep) if p and p != HOME]
    out["PYTHONPATH"] = os.pathsep.join([HOME, *path])
    out["PYTHONSAFEPATH"] = "1"
    return [sys.executable, *args], out


__all__ = ["HOME", "python_command"]
