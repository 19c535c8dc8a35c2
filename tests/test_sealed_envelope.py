"""The sealed envelope: sealing, opening, binding to the SMTP session, transfer encoding.

One named test per attack: forged sender, wrong recipient, reflection,
replay into another session, redirection, truncation and bit flips, and
fuzzing of every parser (the clear envelope, the plaintext behind a valid
MAC, the SMTP encoding, the EHLO keyword).
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import struct

import nacl.public
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from onionmail.core.errors import (
    EnvelopeError,
    EnvelopeMismatchError,
    OnionMailError,
    ReplayError,
    SealError,
)
from onionmail.seal.envelope import (
    ANONYMOUS_HEADER,
    ENVELOPE_OVERHEAD,
    ENVELOPE_VERSION,
    MAX_ENVELOPE_AGE,
    MAX_ENVELOPE_SIZE,
    SEAL_KEYWORD,
    SealedContent,
    decode_from_smtp,
    encode_for_smtp,
    format_seal_keyword,
    open_anonymous,
    open_envelope,
    parse_seal_keyword_params,
    seal,
    seal_anonymously,
    verify_binding,
)
from onionmail.seal.identity import Identity
from onionmail.seal.padding import PADDING_FLOOR, pad, padded_length

FUZZ_EXAMPLES = int(os.environ.get("ONIONMAIL_FUZZ_EXAMPLES", "0"))
"""Examples per property test in a long fuzz session (0: each test's short default)."""

ALICE = Identity.generate()
BOB = Identity.generate()
MALLORY = Identity.generate()
NOW = 1_700_000_000
CHALLENGE = bytes(range(16))


def alice_addr() -> str:
    return f"alice@{ALICE.onion_address}"


def bob_addr(local: str = "bob") -> str:
    return f"{local}@{BOB.onion_address}"


def make_content(**changes: object) -> SealedContent:
    """Valid content from Alice to two of Bob's mailboxes, with ``changes`` applied."""
    fields: dict[str, object] = {
        "envelope_id": b"\x01" * 16,
        "created": NOW,
        "session_challenge": CHALLENGE,
        "mail_from": alice_addr(),
        "recipients": (bob_addr(), bob_addr("carol")),
        "message": b"Subject: hi\r\n\r\nhello\r\n",
    }
    fields.update(changes)
    return SealedContent(**fields)  # type: ignore[arg-type]


def seal_to_bob(content: SealedContent | None = None) -> bytes:
    return seal(content or make_content(), sender=ALICE, recipient_onion=BOB.onion_address)


def open_at_bob(envelope: bytes, sender_onion: str | None = None) -> SealedContent:
    return open_envelope(envelope, recipient=BOB, sender_onion=sender_onion or ALICE.onion_address)


def box_raw_plaintext(plaintext: bytes) -> bytes:
    """A validly boxed envelope (Alice to Bob) around arbitrary plaintext: fuzzes the parser."""
    box = nacl.public.Box(ALICE.x25519_private_key(), BOB.x25519_public_key())
    nonce = secrets.token_bytes(24)
    return b"OMSE" + bytes([ENVELOPE_VERSION]) + nonce + box.encrypt(plaintext, nonce).ciphertext


def inner_prefix() -> bytes:
    """The fixed start of a valid plaintext for Bob."""
    return b"OMSE" + bytes([ENVELOPE_VERSION]) + bytes(BOB.x25519_public_key())


def encode_fields(
    mail_from: bytes = b"a@b", recipients: tuple[bytes, ...] = (), message: bytes = b"m"
) -> bytes:
    parts = [b"\x02" * 16, struct.pack(">Q", NOW), CHALLENGE]
    parts.append(struct.pack(">H", len(mail_from)) + mail_from)
    parts.append(struct.pack(">H", len(recipients)))
    parts.extend(struct.pack(">H", len(r)) + r for r in recipients)
    parts.append(struct.pack(">I", len(message)) + message)
    return b"".join(parts)


# --- sealing and opening ------------------------------------------------------


def test_roundtrip() -> None:
    content = make_content()
    assert open_at_bob(seal_to_bob(content)) == content


def test_envelope_layout() -> None:
    envelope = seal_to_bob()
    assert envelope.startswith(b"OMSE\x01")
    assert len(envelope) == ENVELOPE_OVERHEAD + PADDING_FLOOR


def test_each_seal_uses_a_fresh_nonce() -> None:
    content = make_content()
    assert seal_to_bob(content) != seal_to_bob(content)


def test_forged_sender_is_refused() -> None:
    """Mallory seals to Bob and claims to be Alice: the box does not open."""
    forged = seal(make_content(), sender=MALLORY, recipient_onion=BOB.onion_address)
    with pytest.raises(SealError):
        open_at_bob(forged, sender_onion=ALICE.onion_address)


def test_wrong_recipient_cannot_open() -> None:
    envelope = seal_to_bob()
    with pytest.raises(SealError):
        open_envelope(envelope, recipient=MALLORY, sender_onion=ALICE.onion_address)


def test_reflection_to_the_sender_is_refused() -> None:
    """Alice's envelope to Bob, replayed to Alice as if from Bob: same shared key, refused."""
    envelope = seal_to_bob()
    with pytest.raises(SealError, match="another box"):
        open_envelope(envelope, recipient=ALICE, sender_onion=BOB.onion_address)


def test_every_truncation_is_refused() -> None:
    envelope = seal_to_bob()
    for end in range(len(envelope)):
        with pytest.raises(EnvelopeError):
            open_at_bob(envelope[:end])


def test_appended_bytes_are_refused() -> None:
    with pytest.raises(SealError):
        open_at_bob(seal_to_bob() + b"\x00")


@pytest.mark.parametrize("position", [0, 3, 4, 5, 28, 29, 30, 100, 4000, -1])
def test_bit_flips_are_refused(position: int) -> None:
    envelope = bytearray(seal_to_bob())
    envelope[position] ^= 0x01
    with pytest.raises(EnvelopeError):
        open_at_bob(bytes(envelope))


def test_wrong_magic_and_version() -> None:
    envelope = seal_to_bob()
    with pytest.raises(EnvelopeError, match="magic"):
        open_at_bob(b"XMSE" + envelope[4:])
    with pytest.raises(EnvelopeError, match="version 2"):
        open_at_bob(envelope[:4] + b"\x02" + envelope[5:])


def test_over_long_envelope_is_refused_before_decrypting() -> None:
    with pytest.raises(EnvelopeError, match="exceeds"):
        open_at_bob(b"OMSE\x01" + bytes(MAX_ENVELOPE_SIZE))


def test_bad_sender_onion_is_an_address_error() -> None:
    with pytest.raises(OnionMailError):
        open_at_bob(seal_to_bob(), sender_onion="example.com")


# --- the parser behind a valid MAC ---------------------------------------------


def test_valid_raw_plaintext_parses() -> None:
    content = open_at_bob(box_raw_plaintext(inner_prefix() + encode_fields(recipients=(b"x@y",))))
    assert content.recipients == ("x@y",)
    assert content.message == b"m"


def test_inner_header_must_match() -> None:
    plaintext = b"OMSE\x02" + inner_prefix()[5:] + encode_fields()
    with pytest.raises(EnvelopeError, match="header"):
        open_at_bob(box_raw_plaintext(plaintext))


def test_message_length_past_the_end_is_refused() -> None:
    plaintext = inner_prefix() + encode_fields()[:-1]
    with pytest.raises(EnvelopeError, match="truncated"):
        open_at_bob(box_raw_plaintext(plaintext))


def test_non_zero_padding_is_refused() -> None:
    plaintext = inner_prefix() + encode_fields() + b"\x00\x00\x01"
    with pytest.raises(EnvelopeError, match="padding"):
        open_at_bob(box_raw_plaintext(plaintext))


def test_non_utf8_address_is_refused() -> None:
    plaintext = inner_prefix() + encode_fields(mail_from=b"\xff@x")
    with pytest.raises(EnvelopeError, match="UTF-8"):
        open_at_bob(box_raw_plaintext(plaintext))


def test_short_padding_is_accepted() -> None:
    """The bucket is the sender's policy; the receiver only insists the padding is zero."""
    content = open_at_bob(box_raw_plaintext(inner_prefix() + encode_fields() + bytes(3)))
    assert content.mail_from == "a@b"


# --- content validation ---------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"envelope_id": b"short"},
        {"session_challenge": b"\x00" * 17},
        {"created": -1},
        {"created": 2**64},
        {"created": 1.5},
        {"created": True},
        {"recipients": ["x@y"]},
        {"mail_from": "\ud800@x"},
    ],
)
def test_invalid_content_is_refused(changes: dict[str, object]) -> None:
    with pytest.raises(EnvelopeError):
        seal_to_bob(make_content(**changes))


