import io
import logging

from hypothesis import given
from hypothesis import strategies as st

from onionmail.core.redaction import RedactingFormatter, redact
from onionmail.seal.identity import Identity


def test_addresses_and_onions_are_removed() -> None:
    onion = Identity.generate().onion_address
    text = f"peer answered 550 5.1.1 <bob@{onion}>: no such user; host {onion} said so"
    out = redact(text)
    assert onion not in out and "bob" not in out
    assert out == "peer answered 550 5.1.1 <<address>>: no such user; host <onion> said so"


def test_plain_text_is_kept() -> None:
    assert redact("tor: general failure (SOCKS 0x01)") == "tor: general failure (SOCKS 0x01)"


@given(st.from_regex(r"[a-z0-9.]{1,20}", fullmatch=True), st.text(max_size=40))
def test_no_address_survives(local: str, noise: str) -> None:
    address = f"{local}@example.org"
    assert address not in redact(f"{noise} {address} {noise}")


def test_the_filter_redacts_every_record_at_debug_message_and_traceback() -> None:
    onion = Identity.generate().onion_address
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter("%(levelname)s %(name)s: %(message)s"))
    plain = logging.StreamHandler(io.StringIO())  # another handler sees the record unchanged
    logger = logging.getLogger("onionmail.test-redaction")
    logger.addHandler(handler)
    logger.addHandler(plain)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    mx, mx_ip = "mx1.mail.example.co.uk", "2001:db8::25"
    try:
        logger.debug("registration for alias %s refused", "walrus@gw.example.org")
        logger.debug("MX %s [%s] said: %s", "mx1.mail.example.co.uk", "203.0.113.7", "220 hi")
        logger.info("delivered to %s", f"bob@{onion}")
        try:
            raise ConnectionError(f"connect to {mx} ({mx_ip}) for {onion}")
        except ConnectionError:
            logger.debug("attempt failed", exc_info=True)
    finally:
        logger.removeHandler(handler)
        logger.removeHandler(plain)
    out = stream.getvalue()
    assert "walrus@gw.example.org" in plain.stream.getvalue()  # the record itself untouched
    for secret in (
        "walrus",
        "gw.example.org",
        "mx1.mail",
        "example.co.uk",
        "203.0.113.7",
        "2001:db8::25",
        onion,
    ):
        assert secret not in out, secret
    assert "registration for alias <address> refused" in out
    assert "MX <host> [<ip>] said: 220 hi" in out
    assert "ConnectionError: connect to <host> (<ip>) for <onion>" in out
    assert "logger.debug" not in out or "test_log_redaction.py" in out  # code lines stay code
    assert "Traceback (most recent call last)" in out


def test_file_names_and_numbers_are_not_taken_for_hosts() -> None:
    text = "read onionmail.toml and smtp_protocol.py in 1.5 s (python 3.11.7, tor 0.4.8.16)"
    assert redact(text) == text
