"""``closedloop stim-receiver``: the reference receiver of ``--stimulator lsl``.

It locks onto one session's stimulator stream and prints what a stimulator following
it would apply, one line per action, until it switches everything off: when the
session ends (exit 0), its heartbeats stop or its stream is lost (exit 4), a message
breaks the rule (another session id, a ``seq`` that does not continue, an unreadable
message: exit 6), or on Ctrl-C (130) / SIGTERM (143) / SIGHUP (129). Every way out
prints an explicit ``ALL OFF`` line. It never follows another session by itself. The rule is in
``docs/stim-receiver.md``; the code in :mod:`closedloop.stim.receiver`.
"""

from __future__ import annotations

import json
import signal
import sys

from closedloop.stim.receiver import (
    EXIT_CODES,
    HUNG_UP,
    INTERRUPTED,
    TERMINATED,
    Action,
    StimReceiver,
)


def main(args) -> int:
    """Run ``closedloop stim-receiver`` until the stream ends; returns the exit code."""
    receiver = StimReceiver(args.session, timeout_s=args.timeout_ms / 1000.0,
                            wait_s=args.wait)
    who = f"session {args.session}" if args.session else "a closedloop stimulator stream"
    print(f"stim-receiver: waiting up to {args.wait:g} s for {who}", file=sys.stderr,
          flush=True)
    locked = receiver.lock()
    _emit(args.json, {"action": "locked", "t_monotonic": receiver.rule.now,
                      "session_uid": receiver.rule.session_uid, "message": locked},
          f"stim-receiver: {locked}")
    asked: list[str] = []
    previous = {
        signal.SIGINT: signal.signal(signal.SIGINT, lambda *_: asked.append(INTERRUPTED)),
        signal.SIGTERM: signal.signal(signal.SIGTERM, lambda *_: asked.append(TERMINATED)),
    }
    hup = getattr(signal, "SIGHUP", None)  # the terminal closed (not on Windows)
    if hup is not None:
        previous[hup] = signal.signal(hup, lambda *_: asked.append(HUNG_UP))
    try:
        while receiver.rule.off is None:
            if asked:
                actions = receiver.rule.lost(receiver.clock(), asked[0],
                                             f"the receiver was stopped ({asked[0]})")
            else:
                actions = receiver.step(0.01)
            for action in actions:
                _emit(args.json, action.to_dict(), action.line())
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        receiver.close()
        if receiver.rule.off is None:  # an unexpected error: still say it
            off = receiver.rule.lost(receiver.clock(), INTERRUPTED, "the receiver failed")
            _emit(args.json, off[0].to_dict(), off[0].line())
    off: Action = receiver.rule.off
    return EXIT_CODES[off.why]


def _emit(as_json: bool, record: dict, line: str) -> None:
    print(json.dumps(record) if as_json else line, flush=True)
