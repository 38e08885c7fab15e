"""``python -m closedloop``: the ``closedloop`` command (:mod:`closedloop.cli`)."""

import sys

from closedloop.cli import main

sys.exit(main())
