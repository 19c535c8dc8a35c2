"""The box's configuration file: typed sections, defaults, checks, the template.

``sections`` holds the dataclasses shared with the gateway (session limits,
tor, delivery), ``gateway`` the box's ``[gateway]`` section, ``box`` the
loader with its errors that name file and key, ``template`` the file
``onionmail init`` writes and ``reference`` the documentation of every key.
Imports only :mod:`onionmail.core`.
"""
