"""The box: the daemon and what it runs, from submission to the peer's Maildir.

``daemon`` wires it together; ``submission`` takes mail from the user's
client, ``delivery`` sends the queue over tor, ``inbound`` receives on the
onion and stores in the Maildir; ``timing`` and ``cover_traffic`` decide when,
``policy`` and ``policy_gate`` whether (and record the ledger); ``create``
makes a new box; ``api`` is what the TUI and the command line read. Imports
every onionmail package except :mod:`onionmail.cli`.
"""
