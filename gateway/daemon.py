"""The gateway daemon: one identity, its tor and onion, two SMTP servers, two queues.

Layout of ``GWDIR`` (directories 0700, files 0600)::

    gateway.toml           configuration (gateway.config)
    keys/identity.key      the gateway's ed25519 identity: its onion address
    keys/mail-keys         its mail keys for the handshake seal (onionmail.seal.mail_key)
    keys/dkim/             DKIM keys (gateway.outbound.dkim_signing)
    state/gateway.sqlite   aliases -> boxes, sending-limit counters, envelope ids and
                           registration nonces seen, each box's mail key certificate as
                           last seen (gateway.storage; or the PostgreSQL database of
                           [storage] url)
    queue/clearnet/        box -> clearnet, encrypted at rest
    queue/boxes/           clearnet -> box: sealed to the box (and encrypted at rest)
    undeliverable/         notes on box-bound mail nobody could be told about (no content)
    operator/              mail for postmaster@, abuse@... (a Maildir), unless forwarded
    tor/                   the gateway's own tor, in launch mode
    instance/              an Onionbalance backend's own onion key ([onion] onionbalance_instance)
    run/box.lock           one running gateway per directory

Start-up follows the box's order (:mod:`onionmail.box.daemon`): queues recovered,
the onion-side server listening before the onion is published, the
clearnet server last, when the gateway can take responsibility for mail.
Everything the gateway reuses from the box is the box's own code: identity,
tor launch and onion publication (:class:`onionmail.tor.control.BoxTor`),
sealed envelopes, the durable queue, the delivery agent, the SMTP server
with its limits and anonymous banner.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.config import GatewayConfig, load_gateway_config, mta_sts_connect_target
from gateway.dns import GatewayResolver, ResolverConfig
from gateway.inbound.auth import check_message
from gateway.inbound.dmarc import DmarcVerdict
from gateway.inbound.mx import AuthenticationResults, ClearnetInboundHandler, RateLimit, Verdict
from gateway.inbound.operator_mail import forward_note
from gateway.inbound.undeliverable import SenderReports
from gateway.metrics import serve_metrics
from gateway.outbound.dkim_signing import DkimAlgorithm, DkimSigner, load_or_create_key
from gateway.outbound.mta_sts import FetchConfig, MtaSts
from gateway.outbound.onion_side import GatewayOnionHandler
from gateway.outbound.relay import (
    BounceToBox,
    ClearnetAgent,
    queue_for_boxes,
    undeliverable_maildir,
)
from gateway.outbound.sending_limits import SendingLimits
from gateway.outbound.smtp import SmtpTimeouts
from gateway.outbound.tls_policy import TlsPolicy
from gateway.registry import BoxMailKeys, Registry, import_box_mail_keys_json
from gateway.storage import StoredReplay, open_database
from onionmail.box.delivery import DeliveryAgent
from onionmail.core.files import ensure_private_dir, write_private_file
from onionmail.seal.envelope import MAX_ENVELOPE_AGE
from onionmail.seal.identity import Identity, derive_subkey
from onionmail.seal.mail_key import MailKeyring
from onionmail.smtp.server import server_port, start_smtp_server
from onionmail.store.lock import BoxLock
from onionmail.store.maildir import Maildir
from onionmail.store.queue import OutboundQueue
from onionmail.tor.control import BoxTor

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


class GatewayPaths:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.identity = root / "keys" / "identity.key"
        self.mail_keys = root / "keys" / "mail-keys"
        self.dkim = root / "keys" / "dkim"
        self.clearnet_queue = root / "queue" / "clearnet"
        self.box_queue = root / "queue" / "boxes"
        self.state = root / "state"
        self.tor = root / "tor"
        self.instance = root / "instance"
        self.operator = root / "operator"


def dkim_signer(config: GatewayConfig) -> DkimSigner:
    """The gateway's DKIM keys (one per algorithm), generated on first use."""
    paths = GatewayPaths(config.gateway_dir)
    return DkimSigner(
        [
            load_or_create_key(
                paths.dkim,
                domain=config.gateway.domain,
                selector=f"{config.gateway.dkim_selector}-{algorithm.key_type}",
                algorithm=algorithm,
            )
            for algorithm in DkimAlgorithm
        ]
    )


def _tls_context(config: GatewayConfig) -> ssl.SSLContext | None:
    if not config.smtp.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(config.smtp.tls_cert, config.smtp.tls_key)
    return context


