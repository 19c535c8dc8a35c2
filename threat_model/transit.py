"""Observers who see the message go by: networks, Tor relays, the global passive adversary.

None of them is meant to read the message; what they get is what travels
past them and how it is wrapped (Tor's layers, the sealed envelope, TLS).
"""

from __future__ import annotations

from threat_model.situation import (
    BOX_MESSAGE_ID,
    DATE_FIELD,
    GATEWAY_MESSAGE_ID,
    Row,
    Situation,
    content,
    encrypted,
    hidden,
    visible,
)
from threat_model.vocabulary import Cell, Item


def _message_id_on_tor(s: Situation, carried: Cell) -> Cell:
    """On a Tor leg a box sent, the Message-ID's host is the sender onion: nothing new."""
    return hidden(BOX_MESSAGE_ID) if s.box_sends else carried


def sender_network(s: Situation) -> Row:
    if s.inbound:
        return _clearnet_sender_network(s)
    who = "the sending box" if s.box_sends else "the sending server"
    reached = (
        "never to the gateway or the recipient's provider"
        if s.gateway
        else "never to the recipient"
    )
    tor = f"inside Tor's encryption{s.seal}"
    loopback = (
        "; the mail client reaches the box over loopback, which never leaves the machine"
        if s.box_sends
        else ""
    )
    return {
        Item.SENDER_ADDRESS: encrypted(
            "it sees only encrypted Tor cells going to a Tor guard; MAIL FROM travels inside them"
        ),
        Item.RECIPIENT_ADDRESS: encrypted(
            "the destination onion is looked up and reached inside Tor; the network sees a "
            "connection to a Tor guard and nothing beyond"
        ),
        Item.SENDER_IP: visible(
            f"it is {who}'s own connection, which also shows that the machine uses Tor "
            f"(a bridge can hide that)"
        ),
        Item.RECIPIENT_IP: hidden(f"{who} connects only to its Tor guard, {reached}"),
        **content(encrypted(tor)),
        Item.SIZE: s.tor_size("the traffic leaving this network"),
        Item.SEND_TIME: s.leaving_time("it sees the burst of Tor traffic when the message leaves"),
        Item.RELATION: hidden("it sees traffic to a Tor guard, not which onion it reaches"),
        Item.CLIENT_FINGERPRINT: s.fingerprint(encrypted(f"they travel {tor}{loopback}")),
        Item.MESSAGE_ID_HOST: _message_id_on_tor(s, encrypted(tor)),
    }


def _clearnet_sender_network(s: Situation) -> Row:
    tls = (
        "the sender's client reaches its provider over TLS (webmail or submission; the model "
        "assumes TLS, which large providers require)"
    )
    return {
        Item.SENDER_ADDRESS: encrypted(tls),
        Item.RECIPIENT_ADDRESS: encrypted(tls),
        Item.SENDER_IP: visible("it is the sender's own connection"),
        Item.RECIPIENT_IP: hidden(
            "the sender's client talks only to its provider; the box is behind the gateway and Tor"
        ),
        **content(encrypted(tls)),
        Item.SIZE: visible("TLS does not pad: the upload's length gives the message's size"),
        Item.SEND_TIME: visible("it sees when the sender uploads the message"),
        Item.RELATION: hidden("it sees a connection to the sender's provider, nothing further"),
        Item.CLIENT_FINGERPRINT: encrypted(
            "the client's fields travel inside TLS (the TLS handshake itself may still hint at "
            "the client software)"
        ),
        Item.MESSAGE_ID_HOST: encrypted(tls),
    }


