"""Internet messages as the box reads and rewrites them.

``rfc5322`` (a byte-exact field list), ``scrub`` (what submission removes
and rewrites), ``dsn`` (bounce reports), ``header_claims`` (what a message's
own fields claim: onion senders, authentication results). Imports
:mod:`onionmail.core`, :mod:`onionmail.config` and :mod:`onionmail.seal`.
"""
