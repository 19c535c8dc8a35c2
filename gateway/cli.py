"""The ``onionmail-gateway`` command line: the one place where gateway errors meet the user.

Errors (:class:`~gateway.errors.GatewayError`, and the
:class:`~onionmail.core.errors.OnionMailError` of the shared box code) are
printed as one line on stderr with a non-zero exit status. Progress goes to
stderr, results to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from gateway.acme import LETS_ENCRYPT, certbot_command, install, renew_command
from gateway.config import (
    CONFIG_NAME,
    GatewayConfig,
    load_gateway_config,
    render_gateway_config,
)
from gateway.errors import GatewayConfigError, GatewayError
from gateway.registry import PENDING, Registry
from gateway.storage import open_database
from onionmail.cli.common import flush_on_sigusr1, program, run_command, stop_on_signals
from onionmail.cli.common import progress as _progress
from onionmail.core.errors import OnionMailError
from onionmail.core.files import ensure_private_dir, write_private_file
from onionmail.core.systemd import claim_notify_socket, notify, service_unit, unit_command
from onionmail.seal.identity import Identity, load_identity, read_passphrase_file, save_identity
from onionmail.store.lock import running_pid
from onionmail.store.queue import list_queue, reschedule_queue

DESCRIPTION = """\
onionmail-gateway: the clearnet gateway of onionmail boxes.

Boxes reach it over its onion service only. A box registers once for an
alias at the gateway's domain (alice@gw.example); then mail it sends to
clearnet addresses is sealed to the gateway, which rewrites the sender to
the alias, DKIM-signs it and delivers it to the recipient's MX with TLS
required; mail to the alias is sealed to the box the moment it arrives and
delivered to it over Tor. Nobody else can send through it (no open relay).

What the gateway sees: the box's alias, the clearnet correspondent's
address, the subject and body of mail to and from the clearnet (unless the
box encrypted it with OpenPGP), sizes and times. It never learns a box's IP
address, and keeps clearnet mail for a box only as ciphertext for that box.

typical use:
  onionmail-gateway init --dir ~/gw --domain gw.example [--open-registration]
  onionmail-gateway run --dir ~/gw
  onionmail-gateway pending --dir ~/gw           registrations waiting for approval
  onionmail-gateway approve|deny --dir ~/gw ALIAS
  onionmail-gateway list|remove|rename --dir ~/gw [ALIAS [NEW]]
  onionmail-gateway status --dir ~/gw            running? aliases, queues, operator mail
  onionmail-gateway queue --dir ~/gw [flush]      what it holds; retry it all now
  onionmail-gateway dns-records|check-dns --dir ~/gw   the domain's records; are they right?
