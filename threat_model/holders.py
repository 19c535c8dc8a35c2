"""Observers who hold the message: the ends, the servers between them, your box at rest.

The recipient's box and the servers that relay mail in clear are *meant*
to handle the message; the model still lists what they get, because "the
gateway can read it" is exactly what a user choosing a path needs to know.
``box-seizure`` and ``box-logs`` are your own box: the sender's for a sent
message, the recipient's for a received one.
"""

from __future__ import annotations

from threat_model.situation import (
    BOX_MESSAGE_ID,
    DATE_FIELD,
    GATEWAY_MESSAGE_ID,
    OUTER_DATE_FIELD,
    Row,
    Situation,
    content,
    encrypted,
    hidden,
    visible,
)
from threat_model.vocabulary import Cell, Item

OWN_IP = "its own network address"
PHYSICAL = (
    "a seizure is physical: whoever took the machine knows where it ran and over which connection"
)


def recipient_box(s: Situation) -> Row:
    if s.gateway:
        return _clearnet_recipient(s)
    arrived = "it also sees when the message arrived"
    if s.inbound:
        sender = visible(
            "as the clearnet sender's provider put it in MAIL FROM and From (the gateway checks "
            "SPF and DKIM)"
        )
        sender_ip = visible(
            "the sender's provider may have recorded the client's address in a Received field "
            "(many do; some large ones leave it out), and it arrives with the message"
        )
        reads = visible("the gateway sealed it to this box, which opens it: it is for this box")
    elif s.plain_peer and not s.sent:
        sender = visible(
            "as the sending server claims it: an unsealed message is not verified (the Maildir "
            "copy is marked 'onionmail=none')"
        )
        sender_ip = visible(
            "the sending server may have written its client's address into a Received field, "
            "and it arrives with the message (many servers do)"
        )
        reads = visible("it receives the message in clear: it is for this box")
    elif s.plain_peer:
        sender = visible("from MAIL FROM and From, unverified: a plain server cannot check a seal")
        sender_ip = hidden(
            "the sending box reached the onion through Tor and wrote no Received field"
        )
        reads = visible(
            "a plain SMTP server receives and stores the message in clear; it may be a "
            "provider's server holding the mail of many users"
        )
    else:
        sender = visible(
            "the seal proves it: the envelope opens only with the key the sender's onion names"
        )
        sender_ip = hidden(
            "the sender reached the onion through Tor, and the sending box wrote no Received "
            "or X-Originating-IP field (trace fields are always removed)"
        )
        reads = visible("it opens the seal: the message is for it")
    if s.box_sends:
        send_time = visible(f"{DATE_FIELD}; {arrived}")
        message_id = hidden(BOX_MESSAGE_ID)
    else:
        send_time = visible(f"the Date field as the sender's client wrote it; {arrived}")
        message_id = visible(
            "the sending software chose the Message-ID, and some put the machine's or the "
            "provider's host name in it"
        )
    return {
        Item.SENDER_ADDRESS: sender,
        Item.RECIPIENT_ADDRESS: visible("its own address, and the other recipients it hosts"),
        Item.SENDER_IP: sender_ip,
        Item.RECIPIENT_IP: visible(OWN_IP),
        **content(reads),
        Item.SIZE: visible("the exact size of the message it holds"),
        Item.SEND_TIME: send_time,
        Item.RELATION: visible("it knows who wrote to it"),
        Item.CLIENT_FINGERPRINT: s.fingerprint(
            visible("the client fields arrive as the client wrote them")
        ),
        Item.MESSAGE_ID_HOST: message_id,
    }


def _clearnet_recipient(s: Situation) -> Row:
    decrypt = " after decrypting it with their OpenPGP key" if s.openpgp else ""
    return {
        Item.SENDER_ADDRESS: visible("the box's alias at the gateway, which rewrites the sender"),
        Item.RECIPIENT_ADDRESS: visible("their own address"),
        Item.SENDER_IP: hidden(
            "they see the gateway's address in the Received fields, never the box's"
        ),
        Item.RECIPIENT_IP: visible("their own network address"),
        **content(visible(f"the recipient reads the message{decrypt}")),
        Item.SIZE: visible("the exact size of the message they hold"),
        Item.SEND_TIME: visible(f"{DATE_FIELD}; they also see when it arrived"),
        Item.RELATION: visible("they know who wrote to them"),
        Item.CLIENT_FINGERPRINT: s.fingerprint(
            visible("the client fields arrive as the client wrote them"), sees_openpgp=True
        ),
        Item.MESSAGE_ID_HOST: hidden(GATEWAY_MESSAGE_ID),
    }


