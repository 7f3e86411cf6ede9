"""``python -m satkern ...`` (also ``torchrun -m satkern analyze ...``): see :mod:`satkern.cli`."""
import sys

from .cli import main

sys.exit(main())