"""


def main(argv: Sequence[str] | None = None) -> int:
    return run_command("onionmail-gateway", build_parser(), argv, (GatewayError, OnionMailError))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onionmail-gateway",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    p = sub.add_parser(
        "init",
        help="create a gateway: identity (its onion), configuration, DKIM keys",
        description=(
            "Create a gateway in GWDIR: an ed25519 identity (the onion address boxes register "
            "with), gateway.toml for DOMAIN, and DKIM keys (ed25519 and RSA). Prints the "
            "onion address and the DNS records to publish: MX of DOMAIN -> this host, and "
            "the two DKIM TXT records."
        ),
    )
    _dir_arg(p)
    p.add_argument("--domain", required=True, help="the mail domain of the aliases")
    p.add_argument(
        "--require-approval",
        action="store_true",
        help="new registrations wait for 'onionmail-gateway approve' (the default)",
    )
    p.add_argument(
        "--open-registration",
        action="store_true",
        help=(
            "approve every registration at once: any Tor user gets an alias and can send "
            "DKIM-signed mail from the domain (within the sending limits of [onion])"
        ),
    )
    p.add_argument("--testnet", type=Path, metavar="DIR", help="join the private Tor network")
    p.add_argument("--passphrase-file", type=Path, metavar="FILE", help="encrypt the key")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser(
        "run",
        help="run the gateway until interrupted",
        description=(
            "Run the gateway: launch (or attach to) tor, publish the onion from the gateway's "
            "key, serve the boxes behind it and the clearnet MX on [smtp], and deliver both "
            "queues. Prints 'onion:' and 'smtp:' lines once ready; progress on stderr. Stop "
            "with Ctrl-C or SIGTERM."
        ),
    )
    _dir_arg(p)
    p.add_argument("--passphrase-file", type=Path, metavar="FILE", help="the key's passphrase")
    p.set_defaults(func=cmd_run)

    for name, helptext in (
        ("list", "list every registration: alias, box address, state"),
        ("pending", "list registrations waiting for approval"),
    ):
        p = sub.add_parser(name, help=helptext, description=helptext.capitalize() + ".")
        _dir_arg(p)
        p.set_defaults(func=cmd_list, only_pending=name == "pending")

    for name, approve in (("approve", True), ("deny", False)):
        verb = "approve" if approve else "deny"
        p = sub.add_parser(
            name,
            help=f"{verb} a registration (the alias's local part)",
            description=(
                f"{verb.capitalize()} the registration of ALIAS. Takes effect at once in a "
                "running gateway. A denied alias cannot be asked for again."
            ),
        )
        _dir_arg(p)
        p.add_argument("alias", metavar="ALIAS", help="the alias (local part, or full address)")
        p.set_defaults(func=cmd_decide, approve=approve)

    alias_arg = ("alias", "the alias (local part, or full address)")
    for name, func, helptext, description, positional in (
        (
            "remove",
            cmd_remove,
            "forget a registration (a denied one too): the alias may be asked for again",
            "Forget the registration of ALIAS, whatever its state. Mail to it is refused "
            "(550 5.1.1) and mail from it already queued does not go out; the alias and the "
            "box may register again. To keep an alias from ever being asked for again, deny "
            "it instead.",
            [alias_arg],
        ),
        (
            "rename",
            cmd_rename,
            "give a registration another (free) alias",
            "Move the registration of ALIAS to NEW (same box, same state). Mail to ALIAS is "
            "refused from then on, mail from the box goes out from NEW; its user should "
            "register again with --alias NEW so the box's configuration says so too.",
            [alias_arg, ("new", "the new alias (a local part)")],
        ),
        (
            "dns-records",
            cmd_dns_records,
            "print every DNS record the domain needs (MX, SPF, DKIM, DMARC, MTA-STS, TLSA...)",
            "Print, in zone-file syntax, every record the gateway's domain needs, made from "
            "gateway.toml and the gateway's keys: MX, the MX host's A/AAAA ([gateway] "
            "public_addresses), SPF, both DKIM keys, DMARC (p=reject, strict alignment), "
            "MTA-STS (record and the policy file to serve), TLSRPT, TLSA for DANE (from "
            "[smtp] tls_cert), and the PTR records to ask the address's host for.",
            [],
        ),
        (
            "check-dns",
            cmd_check_dns,
            "check the domain's DNS records through the gateway's resolver",
            "Ask the gateway's validating resolver ([dns]) for every record dns-records "
            "prints, check that SPF lets each public address send for the domain, and say "
            "what is missing or wrong. Exit status 1 when something is.",
            [],
        ),
    ):
        p = sub.add_parser(name, help=helptext, description=description)
        _dir_arg(p)
        for argument, argument_help in positional:
            p.add_argument(argument, metavar=argument.upper(), help=argument_help)
        p.set_defaults(func=func)

    p = sub.add_parser(
        "certificate",
        help="get (or --renew) the MX's certificate from an ACME CA with certbot",
        description=(
            "Run certbot (Debian's package) for the MX host name ([gateway] mx_host) and "
            "any --name: certonly --standalone answers the http-01 challenge on "
            "--http-01-port (80: the CA connects to that port of the name's address), state "
            "in GWDIR/acme. Once issued, install-certificate copies chain and key to "
            "GWDIR/tls, names them in [smtp] the first time, and makes a running gateway "
            "load them (SIGHUP: no session dropped). --renew renews what is due: run it "
            "daily. Needs root for port 80, like certbot."
        ),
    )
    _dir_arg(p)
    p.add_argument("--email", help="the operator's address, for the CA's notices (required)")
    p.add_argument("--server", default=LETS_ENCRYPT, help="the ACME directory URL")
    p.add_argument("--http-01-port", type=int, default=80, help="where certbot listens (80)")
    p.add_argument("--name", action="append", default=[], help="another name to include")
    p.add_argument("--renew", action="store_true", help="renew the certificate when due")
    p.add_argument("--force-renewal", action="store_true", help="renew now, due or not")
    p.set_defaults(func=cmd_certificate)

    for name, func, helptext in (
        (
            "install-certificate",
            cmd_install_certificate,
            "certbot's deploy hook: install a new certificate and make the gateway load it",
        ),
        ("reload", cmd_reload, "make a running gateway load its certificate again (SIGHUP)"),
    ):
        p = sub.add_parser(name, help=helptext, description=helptext.capitalize() + ".")
        _dir_arg(p)
        p.set_defaults(func=func)

    p = sub.add_parser(
        "status",
        help="whether the gateway runs, its onion and ports, aliases, queues, operator mail",
        description=(
            "Whether a gateway runs in GWDIR (and since when), its onion, clearnet port and "
            "metrics endpoint, the aliases by state, both queues (messages, oldest), mail "
            "waiting for the operator and notes on undeliverable mail. Exit status 3 when "
            "it is not running. Read without the gateway's key: no addresses are shown."
        ),
    )
    _dir_arg(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "systemd-unit",
        help="print a hardened systemd unit that runs this gateway",
        description=(
            "Print a systemd service (Type=notify: started once the gateway takes mail) "
            "that runs this gateway as USER with the file system read-only but GWDIR, no "
            "new privileges and no capability but binding port 25. Install it as "
            "/etc/systemd/system/onionmail-gateway.service, create the user (useradd "
            "--system USER; chown -R USER GWDIR), then systemctl enable --now "
            "onionmail-gateway."
        ),
    )
    _dir_arg(p)
    p.add_argument("--user", default="onionmail-gw", help="the system user (onionmail-gw)")
    p.add_argument("--passphrase-file", type=Path, metavar="FILE", help="the key's passphrase")
    p.set_defaults(func=cmd_systemd_unit)

    p = sub.add_parser(
        "queue",
        help="list the gateway's two queues, or retry them now (flush)",
        description=(
            "list (the default): every message the gateway holds, read without its key: "
            "which queue (boxes: clearnet mail for a box; clearnet: a box's mail for the "
            "clearnet), the destination (a box's onion, or a domain), tries, the next try "
            "and the last error. No sender, recipient or subject is shown: the gateway keeps "
            "those encrypted. flush: every message is due now, and a running gateway "
            "retries them at once."
        ),
    )
    _dir_arg(p)
    p.add_argument("action", nargs="?", choices=("list", "flush"), default="list")
    p.set_defaults(func=cmd_queue)

    p = sub.add_parser(
        "onionbalance-config",
        help="write Onionbalance's configuration and key for instances behind this onion",
        description=(
            "Several instances behind the gateway's onion (docs/scale-out.md): write OUT/"
            "config.yaml naming each INSTANCE's own onion ('onionmail-gateway status' on an "
            "instance with [onion] onionbalance_instance prints it) and OUT/gateway.key, the "
            "gateway's identity in tor's key format, which Onionbalance signs the gateway's "
            "descriptor with. Both 0600: the key is the gateway's identity. Then: "
            "onionbalance -c OUT/config.yaml -s TOR_CONTROL_SOCKET."
        ),
    )
    _dir_arg(p)
    p.add_argument(
        "--instance", action="append", required=True, metavar="ADDRESS", help="a backend onion"
    )
    p.add_argument("--out", required=True, type=Path, metavar="OUT", help="where to write")
    p.add_argument("--passphrase-file", type=Path, metavar="FILE", help="the key's passphrase")
    p.set_defaults(func=cmd_onionbalance_config)
    return parser


def cmd_onionbalance_config(args: argparse.Namespace) -> int:
    from gateway.balance import write_onionbalance_config
    from gateway.daemon import GatewayPaths

    gw_dir: Path = args.dir.absolute()
    load_gateway_config(gw_dir)
    passphrase = read_passphrase_file(args.passphrase_file) if args.passphrase_file else None
    identity = load_identity(GatewayPaths(gw_dir).identity, passphrase)
    config = write_onionbalance_config(identity, args.instance, args.out.absolute())
    print(f"frontend onion: {identity.onion_address}")
    print(f"wrote {config} and {config.parent / 'gateway.key'} (the gateway's key: keep it 0600)")
    return 0


def _dir_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", required=True, type=Path, metavar="GWDIR", help="gateway directory")


def cmd_init(args: argparse.Namespace) -> int:
    from gateway.daemon import GatewayPaths, dkim_signer

    gw_dir: Path = args.dir.absolute()
    if (gw_dir / CONFIG_NAME).exists():
        raise GatewayConfigError(f"{gw_dir / CONFIG_NAME}: a gateway already exists here")
    ensure_private_dir(gw_dir)
    testnet = str(args.testnet.absolute()) if args.testnet else ""
    if args.open_registration and args.require_approval:
        raise GatewayConfigError("--open-registration and --require-approval contradict")
    text = render_gateway_config(
        args.domain.lower(), require_approval=not args.open_registration, testnet=testnet
    )
    write_private_file(gw_dir / CONFIG_NAME, text.encode())
    config = load_gateway_config(gw_dir)  # validates the domain
    passphrase = read_passphrase_file(args.passphrase_file) if args.passphrase_file else None
    identity = Identity.generate()
    save_identity(identity, GatewayPaths(gw_dir).identity, passphrase)
    signer = dkim_signer(config)
    print(f"gateway created in {gw_dir}")
    print(f"onion: {identity.onion_address}")
    print(f"domain: {config.gateway.domain}")
    print("publish in DNS:")
    print(f"  {config.gateway.domain}. IN MX 10 <this host's name>.")
    for key in signer.keys:
        print(f"  {key.zone_line()}")
    print(f"next: onionmail-gateway run --dir {gw_dir}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from gateway.daemon import Gateway, GatewayPaths
    from onionmail.tor.testnet.network import tor_options_for

    gw_dir: Path = args.dir.absolute()
    config = load_gateway_config(gw_dir)
    passphrase = read_passphrase_file(args.passphrase_file) if args.passphrase_file else None
    identity = load_identity(GatewayPaths(gw_dir).identity, passphrase)
    options = tor_options_for(config.tor.testnet)

    claim_notify_socket()  # before tor is launched with this environment

    async def serve() -> None:
        gateway = Gateway(config, identity, testnet_options=options, progress=_progress)
        stop = stop_on_signals()
        flush_on_sigusr1(gateway.flush)  # from 'onionmail-gateway queue flush'
        # a renewed certificate (install-certificate, reload)
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, gateway.reload_tls)
        try:
            await gateway.start()
            print(f"onion: {gateway.onion}")
            if gateway.instance_onion:
                print(f"instance onion: {gateway.instance_onion}")
            if gateway.metrics_url:
                print(f"metrics: {gateway.metrics_url}")
            print(f"smtp: {config.smtp.host}:{gateway.smtp_port}", flush=True)
            notify("READY=1")  # Type=notify: started once it takes mail
            await stop.wait()
            _progress("stopping")
            notify("STOPPING=1")
        finally:
            await gateway.stop()

    asyncio.run(serve())
    return 0


T = TypeVar("T")


def with_registry(config: GatewayConfig, act: Callable[[Registry], T]) -> T:
    """``act`` on the gateway's registry, its database closed after."""
    db = open_database(config)
    try:
        return act(Registry(db))
    finally:
        db.close()


