"""The replay cache: remembers delivered envelope ids durably, for a bounded time."""

from __future__ import annotations

import stat
import threading
import time
from pathlib import Path

import pytest

from onionmail.core.errors import OnionMailError
from onionmail.seal.envelope import MAX_ENVELOPE_AGE
from onionmail.store.replay_cache import ReplayCache, ReplayCacheError

NOW = 1_700_000_000.0
WINDOW = 3600


class Clock:
    """A settable clock for the cache's automatic pruning."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def open_cache(path: Path, clock: Clock | None = None) -> ReplayCache:
    return ReplayCache(path, WINDOW, clock=clock or Clock())


def eid(n: int) -> bytes:
    return n.to_bytes(16, "big")


def test_record_then_seen(tmp_path: Path) -> None:
    with open_cache(tmp_path / "replay.sqlite") as cache:
        assert not cache.seen(eid(1))
        cache.record(eid(1), int(NOW))
        assert cache.seen(eid(1))
        assert not cache.seen(eid(2))


def test_recording_twice_keeps_one_entry(tmp_path: Path) -> None:
    with open_cache(tmp_path / "replay.sqlite") as cache:
        cache.record(eid(1), int(NOW))
        cache.record(eid(1), int(NOW))
        assert len(cache) == 1


def test_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "replay.sqlite"
    with open_cache(path) as cache:
        cache.record(eid(7), int(NOW))
    with open_cache(path) as cache:
        assert cache.seen(eid(7))


def test_prune_drops_entries_older_than_the_window(tmp_path: Path) -> None:
    # Recorded ten minutes earlier, when all of them were still inside the window.
    with open_cache(tmp_path / "replay.sqlite", Clock(NOW - 600)) as cache:
        for age in (0, 100, WINDOW, WINDOW + 1, WINDOW + 500):
            cache.record(eid(age), int(NOW) - age)
        assert cache.prune(NOW) == 2
        assert cache.seen(eid(WINDOW))
        assert not cache.seen(eid(WINDOW + 1))
        assert cache.prune(NOW) == 0
        assert cache.prune(NOW + WINDOW + 1) == 3
        assert len(cache) == 0


def test_record_prunes_so_the_cache_stays_bounded(tmp_path: Path) -> None:
    clock = Clock()
    with open_cache(tmp_path / "replay.sqlite", clock) as cache:
        for n in range(50):
            clock.now = NOW + n * 600
            cache.record(eid(n), int(clock.now))
        # Only ids from the last hour remain: at most WINDOW / 600 + 1 of them.
        assert len(cache) == WINDOW // 600 + 1


def test_opening_prunes(tmp_path: Path) -> None:
    path = tmp_path / "replay.sqlite"
    with open_cache(path) as cache:
        cache.record(eid(1), int(NOW))
    with open_cache(path, Clock(NOW + WINDOW + 1)) as cache:
        assert not cache.seen(eid(1))


def test_default_window_matches_the_envelope_age() -> None:
    assert ReplayCache.__init__.__defaults__ == (MAX_ENVELOPE_AGE,)


def test_file_is_private(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    path = directory / "replay.sqlite"
    with open_cache(path) as cache:
        cache.record(eid(1), int(NOW))
        # the write-ahead log and its index, while open: the database's mode too
        files = {p.name: stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir()}
        assert files == {
            name: 0o600 for name in ("replay.sqlite", "replay.sqlite-wal", "replay.sqlite-shm")
        }
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_existing_loose_file_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "replay.sqlite"
    path.touch(mode=0o644)
    path.chmod(0o644)
    open_cache(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_concurrent_workers(tmp_path: Path) -> None:
    with open_cache(tmp_path / "replay.sqlite") as cache:

        def work(base: int) -> None:
            for n in range(base, base + 25):
                cache.record(eid(n), int(NOW))
                assert cache.seen(eid(n))

        threads = [threading.Thread(target=work, args=(i * 100,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(cache) == 100


def test_use_after_close_is_an_onionmail_error(tmp_path: Path) -> None:
    cache = open_cache(tmp_path / "replay.sqlite")
    cache.close()
    with pytest.raises(ReplayCacheError):
        cache.seen(eid(1))


def test_unreadable_database_is_an_onionmail_error(tmp_path: Path) -> None:
    path = tmp_path / "replay.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(OnionMailError, match="replay cache"):
        open_cache(path)


def test_begin_keeps_the_name_of_an_attempt_that_never_recorded(tmp_path: Path) -> None:
    envelope_id, now = b"\x01" * 16, int(time.time())
    with ReplayCache(tmp_path / "replay.sqlite") as cache:
        assert cache.begin(envelope_id, now, "first.onionmail") == ("first.onionmail", False)
    with ReplayCache(tmp_path / "replay.sqlite") as cache:  # after a crash: still there
        assert cache.begin(envelope_id, now, "second.onionmail") == ("first.onionmail", True)
        cache.record(envelope_id, now)
        assert cache.seen(envelope_id)
        assert cache.begin(envelope_id, now, "third.onionmail") == ("third.onionmail", False)
