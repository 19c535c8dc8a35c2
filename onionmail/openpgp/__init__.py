"""OpenPGP for clearnet correspondents: keys, PGP/MIME, Autocrypt, the box's use of them.

``keys`` (generation and the box's key ring), ``pgp_mime`` (RFC 3156),
``autocrypt`` (the peer keys learned from headers), ``clearnet`` (encrypting
outgoing and decrypting incoming gateway mail). Imports :mod:`onionmail.core`,
:mod:`onionmail.config`, :mod:`onionmail.seal` and :mod:`onionmail.message`.
"""

STATUS_FIELD = "Onionmail-OpenPGP"
"""The field that says what the box's OpenPGP step did with a gateway-relayed message
(``pgp_mime`` writes it, the TUI reads it): here, so that reading it loads no pgpy."""
