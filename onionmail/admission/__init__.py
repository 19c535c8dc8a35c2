"""Who may write to the box: contacts, the Requests folder, stamps, per-sender limits.

``gate`` decides (at RCPT and when a message is stored), ``senders`` remembers
(known, blocked, counts, in SQLite), ``stamps`` is the proof of work a stranger
pays, ``requests`` is what the owner does with a request (accept, block,
ignore). Imports :mod:`onionmail.core`, :mod:`onionmail.config`,
:mod:`onionmail.seal` and :mod:`onionmail.store`.
"""

REQUESTS = ".Requests"
"""The Maildir++ folder of strangers' mail (``Requests`` in IMAP, the TUI and neomutt)."""
