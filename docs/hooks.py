"""MkDocs hook: write the pages that come from the code before each build.

``configuration.md`` is rendered from the typed configuration classes
(:mod:`onionmail.config.reference`) and ``img/bench-*.png`` from
``bench/results.json`` (:mod:`bench.plots`); both are build products, not
sources, so they are not kept in git.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

INTRO_BOX = (
    "A box reads `onionmail.toml` in its directory once, at start. Every key is "
    "optional; `onionmail init` writes the file with each default shown commented "
    'out. An error names the file, the section and the key. `[timing.contacts."..."]` '
    "tables, `[gateway]` and `[onion_mx]` are keyed by addresses; their keys are "
    "described with the section."
)
INTRO_GATEWAY = (
    "A gateway reads `gateway.toml` in its directory (`onionmail-gateway init` "
    "writes it). `[tor]` and `[delivery]` are the same sections as the box's."
)


def write_generated() -> list[Path]:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from bench.plots import write_plots
    from gateway.config import GatewayConfig
    from onionmail.config.box import Config
    from onionmail.config.reference import file_markdown

    page = "\n".join(
        [
            "# Configuration reference",
            "",
            "Generated from the typed configuration classes at each build of this site.",
            "",
            file_markdown("The box: `onionmail.toml`", INTRO_BOX, Config),
            file_markdown("The gateway: `gateway.toml`", INTRO_GATEWAY, GatewayConfig),
        ]
    )
    target = DOCS / "configuration.md"
    if not target.exists() or target.read_text() != page:
        target.write_text(page)
    return [target, *write_plots(DOCS / "img")]


def on_pre_build(config: Any) -> None:
    write_generated()
