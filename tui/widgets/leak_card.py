"""The leak card: for one recipient, the path a message will take and who sees what.

The path and the route are the box's (``BoxApi.predict``): an ``[onion_mx]``
domain shows the onion it goes to, a clearnet address the gateway and alias.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical

from onionmail.box.forecast import Prediction
from threat_model import PATH_DESCRIPTIONS
from tui.widgets.leak_matrix import LeakMatrixView
from tui.widgets.plain import PlainStatic


class LeakCard(Vertical):
    """One recipient's card; a refused recipient shows the rule in red."""

    DEFAULT_CSS = """
    LeakCard { height: auto; border: round $primary; padding: 0 1; margin-bottom: 1; }
    LeakCard.refused { border: round $error; }
    LeakCard .refusal { color: $error; text-style: bold; }
    """

    def __init__(self, prediction: Prediction) -> None:
        super().__init__(classes="refused" if prediction.refusal else "")
        self.prediction = prediction
        self.border_title = Text(f"to {prediction.recipient}")

    def compose(self) -> ComposeResult:
        p = self.prediction
        yield PlainStatic(
            Text.assemble(
                ("path: ", "bold"),
                (str(p.path), "bold cyan"),
                f" \u2014 {PATH_DESCRIPTIONS[p.path]}",
            ),
            classes="path",
        )
        if p.route:
            yield PlainStatic(Text.assemble(("route: ", "bold"), p.route), classes="route")
        if p.openpgp_key:
            yield PlainStatic(
                Text.assemble(("OpenPGP key known: ", "bold"), (p.openpgp_key, "green")),
                classes="openpgp",
            )
        if p.refusal:
            yield PlainStatic(f"REFUSED \u2014 {p.refusal}", classes="refusal")
        yield LeakMatrixView(p.matrix)


class InvalidRecipientCard(PlainStatic):
    DEFAULT_CSS = """
    InvalidRecipientCard { border: round $error; color: $error; padding: 0 1; height: auto; }
    """