def gateway_operator(s: Situation) -> Row:
    if s.inbound:
        return _inbound_gateway(s)
    clear = visible(
        "without end-to-end OpenPGP the gateway opens the box's seal and holds the message in "
        "clear to speak SMTP"
    )
    if s.openpgp:
        subject = encrypted(
            "protected headers (RFC 9788): the real Subject is inside the OpenPGP part and the "
            "outer one reads '...'"
        )
        body = encrypted(
            "the box encrypted the PGP/MIME body to the recipient's key before the gateway got it"
        )
        attachments = encrypted(
            "attachments, names and types included, are inside the OpenPGP part"
        )
    else:
        subject = body = attachments = clear
    outer = " (outer header)" if s.openpgp else ""
    date = OUTER_DATE_FIELD if s.openpgp else DATE_FIELD
    no_padding = "; OpenPGP does not pad, so the ciphertext is as long as the message"
    if not s.openpgp:
        no_padding = ""
    return {
        Item.SENDER_ADDRESS: visible(
            "the box authenticates to the gateway, which rewrites the sender to the box's alias: "
            "it knows both the onion and the alias"
        ),
        Item.RECIPIENT_ADDRESS: visible("it needs the address to find the MX and deliver"),
        Item.SENDER_IP: hidden("boxes reach the gateway over its onion: it never learns their IPs"),
        Item.RECIPIENT_IP: hidden(
            "it delivers to the recipient's provider, never to the recipient's own machine"
        ),
        Item.SUBJECT: subject,
        Item.BODY: body,
        Item.ATTACHMENT_NAMES: attachments,
        Item.SIZE: visible(f"it opens the box's seal and sees the exact length{no_padding}"),
        Item.SEND_TIME: visible(f"it sees when the message arrives, and {date}"),
        Item.RELATION: visible("it sees which alias, and so which onion, mails which address"),
        Item.CLIENT_FINGERPRINT: s.fingerprint(
            visible(f"they reach the gateway in the message's header{outer}"), sees_openpgp=True
        ),
        Item.MESSAGE_ID_HOST: hidden(GATEWAY_MESSAGE_ID),
    }


def _inbound_gateway(s: Situation) -> Row:
    clear = visible(
        "clearnet mail reaches it in clear (TLS ends at the gateway), so whoever runs it can "
        "read the message on arrival; it seals the message to the box at once under a "
        "one-time key, so what waits in its queue is ciphertext that nothing on its disk "
        "opens, the gateway's own key included"
    )
    return {
        Item.SENDER_ADDRESS: visible("MAIL FROM and From arrive from the sender's provider"),
        Item.RECIPIENT_ADDRESS: visible("it maps the recipient's alias to the box's onion"),
        Item.SENDER_IP: visible(
            "the sender's provider may have recorded the client's address in a Received field "
            "(many do; some large ones leave it out)"
        ),
        Item.RECIPIENT_IP: hidden(
            "it delivers to the box's onion through Tor and never learns the box's address"
        ),
        **content(clear),
        Item.SIZE: visible("it holds the message and knows its exact length"),
        Item.SEND_TIME: visible("it sees the Date field and when the message arrives"),
        Item.RELATION: visible(
            "it sees which clearnet sender mails which alias, and which box is behind it"
        ),
        Item.CLIENT_FINGERPRINT: visible("the sender's client fields arrive unscrubbed"),
        Item.MESSAGE_ID_HOST: visible(
            "the sender's Message-ID arrives as it was written; it often names the provider"
        ),
    }


