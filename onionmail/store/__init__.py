"""What the box keeps on disk: the outbound queue, Maildirs, the ledger, locks.

``queue`` (encrypted at rest, scanned in passes), ``maildir`` (fsync, then
rename), ``replay_cache`` (envelope ids seen, crash-idempotent), ``ledger``
(who learned what, per message), ``credentials`` (submission passwords) and
``lock`` (one running box per directory). Imports :mod:`onionmail.core` and
:mod:`onionmail.seal`.
"""
