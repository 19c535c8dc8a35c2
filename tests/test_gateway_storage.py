"""The gateway's storage on both engines: SQLite, and a real PostgreSQL shared by instances.

Each test runs on SQLite (a file per test) and on a database of its own in a
private PostgreSQL cluster (tests/postgres.py). "Two instances" are two
:class:`Database` objects with their own connections, as two gateway
processes have.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.outbound.sending_limits import SendingLimits
from gateway.registry import (
    APPROVED,
    DENIED,
    PENDING,
    BoxMailKeys,
    Registry,
    import_box_mail_keys_json,
)
from gateway.storage import Database, StoredReplay, import_registrations_json
from onionmail.core.errors import RegistrationError
from onionmail.gateway_link.protocol import RegistrationRequest, build_registration
from onionmail.seal.identity import Identity
from onionmail.seal.mail_key import MailKeyCertificate
from tests.postgres import PrivatePostgres, private_postgres

GATEWAY = Identity.generate().onion_address

Opener = Callable[[], Database]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivatePostgres]:
    with private_postgres(tmp_path_factory.mktemp("pg")) as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens another connection to this test's database, as another instance would."""
    if request.param == "sqlite":
        url = ""
    else:
        cluster: PrivatePostgres = request.getfixturevalue("cluster")
        url = cluster.create_database("t" + uuid.uuid4().hex[:12])
    opened: list[Database] = []

    def open_one() -> Database:
        opened.append(Database(url, tmp_path / "state"))
        return opened[-1]

    yield open_one
    for db in opened:
        db.close()


def request_for(
    alias: str, box: Identity | None = None, local: str = "alice"
) -> RegistrationRequest:
    box = box or Identity.generate()
    return build_registration(box, f"{local}@{box.onion_address}", GATEWAY, alias)


def test_the_schema_is_migrated_once(opener: Opener) -> None:
    first = opener()
    assert first.migrate() == 3
    with first.transaction() as db:
        assert sorted(db.execute("SELECT version FROM schema_version")) == [(1,), (2,), (3,)]
    assert opener().migrate() == 3  # a second instance finds it done


def test_registry_rules_hold_on_both_engines(opener: Opener) -> None:
    registry = Registry(opener())
    box = Identity.generate()
    request = request_for("alice", box)
    assert registry.request(request, require_approval=True).state == PENDING
    assert registry.request(request, require_approval=True).state == PENDING  # asked again
    with pytest.raises(RegistrationError, match="taken"):
        registry.request(request_for("alice"), require_approval=False)
    with pytest.raises(RegistrationError, match="already has"):
        registry.request(request_for("alice2", box), require_approval=False)
    for n in range(2):
        registry.request(request_for(f"more{n}", box, f"l{n}"), require_approval=False)
    with pytest.raises(RegistrationError, match="holds 3 aliases"):
        registry.request(request_for("fourth", box, "l9"), require_approval=False)
    other = Registry(opener())  # another instance, or the operator's command
    assert other.decide("alice", approve=True).state == APPROVED
    found = registry.get("ALICE")
    assert found is not None and found.state == APPROVED and found.box == request.box
    assert registry.by_box(request.box) == found
    renamed = other.rename("alice", "alicia")
    assert registry.get("alice") is None and registry.get("alicia") == renamed
    assert other.decide("alicia", approve=False).state == DENIED
    with pytest.raises(RegistrationError, match="denied"):
        registry.request(request_for("alicia", box), require_approval=False)
    other.remove("alicia")
    assert [e.alias for e in registry.all()] == ["more0", "more1"]


def test_two_instances_racing_for_one_alias_one_wins(opener: Opener) -> None:
    instances = [Registry(opener()) for _ in range(2)]
    outcomes: list[str] = []
    start = threading.Barrier(8)

    def ask(n: int) -> None:
        start.wait()
        try:
            instances[n % 2].request(request_for("contested"), require_approval=False)
            outcomes.append("won")
        except RegistrationError:
            outcomes.append("taken")

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes) == ["taken"] * 7 + ["won"]


