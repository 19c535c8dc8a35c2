"""onionmail's terminal UI (textual). It talks to a box only through :mod:`onionmail.box.api`."""
