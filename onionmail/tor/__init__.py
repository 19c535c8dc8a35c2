"""tor, as the box and the gateway use it: control, SOCKS, and a private network.

``control`` launches or attaches to tor and publishes the onion; ``socks``
opens isolated streams; :mod:`onionmail.tor.testnet` runs a private Tor
network for the demo and the tests. Imports :mod:`onionmail.core`,
:mod:`onionmail.config` and :mod:`onionmail.seal`.
"""
