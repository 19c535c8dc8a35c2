"""The SMTP engine: the server both listeners run and the client that delivers.

``protocol`` (the per-connection state machine with its limits), ``data``
(DATA and BDAT parsing), ``server`` (the handler base and its checks),
``client`` (a pipelined session to a peer), ``quickack`` (TCP ACK timing
over tor). Imports :mod:`onionmail.core` and :mod:`onionmail.seal`.
"""