def test_repr_hides_addresses_and_message() -> None:
    text = repr(make_content(message=b"secret body"))
    assert "alice" not in text and "secret" not in text and ALICE.onion_address not in text


# --- padding of the envelope -------------------------------------------------------


def test_envelope_length_is_a_padme_bucket() -> None:
    for size in (0, 5_000, 100_000, 1_000_000):
        envelope = seal_to_bob(make_content(message=b"x" * size))
        inner = len(envelope) - ENVELOPE_OVERHEAD
        assert inner == padded_length(inner) >= size


def test_messages_in_one_bucket_have_equal_lengths() -> None:
    short = seal_to_bob(make_content(message=b"a"))
    longer = seal_to_bob(make_content(message=b"a" * 3_000))
    assert len(short) == len(longer)
    # Above the floor, with ~300 bytes of sealed addresses and fields added, both land
    # in the bucket (20 480, 21 504]; 21 500 bytes of message spill into the next one.
    first = seal_to_bob(make_content(message=b"b" * 20_600))
    second = seal_to_bob(make_content(message=b"b" * 21_100))
    assert len(first) == len(second) == ENVELOPE_OVERHEAD + 21_504
    assert len(seal_to_bob(make_content(message=b"b" * 21_500))) == ENVELOPE_OVERHEAD + 22_528


