"""What argparse prints for `satkern --help` and every `satkern COMMAND --help` is plain text: no docstring
markup (reST roles and literals, Markdown backticks or bold) leaks into it."""
import os
import re
import subprocess
import sys
from pathlib import Path

from satkern.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
# ``literal``, `code`, :func:`x` / :class: / :mod: ..., **bold**, reST directives
MARKUP = re.compile(r"`|:(?:func|class|mod|meth|data|attr|ref|doc):|\*\*|^\s*\.\. \w+::", re.M)


def _markup(text: str):
    return [text[max(0, m.start() - 40):m.end() + 40] for m in MARKUP.finditer(text)]


def test_top_level_help_of_a_real_process():
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "satkern", "--help"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: satkern") and "analyze" in r.stdout and "demo-op" in r.stdout
    assert not _markup(r.stdout), _markup(r.stdout)


def test_every_command_help_is_plain_text():
    ap, modules = build_parser()
    sub = next(a for a in ap._actions if a.dest == "command")
    found = {}
    for name in modules:
        text = sub.choices[name].format_help()
        if _markup(text):
            found[name] = _markup(text)
    assert not found, found
    assert set(modules) == set(sub.choices)  # every command was looked at
