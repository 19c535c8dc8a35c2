"""``onionmail gateway register``: get an alias at a clearnet gateway for this box."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from onionmail.cli.common import Subcommands
from onionmail.cli.common import progress as _progress
from onionmail.cli.passphrase import open_identity
from onionmail.config.box import load_config


def register(sub: Subcommands) -> None:
    p = sub.add_parser(
        "gateway",
        help="register with a clearnet gateway (an alias for mail to and from the clearnet)",
        description=(
            "register: ask the gateway at ONION (its .onion host) for the alias NAME at its "
            "domain, for the box address --name@<this box's onion>. The request is signed "
            "with the box's identity key and sent sealed over Tor (the running box's tor, or "
            "a tor launched for the command). The answer is 'registered' or 'pending' (the "
            "gateway's operator approves new aliases); either way the gateway is written to "
            "[gateway] in onionmail.toml. Restart a running box to use it: clearnet "
            "recipients are then accepted and sent sealed to the gateway, which sends them "
            "on from the alias; mail to the alias comes back sealed to the box."
        ),
    )
    p.add_argument("action", choices=("register",), help="what to do")
    p.add_argument("--dir", required=True, type=Path, metavar="BOXDIR", help="the box directory")
    p.add_argument("--gateway", required=True, metavar="ONION", help="the gateway's .onion host")
    p.add_argument("--alias", required=True, metavar="NAME", help="the alias wanted (local part)")
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
    from onionmail.gateway_link.client import record_registration, register_with_gateway
    from onionmail.tor.testnet.network import tor_options_for

    box_dir: Path = args.dir.absolute()
    config = load_config(box_dir)
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
    if reply.state == "pending":
        print("the gateway's operator has to approve it; until then the gateway refuses mail")
    print(f"written to [gateway] in {config.path}; restart a running box to use it")
    return 0
