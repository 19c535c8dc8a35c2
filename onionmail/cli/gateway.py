"""``onionmail gateway register|use``: an alias at a clearnet gateway; which one sends."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from onionmail.cli.common import Subcommands
from onionmail.cli.common import progress as _progress
from onionmail.cli.passphrase import open_identity
from onionmail.config.box import load_config
from onionmail.core.errors import ConfigError


def register(sub: Subcommands) -> None:
    p = sub.add_parser(
        "gateway",
        help="register with a clearnet gateway, or choose the one clearnet mail goes through",
        description=(
            "register: ask the gateway at ONION (its .onion host) for the alias NAME at its "
            "domain, for the box address --name@<this box's onion>. The request is signed "
            "with the box's identity key and sent sealed over Tor (the running box's tor, or "
            "a tor launched for the command). The answer is 'registered' or 'pending' (the "
            "gateway's operator approves new aliases); either way the gateway is written to "
            "[gateway] in onionmail.toml. Restart a running box to use it: clearnet "
            "recipients are then accepted and sent sealed to the gateway, which sends them "
            "on from the alias; mail to the alias comes back sealed to the box. "
            "Registering with a second gateway does not change which one sends (nor the From "
            "of clearnet mail). use: make the gateway at ONION (registered already) the one "
            "clearnet mail goes through, as its alias ([gateway] sending = ONION)."
        ),
    )
    p.add_argument("action", choices=("register", "use"), help="what to do")
    p.add_argument("--dir", required=True, type=Path, metavar="BOXDIR", help="the box directory")
    p.add_argument("--gateway", required=True, metavar="ONION", help="the gateway's .onion host")
    p.add_argument(
        "--alias", metavar="NAME", help="register: the alias wanted (local part; required)"
    )
    p.add_argument(
        "--name",
        default="",
        metavar="LOCAL_PART",
        help="which of the box's local parts the alias stands for (default: the first)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=180.0,
        help="seconds to keep trying to reach the gateway (default 180)",
    )
    p.add_argument(
        "--passphrase-file", type=Path, metavar="FILE", help="passphrase of the identity key"
    )
    p.set_defaults(func=cmd_gateway)


def cmd_gateway(args: argparse.Namespace) -> int:
    from onionmail.gateway_link.client import (
        record_registration,
        register_with_gateway,
        use_gateway,
    )
    from onionmail.tor.testnet.network import tor_options_for

    box_dir: Path = args.dir.absolute()
    config = load_config(box_dir)
    if args.action == "use":
        alias = use_gateway(box_dir, args.gateway)
        print(f"clearnet mail now goes through {args.gateway.strip().lower()}, from {alias}")
        print(f"written to [gateway] in {config.path}; restart a running box to use it")
        return 0
    if not args.alias:
        raise ConfigError("onionmail gateway register: --alias NAME is required")
    identity = open_identity(box_dir / "keys" / "identity.key", args.passphrase_file)
    options = tor_options_for(config.tor.testnet)
    local_part = args.name.lower() or config.box.local_parts[0]
    reply = asyncio.run(
        register_with_gateway(
            config,
            identity,
            gateway_onion=args.gateway,
            alias=args.alias,
            local_part=local_part,
            testnet_options=options,
            progress=_progress,
            timeout=args.timeout,
        )
    )
    record_registration(box_dir, args.gateway.strip().lower(), reply.alias)
    print(f"{reply.state}: {reply.alias} -> {local_part}@{identity.onion_address}")
    sending = load_config(box_dir).gateway.sending_gateway
    if sending and sending != args.gateway.strip().lower():
        print(
            f"clearnet mail still goes through {sending}; to send through this gateway: "
            f"onionmail gateway use --dir {args.dir} --gateway {args.gateway}"
        )
    if reply.state == "pending":
        print("the gateway's operator has to approve it; until then the gateway refuses mail")
    print(f"written to [gateway] in {config.path}; restart a running box to use it")
    return 0