def test_a_sending_limit_holds_across_instances(opener: Opener) -> None:
    def limits() -> SendingLimits:
        return SendingLimits(
            alias_messages_per_hour=5,
            alias_recipients_per_day=100,
            box_messages_per_hour=100,
            box_recipients_per_day=100,
            db=opener(),
        )

    one, two = limits(), limits()
    taken = [(one if n % 2 else two).take("alice", "box.onion", 1) for n in range(5)]
    assert taken == [None] * 5
    for instance in (one, two, limits()):  # the sixth, whichever instance gets it
        refusal = instance.take("alice", "box.onion", 1)
        assert refusal is not None and "at most 5 messages an hour from this alias" in refusal
    assert one.take("bob", "box.onion", 1) is None  # another alias has its own window


def test_an_older_registrations_json_is_moved_in_once(tmp_path: Path, opener: Opener) -> None:
    box = Identity.generate()
    old = tmp_path / "registrations.json"
    entry = {
        "alias": "carol",
        "box": f"carol@{box.onion_address}",
        "state": "approved",
        "requested": 1.0,
        "decided": 2.0,
        "request": "{}",
        "signature": "",
    }
    old.write_text(json.dumps({"registrations": [entry]}))
    db = opener()
    assert import_registrations_json(db, old) == 1
    assert not old.exists() and (tmp_path / "registrations.json.imported").exists()
    assert import_registrations_json(db, old) == 0
    found = Registry(db).get("carol")
    assert found is not None and found.state == APPROVED and found.decided == 2.0


def test_an_envelope_seen_by_one_instance_is_seen_by_all(opener: Opener) -> None:
    one, two = StoredReplay(opener(), 3600), StoredReplay(opener(), 3600)
    envelope = b"\x01" * 16
    assert not one.seen(envelope) and not two.seen(envelope)
    one.record(envelope, int(time.time()))
    two.record(envelope, int(time.time()))  # a retry recorded again: no error, one row
    assert two.seen(envelope)
    later = StoredReplay(opener(), 3600, clock=lambda: time.time() + 7200)  # two hours on
    new = b"\x02" * 16
    later.record(new, int(time.time()) + 7200)  # its first record prunes past the window
    assert not one.seen(envelope) and later.seen(new)


def test_a_box_mail_key_one_instance_saw_seals_at_every_instance(opener: Opener) -> None:
    """Clearnet mail for a box is sealed to the mail key the box last showed any instance;
    a certificate older than the one kept (shown late, elsewhere) never replaces it."""
    box = Identity.generate()
    now = time.time()
    one, two = BoxMailKeys(opener()), BoxMailKeys(opener())
    assert two.mail_key(box.onion_address, now) is None
    old_key, new_key = b"\x01" * 32, b"\x02" * 32
    old = MailKeyCertificate.issue(box, old_key, now - 3 * 86400).encode()
    new = MailKeyCertificate.issue(box, new_key, now).encode()
    one.learn(box.onion_address, old, now)
    assert two.mail_key(box.onion_address, now) == old_key
    two.learn(box.onion_address, new, now)
    one.learn(box.onion_address, old, now)  # the older one again, at the other instance
    assert one.mail_key(box.onion_address, now) == new_key
    forged = MailKeyCertificate.issue(Identity.generate(), b"\x03" * 32, now).encode()
    one.learn(box.onion_address, forged, now)  # not signed by the box: ignored
    assert two.mail_key(box.onion_address, now) == new_key


def test_an_older_box_mail_keys_json_is_moved_in_once(tmp_path: Path, opener: Opener) -> None:
    box = Identity.generate()
    certificate = MailKeyCertificate.issue(box, b"\x04" * 32, time.time()).encode()
    old = tmp_path / "box-mail-keys.json"
    old.write_text(json.dumps({box.onion_address: base64.b64encode(certificate).decode()}))
    keys = BoxMailKeys(opener())
    assert import_box_mail_keys_json(keys, old) == 1
    assert not old.exists() and (tmp_path / "box-mail-keys.json.imported").exists()
    assert import_box_mail_keys_json(keys, old) == 0
    assert keys.mail_key(box.onion_address, time.time()) == b"\x04" * 32