# --- binding to the SMTP session ---------------------------------------------------


def bind(content: SealedContent, **changes: object) -> None:
    args: dict[str, object] = {
        "mail_from": content.mail_from,
        "recipients": list(content.recipients),
        "session_challenge": CHALLENGE,
        "now": float(NOW),
    }
    args.update(changes)
    verify_binding(content, **args)  # type: ignore[arg-type]


def test_binding_accepts_the_same_transaction() -> None:
    content = make_content()
    bind(content)
    bind(content, mail_from=content.mail_from.upper())
    bind(content, recipients=[r.upper() for r in reversed(content.recipients)])


def test_binding_refuses_another_sender() -> None:
    with pytest.raises(EnvelopeMismatchError):
        bind(make_content(), mail_from=f"mallory@{ALICE.onion_address}")


@pytest.mark.parametrize(
    "recipients",
    [[], [bob_addr()], [bob_addr(), bob_addr("carol"), bob_addr("dave")], [bob_addr("dave")]],
)
def test_binding_refuses_redirection(recipients: list[str]) -> None:
    with pytest.raises(EnvelopeMismatchError):
        bind(make_content(), recipients=recipients)


def test_binding_refuses_a_replay_into_another_session() -> None:
    with pytest.raises(EnvelopeMismatchError, match="challenge"):
        bind(make_content(), session_challenge=secrets.token_bytes(16))
    with pytest.raises(EnvelopeMismatchError):
        bind(make_content(), session_challenge=b"")


def test_binding_refuses_stale_and_future_envelopes() -> None:
    content = make_content()
    bind(content, now=float(NOW + MAX_ENVELOPE_AGE))
    bind(content, now=float(NOW - 600))
    with pytest.raises(ReplayError, match="stale"):
        bind(content, now=NOW + MAX_ENVELOPE_AGE + 1.0)
    with pytest.raises(ReplayError, match="future"):
        bind(content, now=NOW - 601.0)
    with pytest.raises(ReplayError):
        bind(content, now=float(NOW + 3600), max_age=3599)


# --- SMTP transfer encoding ---------------------------------------------------------


def test_smtp_encoding_roundtrip_and_shape() -> None:
    envelope = seal_to_bob()
    data = encode_for_smtp(envelope)
    assert data.endswith(b"\r\n")
    lines = data.split(b"\r\n")[:-1]
    assert all(len(line) == 76 for line in lines[:-1])
    assert 0 < len(lines[-1]) <= 76
    assert not any(line.startswith(b".") for line in lines)
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert decode_from_smtp(data) == envelope
    assert data.startswith(b"T01TR")  # what the inbound server sniffs for


@pytest.mark.parametrize(
    "transform",
    [
        lambda d: d.replace(b"\r\n", b"\n"),
        lambda d: d[:-2],
        lambda d: d[:-2] + b"\n",
    ],
)
def test_smtp_decoding_tolerates_line_ends(transform: object) -> None:
    envelope = seal_to_bob()
    data = transform(encode_for_smtp(envelope))  # type: ignore[operator]
    assert decode_from_smtp(data) == envelope


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\r\n",
        b"T01TR\r\n\r\nAAAA\r\n",
        b"T01T R\r\n",
        b"T01TRQ==\r\nAAAA\r\n",
        b"T01T*Q==\r\n",
        b"Subject: plain mail\r\n\r\nhello\r\n",
        b"AAA\r\n",
    ],
)
def test_smtp_decoding_is_strict(data: bytes) -> None:
    with pytest.raises(EnvelopeError):
        decode_from_smtp(data)


