"""`Database.sync`: every commit durable, and a checkpoint only every CHECKPOINT_EVERY commits.

A checkpoint that empties the log makes the next commit start a fresh log, whose
header SQLite syncs before the commit's own sync; `sync` runs after every
collection, so it checkpoints only once enough commits have gathered. Whether it
did shows in the log's length after one more commit: a fresh log holds that
commit's frames only. Real SQLite in a temporary directory.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from core.metadata import Metadata
from core.metadata import db as dbmod

NS = "default"


def lease_writes(md: Metadata, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        md.leases.create(NS, f"l{i}", {})


def frames_in_log(path: Path) -> int:
    """Frames the log holds since it last started afresh (read with a checkpoint)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        return int(conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])
    finally:
        conn.close()


@pytest.mark.parametrize("commits", [10, dbmod.CHECKPOINT_EVERY])
def test_sync_checkpoints_only_every_so_many_commits(tmp_path: Path, commits: int) -> None:
    md = Metadata(tmp_path / "meta.db")
    try:
        lease_writes(md, commits)  # after the schema's own two commits
        md.db.sync()
        lease_writes(md, 1, start=commits)
        frames = frames_in_log(md.db.path)
        if commits < dbmod.CHECKPOINT_EVERY:
            assert frames >= commits  # the log went on: no checkpoint emptied it
        else:
            assert 0 < frames < 10  # the one commit after the checkpoint
        assert len(md.leases.list(NS)) == commits + 1
    finally:
        md.close()
    reopened = Metadata(tmp_path / "meta.db")
    try:
        assert len(reopened.leases.list(NS)) == commits + 1
    finally:
        reopened.close()


def test_quiet_for_counts_from_the_last_commit_and_reads_do_not_reset_it(tmp_path: Path) -> None:
    """What the collector waits on: a commit makes the database busy again, a read not."""
    md = Metadata(tmp_path / "meta.db")
    try:
        lease_writes(md, 1)
        after_write = md.db.quiet_for()
        md.leases.list(NS)
        after_read = md.db.quiet_for()
        assert after_read >= after_write
        before_write = time.monotonic()
        lease_writes(md, 1, start=1)
        assert md.db.quiet_for() <= time.monotonic() - before_write
    finally:
        md.close()
