"""``satkern`` command line: thin; one module per subcommand in :mod:`satkern.commands`
(listed in ``COMMANDS``), each parsing its options and calling one library function."""
from __future__ import annotations

import argparse
import importlib
import re
import os
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
    from .ops import BackendUnavailable

    # a bad argument, corpus or model spec: one line, no traceback
    one_line_errors = (ValueError, FileNotFoundError, FileExistsError, ResumeError, BackendUnavailable)
    ap, modules = build_parser()
    args = ap.parse_args(argv)
    try:
        return modules[args.command].run(args)
    except one_line_errors as e:
        print(f"satkern {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    # the command name is printed already: drop the library's own "satkern <command>: " or
    # "satkern.<module>.<function>: " prefix (library errors name where they come from)
    return re.sub(r"^satkern(?: [a-z-]+|(?:\.\w+)+): ", "", text)


def run_and_exit(argv: Optional[List[str]] = None) -> None:
    """``main`` then exit; under torchrun without interpreter finalization: gloo's worker threads can
    abort the process while it tears down (SIGABRT, "terminate called without an active exception",
    pytorch/pytorch#179291), which torchrun then reports as a failed job although every output was
    already written (atomically, fsynced) and the process group destroyed."""
    rc = main(argv)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    sys.exit(rc)


if __name__ == "__main__":
    run_and_exit()