def recipient_provider(s: Situation) -> Row:
    if s.openpgp:
        stored = encrypted(
            "it stores the PGP/MIME message as it arrived (the outer Subject reads '...'); "
            "only the recipient's key opens it"
        )
    else:
        stored = visible("it receives and stores the message in clear")
    outer = " (outer header)" if s.openpgp else ""
    return {
        Item.SENDER_ADDRESS: visible("MAIL FROM and From name the box's alias at the gateway"),
        Item.RECIPIENT_ADDRESS: visible("it is its customer's address"),
        Item.SENDER_IP: hidden("it receives from the gateway; the box's address never reaches it"),
        Item.RECIPIENT_IP: visible("the recipient's mail client connects to it to read mail"),
        **content(stored),
        Item.SIZE: visible(
            "it holds the message" + (", and OpenPGP does not pad" if s.openpgp else "")
        ),
        Item.SEND_TIME: visible(
            f"it sees when the message arrives, and {OUTER_DATE_FIELD if s.openpgp else DATE_FIELD}"
        ),
        Item.RELATION: visible("it sees which alias mails its customer"),
        Item.CLIENT_FINGERPRINT: s.fingerprint(
            visible(f"they arrive in the message's header{outer}"), sees_openpgp=True
        ),
        Item.MESSAGE_ID_HOST: hidden(GATEWAY_MESSAGE_ID),
    }


def sender_provider(s: Situation) -> Row:
    if not s.inbound and s.sent:
        own = hidden(
            "on a sent message the sending server is this box itself: see box-seizure and box-logs"
        )
        return {item: own for item in Item}
    if s.inbound:
        server = "the clearnet sender's provider"
        onward = "it hands the mail to the gateway's MX; the box is behind the gateway and Tor"
    else:
        server = "the plain onion server the message came from (possibly a provider's)"
        onward = "it reaches the box's onion through Tor"
    holds = visible(f"{server} holds the message in clear to send it")
    return {
        Item.SENDER_ADDRESS: visible(f"{server} sends for its user: MAIL FROM and From"),
        Item.RECIPIENT_ADDRESS: visible("it needs it to deliver"),
        Item.SENDER_IP: visible("its user's client connects to it to send"),
        Item.RECIPIENT_IP: hidden(onward),
        **content(holds),
        Item.SIZE: visible("it holds the message and knows its exact length"),
        Item.SEND_TIME: visible("it receives the message the moment it is sent"),
        Item.RELATION: visible("it sees which of its users writes to whom"),
        Item.CLIENT_FINGERPRINT: visible(
            "its user's client fields, and the client's EHLO name, reach it"
        ),
        Item.MESSAGE_ID_HOST: visible("it sees the Message-ID, and often writes it"),
    }


def box_seizure(s: Situation) -> Row:
    if s.sent:
        return _seized_sender(s)
    maildir = (
        "the Maildir keeps delivered mail in clear for your mail client; a passphrase protects "
        "the key, not the Maildir"
    )
    if s.box_sends:
        sender_ip = hidden(
            "the message came through Tor; nothing stored names the sender's address"
        )
        message_id = hidden(BOX_MESSAGE_ID)
    else:
        sender_ip = visible(
            "a Received field the sending server wrote, if it wrote one (many do), is stored "
            "with the message"
        )
        message_id = visible("the sender's Message-ID is stored as it arrived")
    return {
        Item.SENDER_ADDRESS: visible(maildir),
        Item.RECIPIENT_ADDRESS: visible(maildir),
        Item.SENDER_IP: sender_ip,
        Item.RECIPIENT_IP: visible(PHYSICAL),
        **content(visible(maildir)),
        Item.SIZE: visible("the Maildir file is the message itself"),
        Item.SEND_TIME: visible("the Date field and the Maildir file's times"),
        Item.RELATION: visible(maildir),
        Item.CLIENT_FINGERPRINT: s.fingerprint(visible("they are stored with the message")),
        Item.MESSAGE_ID_HOST: message_id,
    }


SENT_COPY = (
    "the box filed a copy in your .Sent folder, in clear for your mail clients like "
    "received mail ([submission] keep_sent); a passphrase protects the key, not the Maildir"
)


