"""Several gateway instances behind one onion: what Onionbalance needs from the gateway.

Each instance runs with ``[onion] onionbalance_instance = true``: it holds the
gateway's ``keys/`` (the identity boxes know it by, the DKIM and mail keys)
and the shared ``[storage] url``, and publishes a backend onion of its own
(:meth:`onionmail.tor.control.BoxTor.publish_instance`). Onionbalance, run by
the operator next to a tor of its own, fetches every backend's descriptor and
publishes the gateway's onion with their introduction points, signed with
the gateway's key. A box connecting to the gateway's onion reaches one
instance, and the session's handshake proves the gateway's identity there as
anywhere (every instance has the key).

:func:`write_onionbalance_config` writes what Onionbalance reads: the key, in
tor's own file format (Onionbalance reads it as it reads tor's), and
``config.yaml`` naming the instances. The key is the gateway's identity: the
file is written 0600 and belongs on the machine running Onionbalance only.
"""

from __future__ import annotations

from pathlib import Path

from gateway.errors import GatewayConfigError
from onionmail.core.files import ensure_private_dir, write_private_file
from onionmail.core.onion_address import is_onion_address
from onionmail.seal.identity import Identity

TOR_SECRET_KEY_HEADER = b"== ed25519v1-secret: type0 ==\x00\x00\x00"
"""The 32 bytes tor writes before an expanded ed25519 key (``hs_ed25519_secret_key``)."""

KEY_NAME = "gateway.key"
CONFIG_NAME = "config.yaml"


def tor_secret_key_file(identity: Identity) -> bytes:
    """The identity as tor's ``hs_ed25519_secret_key`` file: header and expanded key."""
    return TOR_SECRET_KEY_HEADER + identity.tor_expanded_key()


def onionbalance_yaml(key_file: str, instances: list[str]) -> str:
    """Onionbalance's v3 configuration: one service (the gateway), its backends."""
    lines = ["# Made by onionmail-gateway onionbalance-config.", "services:", f"- key: {key_file}"]
    lines.append("  instances:")
    for number, address in enumerate(instances, 1):
        lines.append(f"  - address: {address}")
        lines.append(f"    name: instance-{number}")
    return "\n".join(lines) + "\n"


def write_onionbalance_config(identity: Identity, instances: list[str], out_dir: Path) -> Path:
    """Write ``out_dir/gateway.key`` and ``out_dir/config.yaml``; the configuration's path.

    ``instances``: the backend onions (``onionmail-gateway status`` of each instance
    prints its own); each is checked, and the gateway's onion itself is refused (it
    is the frontend, never a backend).
    """
    if not instances:
        raise GatewayConfigError("name at least one instance (--instance ADDRESS.onion)")
    addresses = []
    for raw in instances:
        address = raw.strip().lower()
        if not address.endswith(".onion"):
            address += ".onion"
        if not is_onion_address(address):
            raise GatewayConfigError(f"--instance {raw}: not a v3 onion address")
        if address == identity.onion_address:
            raise GatewayConfigError(
                f"--instance {raw}: that is the gateway's own onion (the frontend); name the "
                "instance onions 'onionmail-gateway status' prints on each instance"
            )
        if address not in addresses:
            addresses.append(address)
    ensure_private_dir(out_dir)
    write_private_file(out_dir / KEY_NAME, tor_secret_key_file(identity))
    config = out_dir / CONFIG_NAME
    write_private_file(config, onionbalance_yaml(KEY_NAME, addresses).encode())
    return config
