"""``python -m onionmail.cli``: the same as the ``onionmail`` command."""

from onionmail.cli.main import main

raise SystemExit(main())
