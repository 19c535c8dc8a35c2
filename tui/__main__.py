"""``python -m tui --dir BOXDIR``: the same as ``onionmail-tui``."""

import sys

from tui.app import main

sys.exit(main())
