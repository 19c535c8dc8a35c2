from hypothesis import given
from hypothesis import strategies as st

from onionmail.identity import Identity
from onionmail.log_redaction import redact


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
