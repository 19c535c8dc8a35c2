"""``python -m tui --dir BOXDIR``: the same as ``onionmail-tui``."""

import sys

from tui.start import main

sys.exit(main())
