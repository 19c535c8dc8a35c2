"""The device legs: who learns what when the owner's phone or laptop uses the box.

A device reaches its box through the *device onion* (onionmail.devices): a
second onion service, with its own key, published with v3 client
authorization, carrying IMAP (the box's private Dovecot) and submission.
These legs are not a message's path between two parties (the ledger and
:func:`threat_model.leaks` cover those); they are the owner's own access,
and what it shows to the networks around it, to whoever knows the mail
address, and to whoever takes the device.

``device_leaks(leg)`` answers every :class:`DeviceObserver` x
:class:`DeviceItem` pair with a :class:`~threat_model.vocabulary.Cell`; the prose
is ``devices.md`` beside this module, with the same two sections as the
paths. The wire test (tests/test_devices_onion.py) holds the network rows to
what the device's tor really sends.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from importlib import resources
from types import MappingProxyType

from threat_model.situation import encrypted, hidden, visible
from threat_model.vocabulary import Cell


class DeviceLeg(StrEnum):
    """What the device does over the device onion."""

    READ = "device-read"
    """It reads (IMAP: lists, fetches, flags, waits in IDLE) mail the box holds."""
    SUBMIT = "device-submit"
    """It hands a message to the box (submission), which then sends it on its own path."""


class DeviceObserver(StrEnum):
    """Who might learn something about the owner's use of a device."""

    DEVICE_NETWORK = "device-network"
    TOR_GUARD = "tor-guard"
    TOR_RELAYS = "tor-relays"
    ADDRESS_HOLDER = "address-holder"
    STOLEN_DEVICE = "stolen-device"
    BOX_LOGS = "box-logs"


class DeviceItem(StrEnum):
    """What a device leg can give away."""

    DEVICE_IP = "device-ip"
    BOX_IP = "box-ip"
    DEVICE_ONION = "device-onion"
    MAIL = "mail"
    CREDENTIALS = "credentials"
    ACTIVITY = "activity"


DEVICE_OBSERVER_DESCRIPTIONS: Mapping[DeviceObserver, str] = MappingProxyType(
    {
        DeviceObserver.DEVICE_NETWORK: "the Wi-Fi, mobile carrier or ISP the device is on",
        DeviceObserver.TOR_GUARD: (
            "the device's Tor guard and the box's (each sees its own end's IP address)"
        ),
        DeviceObserver.TOR_RELAYS: (
            "middle relays, the rendezvous point and the directories holding the device "
            "onion's descriptor"
        ),
        DeviceObserver.ADDRESS_HOLDER: (
            "anyone who knows the box's mail address: correspondents, spammers, a gateway"
        ),
        DeviceObserver.STOLEN_DEVICE: "whoever takes the phone or laptop",
        DeviceObserver.BOX_LOGS: "the box's log and its Dovecot's log",
    }
)
DEVICE_ITEM_DESCRIPTIONS: Mapping[DeviceItem, str] = MappingProxyType(
    {
        DeviceItem.DEVICE_IP: "the device's IP address (where the owner is)",
        DeviceItem.BOX_IP: "the box's IP address (where the box is)",
        DeviceItem.DEVICE_ONION: "the device onion's address, or that the box has devices",
        DeviceItem.MAIL: "addresses, subjects and bodies of the mail read or sent",
        DeviceItem.CREDENTIALS: "the client-authorization key and the device's password",
        DeviceItem.ACTIVITY: "when the device reads or sends, and how much",
    }
)

_INSIDE_TOR = (
    "the IMAP or SMTP session runs inside the onion-service connection, encrypted end to "
    "end between the device's tor and the box's"
)


def _network(leg: DeviceLeg) -> dict[DeviceItem, Cell]:
    doing = "syncs" if leg is DeviceLeg.READ else "sends"
    return {
        DeviceItem.DEVICE_IP: visible(
            "it is the device's own connection, which also shows that the device uses Tor "
            "(a bridge in Orbot hides that)"
        ),
        DeviceItem.BOX_IP: hidden("the device connects only to its Tor guard, never to the box"),
        DeviceItem.DEVICE_ONION: encrypted(
            "the descriptor is fetched and the onion reached inside Tor"
        ),
        DeviceItem.MAIL: encrypted(_INSIDE_TOR),
        DeviceItem.CREDENTIALS: encrypted(
            "the password travels inside the onion connection; the client key never leaves "
            "the device (tor uses it to decrypt the descriptor)"
        ),
        DeviceItem.ACTIVITY: visible(
            f"it sees a burst of Tor traffic when the device {doing}, and its volume"
            + ("; IDLE keeps one circuit open" if leg is DeviceLeg.READ else "")
        ),
    }


