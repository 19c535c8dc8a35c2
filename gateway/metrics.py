"""The gateway's metrics, for Prometheus, on loopback only: counts and depths, never an address.

``[metrics] listen = "127.0.0.1:9464"`` serves ``/metrics`` (the Prometheus
text format, ``prometheus-client``'s own HTTP server in a thread); empty
(the default) serves nothing. Every value is read from the running gateway
when scraped:

* ``onionmail_gateway_clearnet_accepted_total``: clearnet messages accepted
  for boxes (sealed and queued);
* ``onionmail_gateway_refused_total{side, reason}``: replies that refused
  something, by side (``clearnet``, ``onion``) and reason (``rate_limit``,
  ``dmarc_reject``, ``unknown_recipient``, ``sending_limit`` ...);
* ``onionmail_gateway_relayed_total``: boxes' messages queued for the
  clearnet; ``onionmail_gateway_registrations_total``: requests recorded;
* ``onionmail_gateway_clearnet_deliveries_total{tls}``: deliveries to
  clearnet MX hosts by how the session was protected (``tls-authenticated``,
  ``dane``, ``plaintext`` ...); ``onionmail_gateway_box_deliveries_total``;
  ``onionmail_gateway_sender_reports_total``: reports to clearnet senders;
* ``onionmail_gateway_queue_messages{queue}``: depth of ``boxes`` and
  ``clearnet``; ``onionmail_gateway_aliases{state}``: registrations by state.

Labels hold only the fixed words above: no alias, address, domain or IP
can become a label (a metrics endpoint is an observer too).
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.config import parse_listen

if TYPE_CHECKING:
    from gateway.daemon import Gateway


class GatewayCollector(Collector):
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def collect(self) -> Iterator[Any]:
        g = self.gateway
        prefix = "onionmail_gateway_"
        accepted = g.smtp_handler.accepted if g.smtp_handler else 0
        yield CounterMetricFamily(
            prefix + "clearnet_accepted", "Clearnet messages accepted for boxes", accepted
        )
        refused = CounterMetricFamily(
            prefix + "refused", "Replies that refused something", labels=["side", "reason"]
        )
        for side, handler in (("clearnet", g.smtp_handler), ("onion", g.onion_handler)):
            if handler is not None:
                for reason, count in sorted(handler.refused.counts.items()):
                    refused.add_metric([side, reason], count)
        yield refused
        onion = g.onion_handler
        yield CounterMetricFamily(
            prefix + "relayed", "Boxes' messages queued for the clearnet",
            onion.relayed if onion else 0,
        )  # fmt: skip
        yield CounterMetricFamily(
            prefix + "registrations", "Registration requests recorded",
            onion.registrations if onion else 0,
        )  # fmt: skip
        by_tls = CounterMetricFamily(
            prefix + "clearnet_deliveries", "Deliveries to clearnet MX hosts", labels=["tls"]
        )
        if g.clearnet_agent is not None:
            for mode, count in sorted(g.clearnet_agent.deliveries_by_tls.items()):
                by_tls.add_metric([mode], count)
        yield by_tls
        yield CounterMetricFamily(
            prefix + "box_deliveries", "Clearnet messages delivered to boxes",
            len(g.box_agent.reports) if g.box_agent else 0,
        )  # fmt: skip
        yield CounterMetricFamily(
            prefix + "sender_reports", "Reports to clearnet senders of mail no box took",
            g.sender_reports.sent if g.sender_reports else 0,
        )  # fmt: skip
        depth = GaugeMetricFamily(prefix + "queue_messages", "Messages queued", labels=["queue"])
        for name, queue in (("boxes", g.box_queue), ("clearnet", g.clearnet_queue)):
            depth.add_metric([name], len(queue.states()))
        yield depth
        aliases = GaugeMetricFamily(prefix + "aliases", "Registrations", labels=["state"])
        states = collections.Counter(entry.state for entry in g.registry.all())
        for state in ("approved", "pending", "denied"):
            aliases.add_metric([state], states[state])
        yield aliases


def serve_metrics(gateway: Gateway, listen: str) -> tuple[str, int]:
    """Serve ``/metrics`` of ``gateway`` on ``listen`` (``HOST:PORT``, loopback); the
    address and port it listens on (port 0 picks one)."""
    host, port = parse_listen(listen)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(gateway))
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return host, int(server.server_address[1])
