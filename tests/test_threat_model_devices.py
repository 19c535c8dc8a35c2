"""The device legs' model (threat_model.devices): complete, consistent with its prose."""

from __future__ import annotations

import pytest

from threat_model import Visibility
from threat_model.devices import (
    DEVICE_ITEM_DESCRIPTIONS,
    DEVICE_OBSERVER_DESCRIPTIONS,
    DeviceItem,
    DeviceLeg,
    DeviceObserver,
    device_leaks,
    device_prose,
)

V = Visibility


@pytest.mark.parametrize("leg", list(DeviceLeg))
def test_every_cell_has_a_reason(leg: DeviceLeg) -> None:
    cells = device_leaks(leg)
    assert set(cells) == {(o, i) for o in DeviceObserver for i in DeviceItem}
    assert all(cell.reason.strip() for cell in cells.values())
    assert set(DEVICE_OBSERVER_DESCRIPTIONS) == set(DeviceObserver)
    assert set(DEVICE_ITEM_DESCRIPTIONS) == set(DeviceItem)
    with pytest.raises(TypeError):
        cells[DeviceObserver.BOX_LOGS, DeviceItem.MAIL] = cells[  # type: ignore[index]
            DeviceObserver.BOX_LOGS, DeviceItem.MAIL
        ]


@pytest.mark.parametrize("leg", list(DeviceLeg))
def test_networks_and_relays_learn_only_that_tor_is_used_and_when(leg: DeviceLeg) -> None:
    cells = device_leaks(leg)
    for observer in (
        DeviceObserver.DEVICE_NETWORK,
        DeviceObserver.TOR_GUARD,
        DeviceObserver.TOR_RELAYS,
    ):
        for item in (DeviceItem.MAIL, DeviceItem.CREDENTIALS, DeviceItem.DEVICE_ONION):
            assert cells[observer, item].visibility is not V.VISIBLE, (observer, item)
        assert cells[observer, DeviceItem.ACTIVITY].visibility is V.VISIBLE
    assert cells[DeviceObserver.DEVICE_NETWORK, DeviceItem.DEVICE_IP].visibility is V.VISIBLE
    assert cells[DeviceObserver.DEVICE_NETWORK, DeviceItem.BOX_IP].visibility is V.HIDDEN
    assert cells[DeviceObserver.TOR_GUARD, DeviceItem.BOX_IP].visibility is V.VISIBLE


@pytest.mark.parametrize("leg", list(DeviceLeg))
def test_the_address_tells_nothing_and_a_stolen_device_tells_all(leg: DeviceLeg) -> None:
    cells = device_leaks(leg)
    for item in DeviceItem:
        assert cells[DeviceObserver.ADDRESS_HOLDER, item].visibility is V.HIDDEN
        assert cells[DeviceObserver.BOX_LOGS, item].visibility is V.HIDDEN
    stolen = {
        i for i in DeviceItem if cells[DeviceObserver.STOLEN_DEVICE, i].visibility is V.VISIBLE
    }
    assert stolen == set(DeviceItem) - {DeviceItem.BOX_IP}
    assert "revoke" in cells[DeviceObserver.STOLEN_DEVICE, DeviceItem.CREDENTIALS].reason


def test_the_prose_has_both_sections_of_one_line_claims() -> None:
    text = device_prose()
    assert text.startswith("# device-read and device-submit:")
    protects, _, does_not = text.partition("\n## Does not protect against\n")
    assert "\n## Protects against\n" in protects and does_not
    for section in (protects.split("\n## Protects against\n")[1], does_not):
        claims = [line for line in section.splitlines() if line.startswith("**")]
        assert len(claims) >= 3
        assert all(claim.endswith("**") for claim in claims)
    assert "device_leaks" in text
