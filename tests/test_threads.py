"""Threads from In-Reply-To and References: order, depth, collapsing, hostile chains."""

from __future__ import annotations

from onionmail.message.threads import Line, Threadable, collapse, referenced_ids, thread_lines


def m(row: str, refs: str = "") -> Threadable:
    """A message whose row and id are ``row``; ``refs`` names what it answers, oldest first."""
    return Threadable(row, row, tuple(refs.split()))


def shape(lines: list[Line]) -> list[tuple[str, int]]:
    return [(line.row, line.depth) for line in lines]


def test_referenced_ids_reads_references_then_in_reply_to() -> None:
    assert referenced_ids("<a@x> <b@x>", "<c@x>") == ("a@x", "b@x", "c@x")
    assert referenced_ids("<a@x>\r\n <b@x>", "<b@x> (comment)") == ("a@x", "b@x")
    assert referenced_ids("", "") == ()
    assert referenced_ids("no ids here", "") == ()


def test_a_conversation_reads_oldest_first_under_its_newest_message_position() -> None:
    # folder order, newest first: the second reply is the newest message of the folder
    folder = [m("r2", "root r1"), m("other"), m("r1", "root"), m("root")]
    lines = thread_lines(folder)
    assert shape(lines) == [("root", 0), ("r1", 1), ("r2", 2), ("other", 0)]
    assert {line.thread for line in lines[:3]} == {"root"}
    assert lines[0].size == 3 and lines[3].size == 1


def test_two_replies_to_one_message_are_siblings_oldest_first() -> None:
    folder = [m("b", "root"), m("a", "root"), m("root")]
    assert shape(thread_lines(folder)) == [("root", 0), ("a", 1), ("b", 1)]


def test_a_missing_message_in_the_chain_is_skipped_to_the_nearest_present() -> None:
    # r2 answers r1, which is not in this folder (archived): it hangs under the root
    folder = [m("r2", "root r1"), m("root")]
    assert shape(thread_lines(folder)) == [("root", 0), ("r2", 1)]
    # a reply to a message that is nowhere starts its own thread
    assert shape(thread_lines([m("lone", "gone@elsewhere")])) == [("lone", 0)]


def test_hostile_chains_neither_loop_nor_lose_a_message() -> None:
    folder = [m("a", "b"), m("b", "c"), m("c", "a"), m("self", "self")]
    lines = thread_lines(folder)
    # the loop a -> b -> c -> a is cut where it closes: c starts the thread
    assert shape(lines) == [("c", 0), ("b", 1), ("a", 2), ("self", 0)]


def test_collapsing_a_thread_leaves_its_first_message_counting_the_rest() -> None:
    folder = [m("r2", "root r1"), m("other"), m("r1", "root"), m("root")]
    lines = collapse(thread_lines(folder), {"root", "other"})
    assert [(line.row, line.hidden) for line in lines] == [("root", 2), ("other", 0)]
    assert collapse(thread_lines(folder), ()) == thread_lines(folder)


def test_flat_view_is_the_folder_order() -> None:
    folder = [m("r2", "root r1"), m("other"), m("r1", "root"), m("root")]
    assert shape(thread_lines(folder, threaded=False)) == [
        ("r2", 0),
        ("other", 0),
        ("r1", 0),
        ("root", 0),
    ]


def test_a_long_folder_threads_every_message_once() -> None:
    folder = [m(f"m{i}", f"m{i - 1}" if i % 10 else "") for i in range(9_999, -1, -1)]
    lines = thread_lines(folder)
    assert sorted(line.row for line in lines) == sorted(t.row for t in folder)
    assert sum(1 for line in lines if line.depth == 0) == 1_000
    assert max(line.depth for line in lines) == 9
