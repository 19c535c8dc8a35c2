"""Shared fixtures: the private Tor network, started once per test session.

The network is real (tor processes on 127.0.0.1). A missing ``tor`` or
``tor-gencert`` fails the tests that need it; it never skips them.
"""

from __future__ import annotations

import atexit
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from onionmail.core.errors import TestnetError
from onionmail.tor.testnet.network import (
    TestnetState,
    require_tor_tools,
    start_testnet,
    stop_testnet,
)
from tests.smtp_client import RawSMTP

log = logging.getLogger(__name__)

TESTNET_TIMEOUT = 90.0


def _stop_quietly(directory: Path) -> None:
    """atexit fallback: stop the network if the fixture's teardown never ran."""
    try:
        stop_testnet(directory)
    except TestnetError as exc:
        log.error("could not stop the private Tor network in %s: %s", directory, exc)


@pytest.fixture(scope="session")
def testnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestnetState]:
    """A running private Tor network (3 authorities, 3 relays); stopped after the session."""
    try:
        require_tor_tools()
    except TestnetError as exc:
        pytest.fail(f"{exc}; the tor tests need it", pytrace=False)
    directory = tmp_path_factory.mktemp("testnet")
    atexit.register(_stop_quietly, directory)
    try:
        yield start_testnet(directory, take_ownership=True, timeout=TESTNET_TIMEOUT)
    finally:
        stop_testnet(directory)
        atexit.unregister(_stop_quietly)


@pytest.fixture(autouse=True)
async def raw_smtp_cleanup() -> AsyncIterator[None]:
    """Close every :class:`RawSMTP` client a test left open."""
    yield
    await RawSMTP.close_all()
