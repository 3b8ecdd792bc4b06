"""``python -m serving serve|drift ...``."""

import sys

from .cli import main

sys.exit(main())
