"""Mail from boxes going out to the clearnet: the onion side to the recipient's MX.

``onion_side`` (the gateway's onion listener, where registered boxes hand
over mail), ``sender_rewrite`` and ``dkim_signing`` (the alias as sender,
signed for the gateway's domain), ``relay`` (the durable queue and its
agent), ``smtp`` (one delivery to an MX), ``tls_policy`` and ``mta_sts``
(TLS that cannot be stripped: DANE, MTA-STS). Imports the gateway's
top-level modules and :mod:`onionmail`, never :mod:`gateway.inbound`.
"""
