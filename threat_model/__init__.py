"""onionmail's threat model: observers x metadata items x paths -> a leak matrix.

Pure Python with no dependency, importable by the box, the gateway and the
TUI alike. ``leaks(path, message, config)`` says, for every observer and
every item, whether it is visible, encrypted, padded, delayed or hidden, and
why. The prose for each path is in ``threat_model/paths/`` (see
:func:`path_prose`); how to read a cell is in ``threat_model/README.md``.
"""

from threat_model.model import (
    DIRECTIONS,
    ITEM_DESCRIPTIONS,
    JSON_VERSION,
    NOT_ON_PATH,
    OBSERVER_DESCRIPTIONS,
    PATH_DESCRIPTIONS,
    RECEIVED,
    SENT,
    VISIBILITY_DESCRIPTIONS,
    Cell,
    Item,
    LeakMatrix,
    MailPath,
    MatrixFormatError,
    MessageTraits,
    ModelConfig,
    ModelConfigError,
    Observer,
    ThreatModelError,
    Timing,
    TraitsError,
    Visibility,
    leaks,
    observers_for,
    path_prose,
)
from threat_model.render import COLUMNS, SYMBOLS, render_table

__all__ = [
    "COLUMNS",
    "DIRECTIONS",
    "ITEM_DESCRIPTIONS",
    "JSON_VERSION",
    "NOT_ON_PATH",
    "OBSERVER_DESCRIPTIONS",
    "PATH_DESCRIPTIONS",
    "RECEIVED",
    "SENT",
    "SYMBOLS",
    "VISIBILITY_DESCRIPTIONS",
    "Cell",
    "Item",
    "LeakMatrix",
    "MailPath",
    "MatrixFormatError",
    "MessageTraits",
    "ModelConfig",
    "ModelConfigError",
    "Observer",
    "ThreatModelError",
    "Timing",
    "TraitsError",
    "Visibility",
    "leaks",
    "observers_for",
    "path_prose",
    "render_table",
]
