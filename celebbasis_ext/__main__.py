"""``python -m celebbasis_ext``: the standalone command line."""

import sys

from .cli import main

sys.exit(main())
