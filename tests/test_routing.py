"""The box's one routing rule (:func:`onionmail.box.policy.route`), and that every part asks it."""

from __future__ import annotations

from pathlib import Path

import pytest

from onionmail.box.api import BoxApi
from onionmail.box.policy import Route, route
from onionmail.config.gateway import OnionMxSection
from onionmail.core.mail_address import parse_mail_address
from onionmail.seal.identity import Identity
from threat_model import MailPath
from tui.sample_box import (
    BOB_ADDRESS,
    CLEARNET_ADDRESS,
    ONION_MX_ADDRESS,
    OTHER_CLEARNET_ADDRESS,
    create_sample_box,
)

PEER = Identity.generate().onion_address
CORP = Identity.generate().onion_address
GATEWAY = Identity.generate().onion_address
ROUTES = OnionMxSection(routes={"corp.example": CORP})


@pytest.mark.parametrize(
    ("recipient", "gateway", "expected"),
    [
        (f"bob@{PEER}", GATEWAY, Route(PEER, via_gateway=False)),
        (f"bob@{PEER.upper()}", None, Route(PEER, via_gateway=False)),
        ("frank@corp.example", GATEWAY, Route(CORP, via_gateway=False)),
        ("frank@CORP.example", None, Route(CORP, via_gateway=False)),
        ("dave@example.org", GATEWAY, Route(GATEWAY, via_gateway=True)),
        ("dave@example.org", None, Route(None, via_gateway=True)),
    ],
    ids=["onion", "onion-upper", "onion-mx", "onion-mx-case", "gateway", "nowhere"],
)
def test_route(recipient: str, gateway: str | None, expected: Route) -> None:
    assert route(parse_mail_address(recipient), ROUTES, gateway) == expected


@pytest.mark.parametrize(
    "recipient", [BOB_ADDRESS, ONION_MX_ADDRESS, CLEARNET_ADDRESS, OTHER_CLEARNET_ADDRESS]
)
def test_the_leak_forecast_takes_the_route_the_box_takes(tmp_path: Path, recipient: str) -> None:
    """Regression: the rule was written twice, so the TUI's leak card could show a
    gateway path for a recipient that ``[onion_mx]`` sends straight to an onion."""
    api = BoxApi(create_sample_box(tmp_path / "alice"))
    destination = api.route(recipient)
    via_gateway = destination not in (None, parse_mail_address(recipient).domain) and (
        destination in {r.gateway for r in api.gateway_registrations({})}
    )
    path = api.predict(recipient).path
    gateway_paths = {MailPath.GATEWAY_CLEARNET, MailPath.GATEWAY_CLEARNET_OPENPGP}
    assert (path in gateway_paths) == via_gateway, (recipient, destination, path)
