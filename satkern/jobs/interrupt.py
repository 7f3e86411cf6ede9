"""Clean stops on SIGINT (Ctrl-C) and SIGTERM (what schedulers send) for every long command.

Two context managers, one process-wide state:

* :func:`handle_stop_signals` (the CLI, around a whole command): SIGINT and SIGTERM raise
  :class:`Interrupted` at once, wherever the program is; the CLI prints its one line and exits
  ``128 + signal`` (130 for SIGINT, 143 for SIGTERM), never a traceback.
* :func:`stop_between` (a job, around its loop of batches, steps or points): the **first** signal
  only sets a flag (and says on stderr that the job stops after the current ``unit``); the loop
  checks ``stop.requested`` between units, writes its checkpoint and raises
  ``stop.interrupted("interrupted: 12 of 30 utterances kept; resume with --resume")``. A **second**
  signal raises :class:`Interrupted` at once (its message ends with the section's ``note``: what is
  kept). Leaving the section with a request pending that the loop did not take raises
  :class:`Interrupted` then, so a signal is never lost.

Both install the handlers only when none of theirs is installed and only in the main thread (Python
delivers signals there; elsewhere they are no-ops and Ctrl-C stays a plain ``KeyboardInterrupt``),
and restore the previous handlers on exit. :class:`Interrupted` is a ``KeyboardInterrupt``, so code
that handles Ctrl-C handles it, and ``except Exception`` never swallows it.

DataLoader workers get :func:`ignore_stop_signals` as ``worker_init_fn``: a Ctrl-C in a terminal (or
a scheduler's SIGTERM) reaches the whole process group, and a worker that died of it would make
the main process fail with "DataLoader worker exited unexpectedly" instead of stopping cleanly.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator, Optional

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A command stopped by a signal: ``message`` is the one line to print (without the
    ``satkern <command>:`` prefix), ``exit_code`` is ``128 + signum``."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = int(signum)
        self.message = message

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def signal_name(self) -> str:
        return signal_name(self.signum)

    def restated(self, message: str) -> "Interrupted":
        """The same interrupt with another message (a caller that knows better what is kept)."""
        return Interrupted(self.signum, message)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class _State:
    """The process-wide state the handler reads (a signal handler gets no other context)."""

    def __init__(self):
        self.installed = False
        self.previous: dict = {}
        self.depth = 0  # nested handle_stop_signals
        self.label = ""  # "satkern analyze: ", prefixed to what the handler writes
        self.sections: list = []  # the open stop_between sections, innermost last
        self.requested: Optional[int] = None  # first signal met inside a section


_state = _State()


def _write_stderr(line: str) -> None:
    # os.write, not print: the handler may run while the main thread is inside a print to stderr
    # (a buffered writer is not reentrant)
    try:
        lead = "\n" if sys.stderr.isatty() else ""  # off a progress bar's line
        os.write(2, (lead + line + "\n").encode("utf-8", "replace"))
    except (OSError, ValueError, AttributeError):
        pass


def _handler(signum, frame) -> None:
    if _state.sections and _state.requested is None:
        _state.requested = signum
        unit = _state.sections[-1].unit
        _write_stderr(f"{_state.label}{signal_name(signum)}: stopping after the current {unit}; "
                      f"a second Ctrl-C (or signal) stops at once")
        return
    if _state.sections:  # the second signal: at once
        note = _state.sections[-1].note
        _state.requested = None
        raise Interrupted(signum, f"interrupted again ({signal_name(signum)}): stopped at once" +
                          (f"; {note}" if note else ""))
    raise Interrupted(signum, f"interrupted ({signal_name(signum)}): stopped at once")


def _install() -> bool:
    """Install the handlers; False when they are installed already or cannot be (not the main thread)."""
    if _state.installed or threading.current_thread() is not threading.main_thread():
        return False
    _state.previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    for s in STOP_SIGNALS:
        signal.signal(s, _handler)
    _state.installed = True
    _state.requested = None
    return True


def _uninstall() -> None:
    for s, h in _state.previous.items():
        signal.signal(s, h if h is not None else signal.SIG_DFL)
    _state.previous = {}
    _state.installed = False
    _state.requested = None


@contextmanager
def handle_stop_signals(label: str = "") -> Iterator[bool]:
    """SIGINT / SIGTERM raise :class:`Interrupted` at once while inside (outside any
    :func:`stop_between` section). Yields True for the outermost use (the one whose caller prints
    the interrupt), False when nested (a command run by another command, like ``demo``'s steps)."""
    outermost = _state.depth == 0
    installed = _install()
    old_label = _state.label
    if outermost and label:
        _state.label = label
    _state.depth += 1
    try:
        yield outermost
    finally:
        _state.depth -= 1
        _state.label = old_label
        if installed:
            _uninstall()


class StopRequest:
    """What :func:`stop_between` yields: ``requested`` is the signal met (``None`` while none),
    ``note`` what a second signal's message says is kept (the loop updates it as it checkpoints)."""

    def __init__(self, unit: str, note: str):
        self.unit = unit
        self.note = note
        self.taken = False

    @property
    def requested(self) -> Optional[int]:
        return _state.requested

    def __bool__(self) -> bool:
        return self.requested is not None

    def interrupted(self, message: str) -> Interrupted:
        """The :class:`Interrupted` to raise once the loop has stopped and kept what it could."""
        signum = _state.requested if _state.requested is not None else signal.SIGINT
        _state.requested = None
        self.taken = True
        return Interrupted(signum, message)


@contextmanager
def stop_between(unit: str = "batch", note: str = "") -> Iterator[StopRequest]:
    """A loop that can stop cleanly between ``unit``s (see the module docstring)."""
    installed = _install()
    stop = StopRequest(unit, note)
    _state.sections.append(stop)
    ok = False
    try:
        yield stop
        ok = True
    finally:
        _state.sections.remove(stop)
        pending = _state.requested
        if not _state.sections:
            _state.requested = None
        if installed:
            _uninstall()
    if ok and pending is not None and not _state.sections:
        raise Interrupted(pending, f"interrupted ({signal_name(pending)}): " + (stop.note or "stopped"))


def ignore_stop_signals(worker_id: int = 0) -> None:
    """``worker_init_fn`` of DataLoader workers: they ignore SIGINT / SIGTERM and let the main
    process decide (it stops them when it stops)."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)


__all__ = ["Interrupted", "StopRequest", "handle_stop_signals", "stop_between", "ignore_stop_signals", "signal_name",
           "STOP_SIGNALS"]
