"""The box's identity and the sealed envelope that carries mail between boxes.

``identity`` (the onion key and the X25519 key derived from it, saved
encrypted or not), ``envelope`` (seal and open, bound to a session
challenge) and ``padding`` (Padmé buckets). Imports only :mod:`onionmail.core`.
"""