def _guard(leg: DeviceLeg) -> dict[DeviceItem, Cell]:
    row = _network(leg)
    row[DeviceItem.BOX_IP] = visible(
        "the box's own guard sees the box's address, as for every onion service; it cannot "
        "tell device sessions from mail"
    )
    row[DeviceItem.DEVICE_ONION] = encrypted(
        "a guard relays encrypted cells and cannot tell which onion they reach"
    )
    return row


def _relays(leg: DeviceLeg) -> dict[DeviceItem, Cell]:
    return {
        DeviceItem.DEVICE_IP: hidden("a middle relay or rendezvous point sees only other relays"),
        DeviceItem.BOX_IP: hidden("a middle relay or rendezvous point sees only other relays"),
        DeviceItem.DEVICE_ONION: hidden(
            "the directories store the descriptor under a blinded key that changes daily, and "
            "its introduction points are encrypted to the authorized client keys: without one "
            "they learn neither the address nor how to reach it"
        ),
        DeviceItem.MAIL: encrypted(_INSIDE_TOR),
        DeviceItem.CREDENTIALS: encrypted(_INSIDE_TOR),
        DeviceItem.ACTIVITY: visible(
            "the rendezvous point sees when the session's cells pass and how many, not whose "
            "they are"
        ),
    }


def _address_holder(leg: DeviceLeg) -> dict[DeviceItem, Cell]:
    separate = (
        "the device onion has its own key, derived from the box's seed under another label: "
        "nothing in the mail address or its descriptor leads to it"
    )
    return {
        DeviceItem.DEVICE_IP: hidden("device traffic never touches the mail onion"),
        DeviceItem.BOX_IP: hidden("the mail onion hides it, as always"),
        DeviceItem.DEVICE_ONION: hidden(separate),
        DeviceItem.MAIL: hidden("IMAP and submission are not on the mail onion at all"),
        DeviceItem.CREDENTIALS: hidden(separate),
        DeviceItem.ACTIVITY: hidden(
            "reading mail changes nothing the mail onion answers (no read receipts)"
            if leg is DeviceLeg.READ
            else "the message leaves the box as any other would, on its own path"
        ),
    }


def _stolen_device(leg: DeviceLeg) -> dict[DeviceItem, Cell]:
    return {
        DeviceItem.DEVICE_IP: visible("it is the device: its networks are in its settings"),
        DeviceItem.BOX_IP: hidden(
            "the device only ever knew the onion: the box's address is on no device"
        ),
        DeviceItem.DEVICE_ONION: visible("the mail client's settings and tor's key file name it"),
        DeviceItem.MAIL: visible(
            "the mail client keeps what it synced"
            + (" and the messages it sent" if leg is DeviceLeg.SUBMIT else "")
            + ", in clear unless the device is encrypted and locked; with the key and "
            "password below, the box's whole mailbox of that local part until revoked"
        ),
        DeviceItem.CREDENTIALS: visible(
            "the client key file and the saved password reach the box's IMAP and send as "
            "the owner until 'onionmail device revoke' (one device's; the others keep theirs)"
        ),
        DeviceItem.ACTIVITY: visible("the client's cache holds when mail was read and sent"),
    }


def _box_logs(leg: DeviceLeg) -> dict[DeviceItem, Cell]:
    return {
        DeviceItem.DEVICE_IP: hidden("the box's tor never learns the device's address"),
        DeviceItem.BOX_IP: hidden("the box logs no addresses of its own"),
        DeviceItem.DEVICE_ONION: hidden(
            "the log says how many devices the onion serves, never its address"
        ),
        DeviceItem.MAIL: hidden(
            "Dovecot's log keeps warnings and errors without user names; the box logs no "
            "address or subject at INFO or above"
        ),
        DeviceItem.CREDENTIALS: hidden("keys and passwords are never logged"),
        DeviceItem.ACTIVITY: hidden(
            "logins and sessions are not logged (Dovecot's info lines are discarded)"
        ),
    }


_RULES = {
    DeviceObserver.DEVICE_NETWORK: _network,
    DeviceObserver.TOR_GUARD: _guard,
    DeviceObserver.TOR_RELAYS: _relays,
    DeviceObserver.ADDRESS_HOLDER: _address_holder,
    DeviceObserver.STOLEN_DEVICE: _stolen_device,
    DeviceObserver.BOX_LOGS: _box_logs,
}


def device_leaks(leg: DeviceLeg) -> Mapping[tuple[DeviceObserver, DeviceItem], Cell]:
    """Every observer x item of ``leg``, with its visibility and reason (read-only)."""
    leg = DeviceLeg(leg)
    cells: dict[tuple[DeviceObserver, DeviceItem], Cell] = {}
    for observer in DeviceObserver:
        row = _RULES[observer](leg)
        for item in DeviceItem:
            cells[observer, item] = row[item]
    return MappingProxyType(cells)


def device_prose() -> str:
    """The prose threat model of the device legs (``threat_model/devices.md``)."""
    return resources.files("threat_model").joinpath("devices.md").read_text(encoding="utf-8")
