"""`python -m fmnist` (and `torchrun -m fmnist`) runs the CLI."""

import sys

from .cli import main

sys.exit(main())