# --- ESMTP keyword ---------------------------------------------------------------------


def test_keyword_roundtrip() -> None:
    challenge = secrets.token_bytes(16)
    line = format_seal_keyword(challenge)
    assert re.fullmatch(rf"{SEAL_KEYWORD} v1 [A-Za-z0-9_-]{{22}}", line)
    params = line.split(" ", 1)[1]
    assert parse_seal_keyword_params(params) == challenge
    assert parse_seal_keyword_params(f"  {params} ") == challenge


def test_keyword_uses_base64url_without_padding() -> None:
    line = format_seal_keyword(b"\xff" * 16)
    assert line.endswith(" " + base64.urlsafe_b64encode(b"\xff" * 16).decode().rstrip("="))
    assert "=" not in line and "+" not in line and "/" not in line


@pytest.mark.parametrize(
    "params",
    [
        "",
        "v1",
        "v2 AAAAAAAAAAAAAAAAAAAAAA",
        "V1 AAAAAAAAAAAAAAAAAAAAAA",
        "v1 AAAAAAAAAAAAAAAAAAAAAA extra",
        "v1 AAAAAAAAAAAAAAAAAAAAA",
        "v1 AAAAAAAAAAAAAAAAAAAAAAAA",
        "v1 AAAAAAAAAAAAAAAAAAAAAA==",
        "v1 AAAAAAAAAAAAAAAAAAAA+/",
        "v1 AAAAAAAAAAAAAAAAAAAAA!",
        "v1 AAAAAAAAAAAAAAAAAAAAAB",  # non-canonical: trailing bits set
        "v1 AAAAAAAAAAAAAAAAAAAAAé",
    ],
)
def test_keyword_parse_refuses_malformed(params: str) -> None:
    with pytest.raises(EnvelopeError):
        parse_seal_keyword_params(params)


def test_keyword_format_refuses_a_wrong_size_challenge() -> None:
    with pytest.raises(EnvelopeError):
        format_seal_keyword(b"\x00" * 15)


# --- property tests ----------------------------------------------------------------------

addresses = st.text(max_size=80)
contents = st.builds(
    SealedContent,
    envelope_id=st.binary(min_size=16, max_size=16),
    created=st.integers(min_value=0, max_value=2**64 - 1),
    session_challenge=st.binary(min_size=16, max_size=16),
    mail_from=addresses,
    recipients=st.lists(addresses, max_size=5).map(tuple),
    message=st.binary(max_size=10_000),
)


@given(contents)
@settings(max_examples=FUZZ_EXAMPLES or 50, deadline=None)
def test_roundtrip_any_content(content: SealedContent) -> None:
    envelope = seal_to_bob(content)
    assert open_at_bob(decode_from_smtp(encode_for_smtp(envelope))) == content


@given(st.binary(max_size=6000))
@settings(max_examples=FUZZ_EXAMPLES or 100, deadline=None)
def test_open_arbitrary_bytes_raises_only_envelope_errors(data: bytes) -> None:
    for candidate in (data, b"OMSE\x01" + data):
        with pytest.raises(EnvelopeError):
            open_at_bob(candidate)


@given(st.binary(max_size=400), st.booleans())
@settings(max_examples=FUZZ_EXAMPLES or 100, deadline=None)
def test_parser_behind_a_valid_mac_raises_only_envelope_errors(
    data: bytes, with_prefix: bool
) -> None:
    plaintext = (inner_prefix() + data) if with_prefix else data
    try:
        open_at_bob(box_raw_plaintext(plaintext))
    except EnvelopeError:
        pass


@given(st.lists(st.binary(max_size=100), max_size=6), st.binary(max_size=50))
@settings(max_examples=FUZZ_EXAMPLES or 100, deadline=None)
def test_parser_on_structured_garbage_raises_only_envelope_errors(
    fields: list[bytes], tail: bytes
) -> None:
    plaintext = inner_prefix() + encode_fields(recipients=tuple(fields)) + tail
    try:
        open_at_bob(box_raw_plaintext(plaintext))
    except EnvelopeError:
        pass


@given(st.binary(max_size=500))
@settings(max_examples=FUZZ_EXAMPLES or 100)
def test_decode_arbitrary_bytes_raises_only_envelope_errors(data: bytes) -> None:
    try:
        decode_from_smtp(data)
    except EnvelopeError:
        pass


