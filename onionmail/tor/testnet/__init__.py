"""A private Tor network on this machine: authorities, relays, keys, health checks.

``network`` starts and stops it, ``nodes`` writes each node's torrc, ``keys``
makes the authorities' keys, ``checks`` says when it is usable. Imports only
:mod:`onionmail.core`.
"""
