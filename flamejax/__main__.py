"""``python -m flamejax ...``: the same as the ``flamejax`` command."""

import sys

from flamejax.cli import main

sys.exit(main())
