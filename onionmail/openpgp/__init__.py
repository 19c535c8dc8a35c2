"""OpenPGP for clearnet correspondents: keys, PGP/MIME, Autocrypt, the box's use of them.

``keys`` (generation and the box's key ring), ``pgp_mime`` (RFC 3156),
``autocrypt`` (the peer keys learned from headers), ``clearnet`` (encrypting
outgoing and decrypting incoming gateway mail). Imports :mod:`onionmail.core`,
:mod:`onionmail.config`, :mod:`onionmail.seal` and :mod:`onionmail.message`.
"""