@given(st.binary(max_size=2000))
@settings(max_examples=FUZZ_EXAMPLES or 100)
def test_smtp_encoding_roundtrips_any_bytes(data: bytes) -> None:
    if data:
        assert decode_from_smtp(encode_for_smtp(data)) == data


@given(st.text(max_size=60))
@settings(max_examples=FUZZ_EXAMPLES or 100)
def test_keyword_parse_arbitrary_text_raises_only_envelope_errors(params: str) -> None:
    try:
        parse_seal_keyword_params(params)
    except EnvelopeError:
        pass


@given(st.binary(min_size=16, max_size=16))
@settings(max_examples=FUZZ_EXAMPLES or 100)
def test_keyword_roundtrips_any_challenge(challenge: bytes) -> None:
    params = format_seal_keyword(challenge).split(" ", 1)[1]
    assert parse_seal_keyword_params(params) == challenge


@given(st.binary(min_size=1, max_size=600), st.integers(1, 40), st.data())
@settings(max_examples=FUZZ_EXAMPLES or 100)
def test_smtp_decoding_accepts_any_wrapping_and_line_ends(
    envelope: bytes, quads: int, data: st.DataObject
) -> None:
    text = base64.b64encode(envelope)
    lines = [text[i : i + 4 * quads] for i in range(0, len(text), 4 * quads)]
    ends = st.sampled_from([b"\r\n", b"\n"])
    wrapped = b"".join(line + data.draw(ends, label="line end") for line in lines)
    assert decode_from_smtp(wrapped) == envelope


@given(st.binary(max_size=300), st.data())
@settings(max_examples=FUZZ_EXAMPLES or 50, deadline=None)
def test_any_truncation_of_the_smtp_text_is_refused(message: bytes, data: st.DataObject) -> None:
    text = encode_for_smtp(seal_to_bob(make_content(message=message)))
    cut = data.draw(st.integers(0, len(text) - 3), label="cut")  # the last CRLF is optional
    with pytest.raises(EnvelopeError):
        open_at_bob(decode_from_smtp(text[:cut]))


LENGTH_FIELDS = {"sender": ">H", "count": ">H", "recipient": ">H", "message": ">I"}


@given(
    st.sampled_from(sorted(LENGTH_FIELDS)),
    st.integers(0, 2**32 - 1),
    st.binary(max_size=100),
)
@settings(max_examples=FUZZ_EXAMPLES or 100, deadline=None)
def test_lying_length_fields_raise_only_envelope_errors(
    which: str, lie: int, message: bytes
) -> None:
    sender, rcpt = alice_addr().encode(), bob_addr().encode()
    truth = {"sender": len(sender), "count": 1, "recipient": len(rcpt), "message": len(message)}
    fmt = LENGTH_FIELDS[which]
    lie %= 2 ** (8 * struct.calcsize(fmt))
    assume(lie != truth[which])
    lengths = {
        name: struct.pack(f, lie if name == which else truth[name])
        for name, f in LENGTH_FIELDS.items()
    }
    plaintext = b"".join(
        [
            inner_prefix(),
            b"\x02" * 16,
            struct.pack(">Q", NOW),
            CHALLENGE,
            lengths["sender"] + sender,
            lengths["count"] + lengths["recipient"] + rcpt,
            lengths["message"] + message,
        ]
    )
    try:
        content = open_at_bob(box_raw_plaintext(pad(plaintext)))
    except EnvelopeError:
        return
    assert (content.mail_from, content.recipients, content.message) != (
        alice_addr(),
        (bob_addr(),),
        message,
    )


def test_an_anonymous_seal_opens_only_for_its_recipient_and_refuses_damage() -> None:
    """The gateway's inner envelope: a one-time sender key, so the sealer cannot reopen it."""
    content = make_content()
    blob = seal_anonymously(content, recipient_onion=BOB.onion_address)
    assert open_anonymous(blob, recipient=BOB) == content
    for other in (ALICE, Identity.generate()):
        with pytest.raises(SealError):
            open_anonymous(blob, recipient=other)
    flipped = bytearray(blob)
    flipped[-1] ^= 1
    with pytest.raises(SealError):
        open_anonymous(bytes(flipped), recipient=BOB)
    for malformed in (blob[:3], b"OMSE" + blob[4:], blob[: len(ANONYMOUS_HEADER) + 10]):
        with pytest.raises(EnvelopeError):
            open_anonymous(malformed, recipient=BOB)