def cmd_list(args: argparse.Namespace) -> int:
    config = load_gateway_config(args.dir.absolute())
    entries = with_registry(config, Registry.all)
    if args.only_pending:
        entries = [e for e in entries if e.state == PENDING]
    if not entries:
        print("no pending registrations" if args.only_pending else "no registrations")
        return 0
    for e in entries:
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(e.requested))
        print(f"{e.alias}@{config.gateway.domain}  {e.state:8}  {when} UTC  {e.box}")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    config = load_gateway_config(args.dir.absolute())
    alias = args.alias.lower().split("@", 1)[0]
    with_registry(config, lambda registry: registry.remove(alias))
    print(f"{alias}@{config.gateway.domain}: removed")
    return 0


def cmd_rename(args: argparse.Namespace) -> int:
    config = load_gateway_config(args.dir.absolute())
    alias = args.alias.lower().split("@", 1)[0]
    new = args.new.lower().split("@", 1)[0]
    entry = with_registry(config, lambda registry: registry.rename(alias, new))
    domain = config.gateway.domain
    print(f"{alias}@{domain} -> {entry.alias}@{domain} ({entry.state})")
    return 0


def cmd_decide(args: argparse.Namespace) -> int:
    config = load_gateway_config(args.dir.absolute())
    alias = args.alias.lower().split("@", 1)[0]
    entry = with_registry(config, lambda registry: registry.decide(alias, approve=args.approve))
    print(f"{entry.alias}@{config.gateway.domain}: {entry.state}")
    return 0


