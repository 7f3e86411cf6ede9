"""``python -m satkern ...`` (also ``torchrun -m satkern analyze ...``): see :mod:`satkern.cli`."""
from .cli import run_and_exit

run_and_exit()