def tor_guard(s: Situation) -> Row:
    cells = "onion-encrypted cells" + (
        ", and inside them a sealed envelope" if s.sealed_leg else ""
    )
    if s.inbound:
        sender_ip = hidden(
            "the Tor leg starts at the gateway: the gateway's guard sees the gateway's public "
            "address, not the clearnet sender's"
        )
    else:
        sender_ip = visible(
            "the sender's guard is the relay the sending machine connects to: it sees that "
            "address, though not where the traffic goes"
        )
    if s.gateway:
        recipient_ip = hidden(
            "the Tor leg ends at the gateway, whose guard sees only the gateway's public "
            "address; the recipient is reached by SMTP, not Tor"
        )
        relation = hidden("the box's guard does not learn that the traffic goes to the gateway")
    else:
        recipient_ip = visible(
            "the recipient box reaches its onion's circuits through a guard of its own, which "
            "sees the box's address (a different relay from the sender's guard, barring chance)"
        )
        relation = hidden(
            "each guard sees one end only; if both ends happened to use the same guard, or "
            "guards run by one operator, timing would link them"
        )
    return {
        Item.SENDER_ADDRESS: encrypted(
            f"{cells}: a guard sees only the machine on one side and a relay on the other"
        ),
        Item.RECIPIENT_ADDRESS: encrypted(
            f"{cells}: the guard forwards them to a middle relay and never learns the destination"
        ),
        Item.SENDER_IP: sender_ip,
        Item.RECIPIENT_IP: recipient_ip,
        **content(encrypted(cells)),
        Item.SIZE: s.tor_size("the circuit"),
        Item.SEND_TIME: s.leaving_time("it sees the cells pass when the message leaves"),
        Item.RELATION: relation,
        Item.CLIENT_FINGERPRINT: s.fingerprint(encrypted(f"they travel in {cells}")),
        Item.MESSAGE_ID_HOST: _message_id_on_tor(s, encrypted(cells)),
    }


def tor_relays(s: Situation) -> Row:
    cells = "inside cells encrypted end to end between the two ends' tor" + (
        ", holding a sealed envelope" if s.sealed_leg else ""
    )
    return {
        Item.SENDER_ADDRESS: encrypted(cells),
        Item.RECIPIENT_ADDRESS: encrypted(
            f"{cells}; the directories holding the destination onion's descriptor see only its "
            f"blinded key, which names the onion only to someone who already knows the address"
        ),
        Item.SENDER_IP: hidden("a middle relay talks only to other relays"),
        Item.RECIPIENT_IP: hidden(
            "the rendezvous point joins two circuits whose far ends it cannot see"
        ),
        **content(encrypted(cells)),
        Item.SIZE: s.tor_size("the circuit (the rendezvous point counts every cell)"),
        Item.SEND_TIME: s.leaving_time("they see the cells pass when the message leaves"),
        Item.RELATION: hidden(
            "no relay sees both ends: the rendezvous point joins the sender's and the "
            "recipient's circuits but knows neither onion nor address"
        ),
        Item.CLIENT_FINGERPRINT: s.fingerprint(encrypted(f"they travel {cells}")),
        Item.MESSAGE_ID_HOST: _message_id_on_tor(s, encrypted(cells)),
    }


def gateway_mx_network(s: Situation) -> Row:
    """The clearnet leg: gateway to the recipient's MX, or the sender's server to the gateway."""
    if s.inbound:
        return _inbound_mx_network(s)
    if s.tls:
        wrap = encrypted(
            "the gateway requires TLS (MTA-STS and DANE enforced, no plaintext fallback): "
            "the whole SMTP dialogue is encrypted"
        )
    else:
        wrap = visible(
            "STARTTLS is not enforced, so an attacker on this path can strip it (or the MX "
            "offers none) and read the whole SMTP dialogue"
        )
    pgp = encrypted(
        "the box encrypted it end to end with OpenPGP (PGP/MIME, protected headers: the "
        "outer Subject reads '...') before it reached the gateway"
    )
    if s.tls:
        recipient = encrypted(
            f"{wrap.reason}; the recipient's domain still shows through the MX lookup and "
            f"the server the gateway connects to"
        )
        relation = hidden(
            "it sees the gateway talk to the recipient's provider: the sender is one of the "
            "gateway's users, the recipient one of the provider's (a one-person domain is "
            "that person)"
        )
        send_time = s.leaving_time(
            "it sees the SMTP transfer, which the gateway starts as soon as the box's "
            "message arrives"
        )
    else:
        recipient = wrap
        relation = visible("the alias and the recipient's address cross it in clear")
        send_time = visible(f"{DATE_FIELD}, and it crosses this network in clear")
    size_note = "; OpenPGP does not pad either" if s.openpgp else ""
    return {
        Item.SENDER_ADDRESS: Cell(
            wrap.visibility, f"MAIL FROM names the box's alias at the gateway; {wrap.reason}"
        ),
        Item.RECIPIENT_ADDRESS: recipient,
        Item.SENDER_IP: hidden("the connection comes from the gateway; the box is behind Tor"),
        Item.RECIPIENT_IP: hidden(
            "the gateway connects to the provider's MX, not to the recipient's machine"
        ),
        **content(pgp if s.openpgp else wrap),
        Item.SIZE: visible(
            f"TLS does not pad and the box's padding ended at the gateway: the transfer's "
            f"length gives the size{size_note}"
        ),
        Item.SEND_TIME: send_time,
        Item.RELATION: relation,
        Item.CLIENT_FINGERPRINT: s.fingerprint(
            Cell(wrap.visibility, f"they cross this network with the message; {wrap.reason}"),
            sees_openpgp=True,
        ),
        Item.MESSAGE_ID_HOST: hidden(GATEWAY_MESSAGE_ID),
    }


