"""The owner's devices: a private Dovecot and a client-authorized onion (docs/devices.md)."""
