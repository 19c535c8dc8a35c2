"""The box's side of the gateway protocol: registration and the sealed inner envelope.

``protocol`` (the wire format both sides share) and ``client`` (a box
registering an alias with a gateway). The gateway itself is the top-level
``gateway`` package. Imports every onionmail package below :mod:`onionmail.box`.
"""
