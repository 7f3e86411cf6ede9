"""One module per ``satkern`` subcommand.

Each module defines ``NAME`` (the subcommand), ``HELP`` (one line), ``DESCRIPTION``,
``add_arguments(parser)`` and ``run(args) -> int``; :mod:`satkern.cli` builds the parser from
:data:`COMMANDS` and calls ``run``. A command does its work by calling one library function; it
parses and prints only.
"""
from __future__ import annotations

# module names under satkern.commands, in the order `satkern --help` lists them
COMMANDS = [
    "analyze",
    "demo",
    "segment",
    "rank",
    "report",
    "pretrain",
    "demo_op",
]