def cmd_certificate(args: argparse.Namespace) -> int:
    config = load_gateway_config(args.dir.absolute())
    if args.renew or args.force_renewal:
        command = renew_command(config, force=args.force_renewal)
    else:
        if not args.email:
            raise GatewayConfigError("onionmail-gateway certificate: --email is required")
        hook = [*program("onionmail-gateway", "gateway.cli"), "install-certificate"]
        command = certbot_command(
            config,
            email=args.email,
            server=args.server,
            http_port=args.http_01_port,
            names=args.name,
            deploy_hook=[*hook, "--dir", str(config.gateway_dir)],
        )
    _progress(f"running {' '.join(command[:2])} (its output follows)")
    return subprocess.run(command, check=False).returncode


def cmd_install_certificate(args: argparse.Namespace) -> int:
    gw_dir: Path = args.dir.absolute()
    lineage = os.environ.get("RENEWED_LINEAGE", "")
    if not lineage:
        raise GatewayConfigError(
            "install-certificate runs as certbot's deploy hook ($RENEWED_LINEAGE is not set)"
        )
    cert, _key = install(gw_dir, Path(lineage))
    print(f"installed {cert}")
    return cmd_reload(args)


def cmd_reload(args: argparse.Namespace) -> int:
    pid = running_pid(args.dir.absolute())
    if pid is None or pid < 0:
        print("the gateway is not running: it loads the certificate when it starts")
        return 0
    os.kill(pid, signal.SIGHUP)
    print(f"the running gateway (pid {pid}) loads its certificate again")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    config = load_gateway_config(args.dir.absolute())
    root = config.gateway_dir
    pid = running_pid(root)
    running = pid is not None and pid > 0
    try:
        status = json.loads((root / "run" / "status.json").read_text()) if running else {}
    except (OSError, ValueError):
        status = {}
    since = status.get("started_at")
    started = time.strftime(" since %Y-%m-%d %H:%M UTC", time.gmtime(since)) if since else ""
    print(f"gateway:    {root} ({config.gateway.domain})")
    print(f"state:      {f'running (pid {pid}){started}' if running else 'not running'}")
    if status:
        print(f"onion:      {status.get('onion', '?')}")
        if status.get("instance_onion"):
            print(f"instance:   {status['instance_onion']} (an Onionbalance backend)")
        print(f"smtp:       {status.get('smtp', '?')}")
        print(f"metrics:    {status.get('metrics') or 'off ([metrics] listen)'}")
    states = collections.Counter(e.state for e in with_registry(config, Registry.all))
    approval = "required" if config.gateway.require_approval else "open (no approval)"
    print(
        f"aliases:    {states['approved']} approved, {states['pending']} pending, "
        f"{states['denied']} denied; registration {approval}"
    )
    now = time.time()
    for name in QUEUES:
        held = list_queue(root / "queue" / name)
        oldest = f", oldest {int((now - min(s.created for s in held)) // 60)} min" if held else ""
        print(f"queue:      {name} {len(held)} message(s){oldest}")
    operator = len(list((root / "operator" / "new").glob("*")))
    notes = len(list((root / "undeliverable" / "new").glob("*")))
    print(f"operator:   {operator} new message(s) in {root / 'operator'}")
    print(f"undeliverable: {notes} note(s) in {root / 'undeliverable'}")
    return 0 if running else 3