class Gateway:
    """A running gateway. ``await start()``, then ``await stop()``."""

    def __init__(
        self,
        config: GatewayConfig,
        identity: Identity,
        *,
        testnet_options: dict[str, Any] | None = None,
        progress: Progress | None = None,
        authenticate: AuthenticationResults | None = None,
    ) -> None:
        self.config = config
        self.identity = identity
        self.paths = GatewayPaths(config.gateway_dir)
        self.progress = progress or (lambda _msg: None)
        self.authenticate = authenticate
        """SPF/DKIM/DMARC hook of the clearnet server (None: gateway.inbound.auth's checks)."""
        self._dns: GatewayResolver | None = None
        self.tor = BoxTor(config.tor, self.paths.tor, testnet_options or {})
        self.db = open_database(config)
        self.registry = Registry(self.db)
        ensure_private_dir(self.paths.state)
        ensure_private_dir(self.paths.mail_keys.parent)
        self.mail_keys = MailKeyring.open(self.paths.mail_keys, identity)
        """The gateway's own mail keys: its sessions with boxes use the handshake seal."""
        self.box_mail_keys = BoxMailKeys(self.db)
        import_box_mail_keys_json(self.box_mail_keys, self.paths.state / "box-mail-keys.json")
        self.clearnet_queue = OutboundQueue(
            self.paths.clearnet_queue, derive_subkey(identity.seed, b"om-gw-clearnet")
        )
        self.box_queue = OutboundQueue(
            self.paths.box_queue, derive_subkey(identity.seed, b"om-gw-boxes")
        )
        self.replay_cache: StoredReplay | None = None
        self.onion_server: asyncio.Server | None = None
        self.smtp_server: asyncio.Server | None = None
        self.onion_handler: GatewayOnionHandler | None = None
        self.smtp_handler: ClearnetInboundHandler | None = None
        self.box_agent: DeliveryAgent | None = None
        self.clearnet_agent: ClearnetAgent | None = None
        self.signer: DkimSigner | None = None
        self.sender_reports: SenderReports | None = None
        """Reports of box-bound mail that failed for good, to its clearnet sender."""
        self._tasks: list[asyncio.Task[None]] = []
        self._lock = BoxLock(config.gateway_dir)
        self.onion_port = 0
        self.instance_onion = ""
        """This instance's own onion when it is an Onionbalance backend (else empty)."""
        self.smtp_port = 0
        self.metrics_url = ""
        self.tls_context: ssl.SSLContext | None = None
        """The clearnet server's STARTTLS context: :meth:`reload_tls` loads a new
        certificate into it (SIGHUP), for the next handshake."""

    @property
    def onion(self) -> str:
        return self.identity.onion_address

    async def start(self) -> None:
        self._lock.acquire()
        for queue in (self.clearnet_queue, self.box_queue):
            await asyncio.to_thread(queue.recover)
        ensure_private_dir(self.paths.state)
        self.replay_cache = StoredReplay(self.db, MAX_ENVELOPE_AGE)
        signer = await asyncio.to_thread(dkim_signer, self.config)
        self.signer = signer
        await self._start_onion_side(signer)
        await self.tor.start(self.progress)
        if self.config.onion.onionbalance_instance:
            self.instance_onion = await self.tor.publish_instance(
                self.paths.instance, self.onion, self.onion_port, self.progress
            )
            self.progress(f"instance onion: {self.instance_onion}")
        else:
            await self.tor.publish(self.identity, self.onion_port, self.progress)
        self._start_agents()
        await self._start_clearnet_side()
        if self.config.metrics.listen:
            host, port = serve_metrics(self, self.config.metrics.listen)
            self.metrics_url = f"http://{host}:{port}/metrics"
        self._write_status()
        self.progress(f"gateway running: {self.onion} for {self.config.gateway.domain}")

    def _write_status(self) -> None:
        """``run/status.json``: what ``onionmail-gateway status`` shows of a running gateway."""
        smtp = f"{self.config.smtp.host}:{self.smtp_port}"
        status: dict[str, object] = {"onion": self.onion, "smtp": smtp, "started_at": time.time()}
        status["metrics"] = self.metrics_url
        if self.instance_onion:
            status["instance_onion"] = self.instance_onion
        ensure_private_dir(self.paths.root / "run")
        write_private_file(self.paths.root / "run" / "status.json", json.dumps(status).encode())

    async def _start_onion_side(self, signer: DkimSigner) -> None:
        assert self.replay_cache is not None
        settings = self.config.onion
        self.onion_handler = GatewayOnionHandler(
            identity=self.identity,
            domain=self.config.gateway.domain,
            registry=self.registry,
            replay_cache=self.replay_cache,
            signer=signer,
            queue_clearnet=self.queue_clearnet,
            require_approval=self.config.gateway.require_approval,
            max_recipients=settings.max_recipients,
            keep_display_name=self.config.gateway.keep_display_name,
            mail_keys=self.mail_keys,
            box_mail_keys=self.box_mail_keys,
            limits=SendingLimits(
                alias_messages_per_hour=settings.alias_messages_per_hour,
                alias_recipients_per_day=settings.alias_recipients_per_day,
                box_messages_per_hour=settings.box_messages_per_hour,
                box_recipients_per_day=settings.box_recipients_per_day,
                db=self.db,
            ),
            max_aliases_per_box=self.config.gateway.max_aliases_per_box,
        )
        self.onion_server = await start_smtp_server(
            self.onion_handler,
            "127.0.0.1",
            0,
            name="gateway onion",
            hostname=self.onion,
            data_size_limit=int(settings.max_message_size * 1.45) + 65536,  # sealed: base64
            **settings.listener_options(),
        )
        self.onion_port = server_port(self.onion_server)

    def reload_tls(self) -> bool:
        """Load ``[smtp] tls_cert``/``tls_key`` again into the context the server uses
        (a renewed certificate): sessions in progress go on, the next STARTTLS gets it.
        False, and the old certificate kept, when the files do not load."""
        smtp = load_gateway_config(self.config.gateway_dir).smtp
        if self.tls_context is None or not smtp.tls_cert:
            log.warning("no STARTTLS configured when the gateway started: restart it to offer TLS")
            return False
        try:
            self.tls_context.load_cert_chain(smtp.tls_cert, smtp.tls_key)
        except (OSError, ssl.SSLError) as exc:
            log.error("the certificate did not load (%s); the old one stays", exc)
            return False
        log.info("certificate reloaded for STARTTLS")
        return True

    async def _start_clearnet_side(self) -> None:
        settings = self.config.smtp
        self.tls_context = _tls_context(self.config)
        self.smtp_handler = ClearnetInboundHandler(
            domain=self.config.gateway.domain,
            registry=self.registry,
            seal_and_queue=self.seal_and_queue,
            max_recipients=settings.max_recipients,
            rate_limit=RateLimit(
                settings.rate_limit, settings.rate_window, allow=settings.rate_allow
            ),
            enforce_dmarc=settings.enforce_dmarc,
            authenticate=self.authenticate or self._authentication_results,
            operator_mail=self._operator_mail,
        )
        self.smtp_server = await start_smtp_server(
            self.smtp_handler,
            settings.host,
            settings.port,
            name="gateway smtp",
            hostname=self.config.gateway.domain,
            data_size_limit=settings.max_message_size,
            tls_context=self.tls_context,
            **settings.listener_options(),
        )
        self.smtp_port = server_port(self.smtp_server)

    async def _operator_mail(self, message: bytes, recipients: list[str]) -> None:
        """Mail for postmaster@, abuse@...: kept in ``GWDIR/operator``, or forwarded
        (:mod:`gateway.inbound.operator_mail`); durable before the ``250``."""
        forward = self.config.gateway.operator_forward
        if not forward:
            folder = Maildir(self.paths.operator)
            await asyncio.to_thread(folder.deliver, message.replace(b"\r\n", b"\n"))
            return
        assert self.signer is not None  # made by start() before the servers
        note = forward_note(
            message, domain=self.config.gateway.domain, to=forward, recipients=recipients
        )
        await self.queue_clearnet("", [forward], await asyncio.to_thread(self.signer.sign, note))

    async def _authentication_results(self, session: Any, envelope: Any, data: bytes) -> Verdict:
        """SPF, DKIM and DMARC of a clearnet message, checked through the gateway's resolver.

        The header goes inside the seal with the message; the DMARC policy of a message
        that fails it is acted on by the MX (``[smtp] enforce_dmarc``).
        """
        peer = getattr(session, "peer", None)
        client_ip = peer[0] if isinstance(peer, tuple) and peer else ""
        results = await check_message(
            authserv_id=self.config.gateway.domain,
            client_ip=str(client_ip),
            helo=str(getattr(session, "host_name", "") or ""),
            mail_from="" if envelope.mail_from == "<>" else str(envelope.mail_from or ""),
            message=data,
            resolver=self._resolver(),
        )
        dmarc = results.dmarc
        failed = (dmarc.applied_policy or "") if dmarc.verdict == DmarcVerdict.FAIL else ""
        return Verdict(results.header_value().encode("utf-8", "surrogateescape"), failed)

    def _resolver(self) -> GatewayResolver:
        if self._dns is None:
            dns = self.config.dns
            self._dns = GatewayResolver(ResolverConfig(dns.resolver, dns.port, dns.timeout))
        return self._dns

    def _start_agents(self) -> None:
        self.box_agent = DeliveryAgent(
            queue=self.box_queue,
            identity=self.identity,
            settings=self.config.delivery,
            socks_address=lambda: self.tor.socks_address,
            socks_timeout=self.config.tor.socks_timeout,
            sender_maildir=undeliverable_maildir(self.config.gateway_dir),
            mail_keys=self.mail_keys,
        )
        self.box_agent.on_peer_certificate = self._learn_box_key
        assert self.signer is not None  # made by start() before the agents
        self.sender_reports = SenderReports(
            domain=self.config.gateway.domain,
            sign=self.signer.sign,
            queue_report=lambda to, report: self.queue_clearnet("", [to], report),
        )
        self.box_agent.report_failure = self.sender_reports
        # A box that does not seal is no onionmail box: never hand it the inner envelope.
        self.box_agent.plain_refusal = lambda _rcpt: "the peer is not an onionmail box"
        resolver = self._resolver()
        ca_file = self.config.outbound.ca_file or None
        targets = map(mta_sts_connect_target, self.config.outbound.mta_sts_connect_to)
        connect_to = dict(target for target in targets if target is not None)
        mta_sts = (
            MtaSts(
                resolver,
                FetchConfig(ca_file=ca_file, connect_to=connect_to),
                allow_private_hosts=self.config.outbound.allow_private_mx,
            )
            if self.config.outbound.mta_sts
            else None
        )
        out = self.config.outbound
        self.clearnet_agent = ClearnetAgent(
            queue=self.clearnet_queue,
            identity=self.identity,
            settings=self.config.delivery,
            sender_maildir=self._bounce_to_box,
            policy=TlsPolicy(resolver, mta_sts, ca_file=ca_file),
            resolver=resolver,
            local_hostname=self.config.gateway.domain,
            mx_port=out.mx_port,
            allow_private_mx=out.allow_private_mx,
            registry=self.registry,
            timeouts=SmtpTimeouts(
                connect=out.connect_timeout, command=out.command_timeout, data=out.data_timeout
            ),
        )
        for agent in (self.box_agent, self.clearnet_agent):
            self._tasks.append(asyncio.create_task(agent.run()))

    def _bounce_to_box(self, alias: str) -> Maildir:
        loop = asyncio.get_running_loop()
        agent = self.box_agent

        def wake() -> None:
            if agent is not None:
                loop.call_soon_threadsafe(agent.wake)

        return BounceToBox(
            alias,
            registry=self.registry,
            queue=self.box_queue,
            identity=self.identity,
            wake=wake,
            mail_key_for=self._box_mail_key,
        )

    async def queue_clearnet(self, alias: str, recipients: list[str], message: bytes) -> list[str]:
        """Queue a signed message from ``alias`` durably, one entry per recipient domain
        (``alias`` empty: a report, sent with a null reverse path)."""
        by_domain: dict[str, list[str]] = {}
        for rcpt in recipients:
            by_domain.setdefault(rcpt.rsplit("@", 1)[1], []).append(rcpt)
        ids = []
        for domain, rcpts in by_domain.items():
            entry = await asyncio.to_thread(
                self.clearnet_queue.enqueue, domain, alias, tuple(rcpts), message
            )
            ids.append(entry.id)
        if self.clearnet_agent is not None:
            self.clearnet_agent.wake()
        return ids

    def _box_mail_key(self, onion: str) -> bytes | None:
        return self.box_mail_keys.mail_key(onion, time.time())

    def _learn_box_key(self, onion: str, certificate: bytes) -> None:
        self.box_mail_keys.learn(onion, certificate, time.time())

    async def seal_and_queue(
        self, sender: str, boxes: list[str], message: bytes, aliases: list[str]
    ) -> list[str]:
        """Seal clearnet mail to its boxes, then queue the ciphertext (never the plaintext)
        with where a failure is reported: ``sender``, naming the ``aliases``."""
        ids = await asyncio.to_thread(
            queue_for_boxes,
            self.box_queue,
            self.identity,
            mail_from=sender,
            boxes=boxes,
            message=message,
            mail_key_for=self._box_mail_key,
            aliases=aliases,
        )
        if self.box_agent is not None:
            self.box_agent.wake()
        return ids

    async def flush(self) -> int:
        """Retry every message of both queues now; returns how many were waiting."""
        count = 0
        for agent in (self.box_agent, self.clearnet_agent):
            if agent is not None:
                count += await agent.flush()
        return count

    async def stop(self) -> None:
        if not self._lock.held:
            return
        for server in (self.smtp_server, self.onion_server):
            if server is not None:
                server.close()
        for handler in (self.smtp_handler, self.onion_handler):
            if handler is not None:
                await handler.drain()
        for agent in (self.box_agent, self.clearnet_agent):
            if agent is not None:
                await agent.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.tor.stop()
        if self.replay_cache is not None:
            self.replay_cache.close()
        await asyncio.to_thread(self.db.close)
        self._lock.release()
