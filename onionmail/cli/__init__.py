"""The ``onionmail`` command line: one module per group of commands.

``main`` parses and dispatches, ``common`` holds progress lines and logging
set-up, the rest are the commands' bodies (``keys``, ``leaks``, ``gateway``,
``testnet``, ``demo``). May import anything in onionmail; nothing imports it.
"""
