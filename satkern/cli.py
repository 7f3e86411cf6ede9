"""``satkern`` command line: thin; one module per subcommand in :mod:`satkern.commands`
(listed in ``COMMANDS``), each parsing its options and calling one library function."""
from __future__ import annotations

import argparse
import importlib
import re
import os
import signal
import sys
from typing import List, Optional

from .commands import COMMANDS
from .commands.analyze import print_report  # noqa: F401  (kept importable from satkern.cli)
from .commands.demo import DEMO_MODEL, FIXTURE_CORPUS  # noqa: F401

# what `satkern --help` says above the list of commands (plain text: argparse prints it as written)
DESCRIPTION = """\
satkern: fused self-attention with per-head attention statistics for self-supervised speech
transformers (G, V, D, W of every head; head and span pruning), and the paper's analyses.

Run 'satkern COMMAND --help' for a command's options. Under torchrun,
'torchrun --nproc-per-node N -m satkern analyze ...' shards the utterances over N processes."""


def _command_modules():
    return [importlib.import_module(f".commands.{name}", __package__) for name in COMMANDS]


def build_parser():
    """The ``satkern`` parser and ``{subcommand: module}``."""
    from . import __version__

    ap = argparse.ArgumentParser(prog="satkern", description=DESCRIPTION,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=f"satkern {__version__}",
                    help="print the satkern version and exit")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules = {}
    for mod in _command_modules():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP))
        mod.add_arguments(p)
        modules[mod.NAME] = mod
    return ap, modules


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from .jobs import ResumeError
    from .jobs.interrupt import Interrupted, handle_stop_signals
    from .ops import BackendUnavailable

    # a bad argument, corpus or model spec: one line, no traceback
    one_line_errors = (ValueError, FileNotFoundError, FileExistsError, ResumeError, BackendUnavailable)
    ap, modules = build_parser()
    args = ap.parse_args(argv)
    # SIGINT / SIGTERM: the job stops cleanly (satkern.jobs.interrupt), one line, exit 128 + signal;
    # a command run by another command (demo's steps) lets the interrupt through to the outer one
    with handle_stop_signals(label=f"satkern {args.command}: ") as outermost:
        try:
            return modules[args.command].run(args)
        except one_line_errors as e:
            print(f"satkern {args.command}: error: {_one_line(e)}", file=sys.stderr)
            return 2
        except KeyboardInterrupt as e:  # Interrupted, or a Ctrl-C met where no handler was installed
            if not outermost:
                raise
            if not isinstance(e, Interrupted):
                e = Interrupted(signal.SIGINT, "interrupted (SIGINT): stopped at once")
            restate = getattr(modules[args.command], "interrupted", None)  # a command that knows what is kept
            if restate is not None:
                e = restate(e)
            print(f"satkern {args.command}: {_one_line(e.message)}", file=sys.stderr, flush=True)
            return e.exit_code


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    # the command name is printed already: drop the library's own "satkern <command>: " or
    # "satkern.<module>.<function>: " prefix (library errors name where they come from)
    return re.sub(r"^satkern(?: [a-z-]+|(?:\.\w+)+): ", "", text)


def run_and_exit(argv: Optional[List[str]] = None) -> None:
    """``main`` then exit; interrupted (130 / 143) or under torchrun, without interpreter finalization.
    Interrupted: to stop promptly (tearing down torch and transformers takes seconds). Under torchrun:
    gloo's worker threads can abort the process while it tears down (SIGABRT, "terminate called without
    an active exception", pytorch/pytorch#179291), which torchrun then reports as a failed job although
    every output was already written (atomically, fsynced) and the process group destroyed."""
    try:
        rc = main(argv)
    except KeyboardInterrupt:  # before main installed its handlers (while importing, parsing)
        print("satkern: interrupted (SIGINT): stopped at once", file=sys.stderr, flush=True)
        rc = 128 + int(signal.SIGINT)
    # interrupted (130, 143): what is kept is written (atomically, fsynced) and the job's resources released;
    # exit without the seconds of module teardown a torch + transformers interpreter takes, so a stop is prompt
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 or rc in (128 + int(signal.SIGINT), 128 + int(signal.SIGTERM)):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    sys.exit(rc)


if __name__ == "__main__":
    run_and_exit()