def _seized_sender(s: Situation) -> Row:
    if s.config.sent_copy:
        return _seized_sent_copy(s)
    waits = (
        "while the message waits in the queue (until delivered: seconds, or longer under a "
        "delay or batch policy or while the peer is offline)"
    )
    not_counted = (
        "; not counted: a bounce report, or a copy your mail client files in the box's Maildir"
    )
    if s.config.key_passphrase:
        queue = encrypted(
            "the queued message is encrypted with a key derived from the identity seed, which "
            "only the passphrase opens (argon2id); once delivered the box keeps no copy"
            + not_counted
        )
    else:
        queue = visible(
            f"{waits} it can be read: the queue's key derives from the identity seed, which "
            f"lies unencrypted on the same disk (a passphrase would prevent this){not_counted}"
        )
    if not s.config.key_passphrase:
        recipient = relation = queue
    elif s.onion:
        recipient = relation = visible(
            f"{waits}, the clear header of its queue file names the destination onion (the "
            f"local part is inside the encrypted part)"
        )
    else:
        recipient = encrypted(
            "the queue file's clear header names only the gateway's onion; the recipient is "
            "inside the encrypted part"
        )
        relation = recipient
        if s.openpgp:
            relation = visible(
                "to encrypt to the recipient the box keeps their OpenPGP key, and a key names "
                "its owner's address (it came with their mail, which the Maildir keeps in clear)"
            )
    return {
        Item.SENDER_ADDRESS: visible(
            "your own address: the config names your local parts, and the mail in your Maildir "
            "names your onion"
        ),
        Item.RECIPIENT_ADDRESS: recipient,
        Item.SENDER_IP: visible(PHYSICAL),
        Item.RECIPIENT_IP: hidden(
            "the box never learns it: it knew only "
            + ("the gateway's onion" if s.gateway else "an onion")
        ),
        **content(queue),
        Item.SIZE: visible(
            f"{waits}, the queue file is not padded: it is as long as the message plus a few "
            f"dozen bytes"
        ),
        Item.SEND_TIME: visible(
            f"{waits}, the queue file's time and the creation time in its clear header tell "
            f"when it was submitted"
        ),
        Item.RELATION: relation,
        Item.CLIENT_FINGERPRINT: s.fingerprint(
            Cell(queue.visibility, f"they are in the queued message: {queue.reason}")
        ),
        Item.MESSAGE_ID_HOST: hidden(
            "it names your own onion: the box regenerated it as <random>@<your onion>"
        ),
    }


def _seized_sent_copy(s: Situation) -> Row:
    copy = visible(SENT_COPY)
    return {
        Item.SENDER_ADDRESS: copy,
        Item.RECIPIENT_ADDRESS: copy,
        Item.SENDER_IP: visible(PHYSICAL),
        Item.RECIPIENT_IP: hidden(
            "the box never learns it: it knew only "
            + ("the gateway's onion" if s.gateway else "an onion")
        ),
        **content(copy),
        Item.SIZE: visible("the copy in .Sent is the message itself"),
        Item.SEND_TIME: visible("the copy's Date field and its file's times"),
        Item.RELATION: copy,
        Item.CLIENT_FINGERPRINT: s.fingerprint(
            visible("they would be in the copy (it is the message as submitted)")
        ),
        Item.MESSAGE_ID_HOST: hidden(
            "it names your own onion: the box regenerated it as <random>@<your onion>"
        ),
    }


def box_logs(s: Situation) -> Row:
    info = (
        "at INFO and above the box logs queue ids, counts and SMTP codes; error texts are "
        "redacted of addresses and onion hosts, and the SMTP library's session log is held at "
        "ERROR"
    )
    when = "queued and delivered" if s.sent else "stored in the Maildir"
    return {
        Item.SENDER_ADDRESS: hidden(info),
        Item.RECIPIENT_ADDRESS: hidden(info),
        Item.SENDER_IP: hidden("the box learns no peer's network address, so it logs none"),
        Item.RECIPIENT_IP: hidden("the box learns no peer's network address, so it logs none"),
        **content(hidden("never logged")),
        Item.SIZE: hidden("not logged (a delivery's duration is, which hints only at huge sizes)"),
        Item.SEND_TIME: visible(
            f"INFO lines are timestamped: when the message was {when} (the default level, "
            f"WARNING, logs failures only; DEBUG, with --verbose, is not covered here)"
        ),
        Item.RELATION: hidden("no peer is named at INFO"),
        Item.CLIENT_FINGERPRINT: hidden("the client's EHLO name and fields are not logged"),
        Item.MESSAGE_ID_HOST: hidden("Message-IDs are not logged"),
    }
