"""``python -m bertapprox_hf.cli``: the ``bertapprox`` command."""

import sys

from . import main

sys.exit(main())
