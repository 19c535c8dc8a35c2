"""The clearnet gateway: a separate process that relays between boxes (over Tor) and SMTP.

It imports :mod:`onionmail` for shared crypto and wire code only; the box never
imports it (the box does no clearnet DNS at all).
"""
