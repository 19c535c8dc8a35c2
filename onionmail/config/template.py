"""The ``onionmail.toml`` that ``onionmail init`` writes: chosen values, every default shown.

Each key appears with its default, commented out, so the file documents
itself; ``tests/test_config_reference.py`` checks each one is in the
reference generated from :mod:`onionmail.config.sections`.
"""

from __future__ import annotations


def render_config(
    local_parts: tuple[str, ...],
    submission_port: int,
    testnet: str = "",
    retry_initial: float | None = None,
) -> str:
    """The text ``onionmail init`` writes: the chosen values, the rest commented defaults."""
    parts = ", ".join(f'"{p}"' for p in local_parts)
    testnet_line = f'testnet = "{_toml_escape(testnet)}"' if testnet else '# testnet = ""'
    retry_line = (
        f"retry_initial = {float(retry_initial)!r}"
        if retry_initial is not None
        else "# retry_initial = 30.0"
    )
    return f"""# onionmail box configuration. Every key is optional; defaults are shown commented.
# Every key is described in the configuration reference: docs/configuration.md.

[box]
local_parts = [{parts}]
# max_connections_total = 25

[submission]
host = "127.0.0.1"
port = {submission_port}
# max_message_size = 26214400
# max_recipients = 100
# timeout = 300.0
# data_timeout = 1800.0
# transaction_timeout = 300.0
# max_session_time = 3600.0
# max_commands = 1000
# max_connections = 10
# max_line_length = 1000
# max_bad_commands = 20
# keep_sent = true          # a copy of sent mail in .Sent (in clear, like received mail)

[inbound]
# max_message_size = 26214400
# max_recipients = 100
# timeout = 300.0
# data_timeout = 1800.0
# transaction_timeout = 300.0
# max_session_time = 3600.0
# max_commands = 1000
# max_connections = 20
# max_line_length = 1000
# max_bad_commands = 20
# require_seal_for_onion_senders = true
# accept_seal_v1 = true      # older boxes' seal: no forward secrecy (marked sealed-v1)
# strangers = "requests"     # senders the box does not know: "requests", "inbox", "refuse"
# pow_bits = 9               # a stranger's stamp: argon2id zero bits (about 1 s); 0: none
# pow_memory_kib = 8192
# stranger_messages_per_hour = 10     # from one sender the box does not know
# strangers_messages_per_hour = 200   # from all of them together
# stranger_refusal_delay = 1.0        # seconds before a stranger's refused RCPT is answered

[tor]
# mode = "launch"          # or "attach" with control_socket / control_port
{testnet_line}
# bootstrap_timeout = 120.0
# publish_timeout = 90.0
# socks_timeout = 60.0
# pow_defenses = true       # tor's proof-of-work defence for the onion (tor >= 0.4.9.2)
# pow_queue_rate = 25
# pow_queue_burst = 250
# max_streams_per_circuit = 10

[delivery]
# smtp_timeout = 120.0
{retry_line}
# retry_max = 3600.0
# max_lifetime = 432000.0

[policy]
# rules = []   # never-clearnet, require-sealed, never-plaintext-subject, require-padding,
#              # never-from-strangers (mail in: only contacts may write)
# More rules per contact: a [policy.contacts] table whose keys are addresses or
# onions and whose values are lists of rules (README, "Configuration").
# plaintext_allowed = []   # clearnet addresses or domains the gateway may send to
#                          # without TLS, e.g. ["bob@legacy.example", "legacy.example"]

[timing]
# mode = "immediate"        # or "delay" (random hold) or "batch" (epoch-aligned instants)
# mean_delay = 600.0        # delay mode: mean hold, seconds
# batch_interval = 900.0    # batch mode: seconds between sending instants
# cover_rate = 0.0          # dummy envelopes per hour to each cover contact; 0: none
# cover_contacts = []       # onionmail boxes for cover traffic: "name@<onion>.onion"
# Per contact: a [timing.contacts."name@<onion>.onion"] (or ."<onion>.onion") table
# with any of mode, mean_delay, batch_interval (README, "Configuration").

[scrub]
# date_rounding = 60              # Date in UTC, rounded down to this many seconds
# remove_content_language = true
# extra_remove_headers = []       # e.g. ["X-Priority", "X-Corp-*"]
# keep_headers = []               # e.g. ["User-Agent"]

[devices]
# Phones and laptops: 'onionmail device add NAME' (docs: "Read mail on your phone").
# local_imap_port = 0             # also IMAP on 127.0.0.1 at this port; 0: off
# dovecot = ""                    # the dovecot binary; empty: PATH, then /usr/sbin

[gateway]
# Clearnet gateways this box registered with ('onionmail gateway register' adds them),
# one line each, the first one sends clearnet mail:  "<gateway onion>.onion"="alias@gw.example"

[onion_mx]
# Static routes, OnionMX without DNS, one line each:  "corp.example"="<onion>.onion"
"""


def _toml_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')
