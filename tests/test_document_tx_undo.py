""":meth:`DocumentTx.undo` takes back every write and cache tag since
:meth:`DocumentTx.undoable` (a new document, a change of one read with ``get``, a delete, a
write over the batch's own write or delete, a collection the batch had not written), leaving
the batch's earlier writes as they were and in their order; after a flush (a ``find``'s) that
sent some of them it takes nothing back, after one that sent the batch's earlier writes alone
it takes them all back (a MongoDB-wire server)."""

from __future__ import annotations

from collections.abc import Callable

from projections.mongo_store import MongoStore
from projections.mongo_tx import DocumentTx


def test_undo_takes_back_a_handlers_writes_and_tags_keeping_the_batchs(
    mongo_database: Callable[[], str],
) -> None:
    store = MongoStore(mongo_database())
    database = store.database
    database["undo_docs"].insert_many([{"_id": k, "n": n} for k, n in (("a", 1), ("b", 2))])
    collections = {"undo_docs": "undo_docs", "other": "other"}
    try:
        with store.transaction() as session:
            tx = DocumentTx(database, session, collections)
            assert not tx.undo()  # nothing to take back from
            tx.upsert("undo_docs", {"_id": "w1", "n": 10})  # the batch's own, before
            tx.delete("undo_docs", "c")
            tx.upsert("undo_docs", {"_id": "w2", "n": 20})
            tx.invalidate("kept")
            tx.undoable()  # a handler that fails:
            tx.upsert("undo_docs", {"_id": "new", "n": 0})  # a new document
            b = tx.get("undo_docs", "b")
            assert b is not None
            tx.upsert("undo_docs", {**b, "n": b["n"] + 1000})  # another one, read
            tx.delete("undo_docs", "a")  # a delete
            tx.upsert("undo_docs", {"_id": "w1", "n": 11})  # over the batch's write
            tx.upsert("undo_docs", {"_id": "c", "n": 33})  # over the batch's delete
            tx.delete("undo_docs", "w2")
            tx.upsert("undo_docs", {"_id": "new", "n": 1})  # twice
            tx.upsert("other", {"_id": "x"})  # a collection the batch had not written
            tx.invalidate("kept", "boom")
            assert tx.undo()
            got = {k: tx.get("undo_docs", k) for k in ("a", "b", "c", "new", "w1", "w2")}
            assert got == {
                "a": {"_id": "a", "n": 1},
                "b": {"_id": "b", "n": 2},
                "c": None,
                "new": None,
                "w1": {"_id": "w1", "n": 10},
                "w2": {"_id": "w2", "n": 20},
            }
            assert tx.get("other", "x") is None
            assert tx.invalidated == {"kept"}
            assert not tx.undo()  # taken back once
            writes = tx._pending  # in the order they were first made, as before
            assert list(writes) == ["undo_docs"]
            assert [key for key, _, _ in writes["undo_docs"].values()] == ["w1", "c", "w2"]
            tx.undoable()  # a handler whose find sends the batch's writes, none of its own
            assert tx.find("undo_docs", n=20) == [{"_id": "w2", "n": 20}]
            tx.upsert("undo_docs", {"_id": "w2", "n": 21})
            tx.upsert("undo_docs", {"_id": "gone", "n": 0})
            tx.invalidate("found")
            assert tx.undo()  # still taken back
            assert tx.get("undo_docs", "w2") == {"_id": "w2", "n": 20}
            assert tx.get("undo_docs", "gone") is None
            assert "found" not in tx.invalidated and tx._pending == {}
            tx.undoable()  # a handler whose find sends its writes: not taken back
            tx.upsert("undo_docs", {"_id": "sent", "n": 5})
            assert tx.find("undo_docs", n=5) == [{"_id": "sent", "n": 5}]
            tx.invalidate("late")
            assert not tx.undo()
            assert tx.get("undo_docs", "sent") == {"_id": "sent", "n": 5}
            assert "late" in tx.invalidated
            tx.settle()
            tx.flush()
        found = {d["_id"]: d["n"] for d in database["undo_docs"].find()}
        assert found == {"a": 1, "b": 2, "w1": 10, "w2": 20, "sent": 5}
        assert list(database["other"].find()) == []
    finally:
        store.close()
