"""``onionmail systemd-unit``: a hardened systemd service that runs this box."""

from __future__ import annotations

import argparse
from pathlib import Path

from onionmail.cli.common import Subcommands, program
from onionmail.config.box import load_config
from onionmail.core.systemd import service_unit, unit_command


def register(sub: Subcommands) -> None:
    p = sub.add_parser(
        "systemd-unit",
        help="print a hardened systemd unit that runs this box",
        description=(
            "Print a systemd service (Type=notify: started once the box takes mail) that "
            "runs 'onionmail run' for BOXDIR as USER, with the file system read-only but "
            "BOXDIR, no new privileges and no capabilities. Install it as "
            "/etc/systemd/system/onionmail.service, create the user (useradd --system USER; "
            "chown -R USER BOXDIR), then systemctl enable --now onionmail. An encrypted key "
            "needs --passphrase-file (a file only USER can read)."
        ),
    )
    p.add_argument("--dir", required=True, type=Path, metavar="BOXDIR", help="the box directory")
    p.add_argument("--user", default="onionmail", help="the system user (onionmail)")
    p.add_argument("--passphrase-file", type=Path, metavar="FILE", help="the key's passphrase")
    p.set_defaults(func=cmd_systemd_unit)


def cmd_systemd_unit(args: argparse.Namespace) -> int:
    box_dir: Path = args.dir.absolute()
    config = load_config(box_dir)
    command = unit_command(program("onionmail", "onionmail.cli"), box_dir, args.passphrase_file)
    print(
        service_unit(
            description=f"onionmail box {', '.join(config.box.local_parts)}",
            exec_start=command,
            directory=box_dir,
            user=args.user,
            bind_port_25=False,
            reloads=True,  # SIGHUP: the device list changed (onionmail device add/revoke)
            allow_setuid=True,
        ),
        end="",
    )
    return 0
