"""What every part of onionmail stands on: errors, files, addresses, log redaction.

Owns the exception tree (``errors``), durable private files (``files``),
mail and onion addresses (``mail_address``, ``onion_address``) and the log
formatter that redacts them (``redaction``). Imports nothing from onionmail.
"""