def _inbound_mx_network(s: Situation) -> Row:
    # [smtp] of the gateway offers STARTTLS but never requires it (refusing would lose the
    # mail of servers that cannot do TLS), so starttls_enforced, an outbound setting, does
    # not apply here: the worst case is the stripped session.
    wrap = visible(
        "the gateway offers STARTTLS but takes mail without it, and sending servers use it "
        "opportunistically: an attacker on this path strips it and reads the whole SMTP "
        "dialogue, and some senders never start TLS (a passive observer of a session that "
        "does use TLS sees only ciphertext)"
    )
    relation = visible("both addresses cross it in clear when TLS is stripped or not used")
    return {
        Item.SENDER_ADDRESS: wrap,
        Item.RECIPIENT_ADDRESS: wrap,
        Item.SENDER_IP: Cell(
            wrap.visibility,
            f"the sender's provider may have recorded its client's address in a Received "
            f"field, which travels with the message; {wrap.reason}",
        ),
        Item.RECIPIENT_IP: hidden("the gateway takes the mail; the box is reached through Tor"),
        **content(wrap),
        Item.SIZE: visible("TLS does not pad: the transfer's length gives the size"),
        Item.SEND_TIME: visible("it sees the transfer, which follows the sender's send at once"),
        Item.RELATION: relation,
        Item.CLIENT_FINGERPRINT: Cell(
            wrap.visibility, f"the sender's client fields travel with the message; {wrap.reason}"
        ),
        Item.MESSAGE_ID_HOST: Cell(
            wrap.visibility, f"the sender's Message-ID travels with the message; {wrap.reason}"
        ),
    }


def global_passive(s: Situation) -> Row:
    correlation = (
        "it watches every link, and end-to-end timing correlation, which Tor does not resist, "
        "ties the flow leaving the sender's machine to the flow reaching the "
        + ("gateway and on to the recipient's provider" if s.gateway else "recipient's machine")
    )
    relation = visible(
        f"{correlation}; a delay or batch policy changes when the transfer happens, not that "
        f"both ends carry it at the same moment"
    )
    if s.onion:
        tor = f"every link it watches carries Tor's encryption{s.seal}"
        return {
            Item.SENDER_ADDRESS: encrypted(tor),
            Item.RECIPIENT_ADDRESS: encrypted(tor),
            Item.SENDER_IP: visible(correlation),
            Item.RECIPIENT_IP: visible(correlation),
            **content(encrypted(tor)),
            Item.SIZE: s.tor_size("both ends' links"),
            Item.SEND_TIME: s.leaving_time("it sees the flow when the message leaves"),
            Item.RELATION: relation,
            Item.CLIENT_FINGERPRINT: s.fingerprint(encrypted(f"they travel in the message; {tor}")),
            Item.MESSAGE_ID_HOST: _message_id_on_tor(s, encrypted(tor)),
        }
    mx = gateway_mx_network(s)
    if s.inbound:
        sender_ip = visible(
            "it watches the sender's own connection to the provider, which passes the mail on "
            "at once: timing ties it to this message"
        )
        recipient_ip = visible(
            "the gateway forwards through Tor at once, and timing correlation ties its flow "
            "to the one reaching the box's machine"
        )
        relation = visible(
            "it follows the mail from the sender's connection through the gateway to the "
            "box's machine by timing, and reads the addresses where the clearnet leg is clear"
        )
    else:
        sender_ip = visible(correlation)
        recipient_ip = visible(
            "it sees the recipient's client fetch mail from the provider; timing ties that to "
            "this delivery when the client is told at once (IMAP IDLE, push)"
        )
    return {
        **{item: _on_clearnet_leg(mx[item]) for item in mx},
        Item.SENDER_IP: sender_ip,
        Item.RECIPIENT_IP: recipient_ip,
        Item.RELATION: relation,
    }


def _on_clearnet_leg(cell: Cell) -> Cell:
    return Cell(cell.visibility, f"on the clearnet leg, {cell.reason}")
