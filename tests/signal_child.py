"""Interrupting ``satkern`` commands at a known moment, for the tests of clean stops (SIGINT / SIGTERM).

As a script (``python tests/signal_child.py analyze --model ...``) it runs the command exactly as
``python -m satkern`` does (:func:`satkern.cli.run_and_exit`), with one test-only gate: the
``SATKERN_TEST_GATE``-th time the job reaches a gate it writes the file ``SATKERN_TEST_GATE_FILE`` and
waits there until a signal comes, so the parent knows what has finished when it signals, without fixed
sleeps. Gates (``SATKERN_TEST_GATE_ON``):

* ``stop`` (default): a job's check for a stop between units (``StopRequest.requested``: analyze
  between batches, pretrain between steps, rank between points); the wait ends when the first signal
  has set the stop flag, and the job then stops as it would after a real batch;
* ``progress``: the start of a unit of progress (``AudioProgress.before``: a batch of analyze, an
  utterance of segment), for jobs that stop at once.

``SATKERN_TEST_GATE_HOLD=1``: after the first signal the gate keeps waiting (a unit that does not end),
writing ``<gate file>.held``; only a second signal ends it. A gate never reached within
``SATKERN_TEST_GATE_TIMEOUT`` seconds (default 120) exits 99.

Imported, :func:`run_interrupted` is the parent's side.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHILD = Path(__file__).resolve()


def _install_gate() -> None:
    from satkern.jobs import interrupt, progress

    target = int(os.environ["SATKERN_TEST_GATE"])
    marker = Path(os.environ["SATKERN_TEST_GATE_FILE"])
    hold = os.environ.get("SATKERN_TEST_GATE_HOLD") == "1"
    timeout = float(os.environ.get("SATKERN_TEST_GATE_TIMEOUT", "120"))
    calls = [0]

    def wait_for(done) -> None:
        t0 = time.monotonic()
        while not done():
            if time.monotonic() - t0 > timeout:
                os._exit(99)
            time.sleep(0.01)  # a signal's handler runs here (and may raise Interrupted)

    def gate() -> None:
        calls[0] += 1
        if calls[0] != target:
            return
        marker.write_text(str(os.getpid()))
        wait_for(lambda: interrupt._state.requested is not None)
        if hold:
            Path(str(marker) + ".held").write_text("held")
            wait_for(lambda: False)  # only the second signal gets out of here

    if os.environ.get("SATKERN_TEST_GATE_ON", "stop") == "stop":
        real = interrupt.StopRequest.requested

        def requested(self):
            gate()
            return real.fget(self)

        interrupt.StopRequest.requested = property(requested)
    else:
        real_before = progress.AudioProgress.before

        def before(self, inputs):
            gate()
            return real_before(self, inputs)

        progress.AudioProgress.before = before


def run_interrupted(argv, folder, *, gate: int, signals=(signal.SIGINT,), gate_on: str = "stop", hold: bool = False,
                    timeout: float = 240.0):
    """Run ``satkern argv`` in a child, send ``signals[0]`` once it waits at gate number ``gate`` (and, with
    ``hold``, ``signals[1]`` once it holds). Returns ``(returncode, stdout, stderr, seconds from the last
    signal to the exit)``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / "gate"
    for p in (marker, Path(str(marker) + ".held")):
        if p.exists():
            p.unlink()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), SATKERN_TEST_GATE=str(gate),
               SATKERN_TEST_GATE_FILE=str(marker), SATKERN_TEST_GATE_ON=gate_on,
               SATKERN_TEST_GATE_HOLD="1" if hold else "0")
    out_path, err_path = folder / "stdout.txt", folder / "stderr.txt"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        p = subprocess.Popen([sys.executable, str(CHILD), *map(str, argv)], env=env, stdout=out, stderr=err,
                             cwd=str(REPO))
        try:
            _wait_file(marker, p, timeout, err_path)
            os.kill(p.pid, signals[0])
            if hold:
                _wait_file(Path(str(marker) + ".held"), p, 60, err_path)
                os.kill(p.pid, signals[1])
            t_signal = time.monotonic()
            p.wait(timeout=timeout)
            after = time.monotonic() - t_signal
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    return p.returncode, out_path.read_text(), err_path.read_text(), after


def _wait_file(path: Path, p, timeout: float, err_path: Path) -> None:
    t0 = time.monotonic()
    while not path.exists():
        if p.poll() is not None:
            raise AssertionError(f"the child ended (rc {p.returncode}) before reaching the gate:\n"
                                 f"{err_path.read_text()[-3000:]}")
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"the child did not reach the gate in {timeout} s:\n{err_path.read_text()[-3000:]}")
        time.sleep(0.02)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    _install_gate()
    from satkern.cli import run_and_exit

    run_and_exit(sys.argv[1:])
