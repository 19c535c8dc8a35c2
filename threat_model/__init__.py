"""onionmail's threat model: observers x metadata items x paths -> a leak matrix.

Pure Python with no dependency, importable by the box, the gateway and the
TUI alike. ``leaks(path, message, config)`` says, for every observer and
every item, whether it is visible, encrypted, padded, delayed or hidden, and
why. The prose for each path is in ``threat_model/paths/`` (see
:func:`path_prose`); how to read a cell is in ``threat_model/README.md``.
"""

from threat_model import model
from threat_model.model import *  # noqa: F403 (the whole model, as listed in model.__all__)
from threat_model.render import COLUMNS, SYMBOLS, render_table

__all__ = ["COLUMNS", "SYMBOLS", "render_table"]
__all__ += model.__all__
