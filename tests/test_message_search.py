"""The folder search the TUI runs (onionmail.message.search.matching), on real files."""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path

from onionmail.message.search import matching


def write(folder: Path, name: str, subject: str, body: str, *, cte: str = "") -> str:
    msg = EmailMessage()
    msg["From"] = "Bob <bob@example.onion>"
    msg["Subject"] = subject
    msg.set_content(body, cte=cte or None)
    (folder / name).write_bytes(bytes(msg))
    return name


def test_matching_reads_fields_and_decoded_bodies_in_order_and_skips_vanished_files(
    tmp_path: Path,
) -> None:
    plain = write(tmp_path, "1", "Lunch plans", "see you at noon")
    encoded = write(tmp_path, "2", "Report", "Ünïcode résumé attached", cte="base64")
    subject = write(tmp_path, "3", "=?utf-8?q?R=C3=A9sum=C3=A9?=", "nothing here")
    keys = [plain, "gone", encoded, subject]  # "gone": listed, then deleted before the search
    assert matching(tmp_path, keys, "NOON") == [plain]
    assert matching(tmp_path, keys, "résumé") == [encoded, subject]
    assert matching(tmp_path, keys, "bob@example") == [plain, encoded, subject]
    assert matching(tmp_path, keys, "absent") == []
