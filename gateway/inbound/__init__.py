"""Clearnet mail coming in: the gateway's MX and the checks it records.

``mx`` (the SMTP server of the gateway's domain: aliases, relaying, rate
limits, sealing each message to its box on arrival), ``auth`` (the
``Authentication-Results`` verdict), with ``spf``, ``dkim`` and ``dmarc``
its checks. Imports the gateway's top-level modules (``config``, ``dns``,
``errors``, ``registry``) and :mod:`onionmail`, never :mod:`gateway.outbound`.
"""