def cmd_systemd_unit(args: argparse.Namespace) -> int:
    config = load_gateway_config(args.dir.absolute())
    base = program("onionmail-gateway", "gateway.cli")
    command = unit_command(base, config.gateway_dir, args.passphrase_file)
    print(
        service_unit(
            description=f"onionmail clearnet gateway for {config.gateway.domain}",
            exec_start=command,
            directory=config.gateway_dir,
            user=args.user,
            bind_port_25=True,
            reloads=True,  # SIGHUP: a renewed certificate
        ),
        end="",
    )
    return 0


def cmd_dns_records(args: argparse.Namespace) -> int:
    from gateway.daemon import dkim_signer
    from gateway.dns_records import render

    config = load_gateway_config(args.dir.absolute())
    print(render(config, dkim_signer(config)), end="")
    return 0


def cmd_check_dns(args: argparse.Namespace) -> int:
    from gateway.daemon import dkim_signer
    from gateway.dns import GatewayResolver, ResolverConfig
    from gateway.dns_records import check_records

    config = load_gateway_config(args.dir.absolute())
    dns = config.dns
    resolver = GatewayResolver(ResolverConfig(dns.resolver, dns.port, dns.timeout))
    findings = asyncio.run(check_records(config, dkim_signer(config), resolver))
    for finding in findings:
        mark = "ok     " if finding.ok else "MISSING" if "missing" in finding.detail else "WRONG  "
        print(f"{mark}  {finding.what}" + (f": {finding.detail}" if finding.detail else ""))
    bad = [f for f in findings if not f.ok]
    print(f"{len(findings) - len(bad)} of {len(findings)} in order" + ("" if not bad else
          f"; fix the {len(bad)} above and run check-dns again"))  # fmt: skip
    return 1 if bad else 0


QUEUES = ("boxes", "clearnet")
"""``GWDIR/queue/<name>``: clearnet mail for boxes, and boxes' mail for the clearnet."""


def cmd_queue(args: argparse.Namespace) -> int:
    config = load_gateway_config(args.dir.absolute())
    root = config.gateway_dir / "queue"
    if args.action == "flush":
        now = time.time()
        count = sum(reschedule_queue(root / name, now) for name in QUEUES)
        pid = running_pid(config.gateway_dir)
        if pid is None or pid < 0:
            print(f"{count} message(s) due now; the gateway is not running: they go when it does")
            return 0
        os.kill(pid, signal.SIGUSR1)
        print(f"{count} message(s) due now; the running gateway (pid {pid}) is retrying them")
        return 0
    rows = [(name, state) for name in QUEUES for state in list_queue(root / name)]
    if not rows:
        print("both queues are empty")
        return 0
    now = time.time()
    print(f"{'queue':8}  {'id':32}  {'destination':62}  tries  next try  last error")
    for name, s in rows:
        wait = max(0, int(s.next_try - now))
        print(
            f"{name:8}  {s.id:32}  {s.destination:62}  {s.attempts:5}  {wait:>6} s  {s.last_error}"
        )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
