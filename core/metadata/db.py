"""The SQLite database behind all metadata: connection, schema and migrations.

One file, `meta.db`, in WAL mode with foreign keys on and `synchronous=FULL`, so
a mutation that returned to its caller survives a crash of the engine or of the
node. Every mutation runs in exactly one `BEGIN IMMEDIATE` transaction opened by
`Database.tx()`; the schema carries a version, and `MIGRATIONS` brings an older
file forward in order, each step in its own transaction. Work whose loss in a
crash would only have to be redone (garbage collection's removals) may commit
under `deferred_sync` and make itself durable with `sync` from a worker thread,
so the event loop does not wait for the disk at each step.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

from core.errors import Internal

MIGRATIONS: list[str] = [
    # 1: namespaces, images, containers, leases, content ownership and ingests.
    """
    CREATE TABLE namespaces (
        name TEXT PRIMARY KEY,
        labels TEXT NOT NULL DEFAULT '{}',
        created_at INTEGER NOT NULL
    );
    CREATE TABLE images (
        namespace TEXT NOT NULL REFERENCES namespaces(name) ON DELETE RESTRICT,
        name TEXT NOT NULL,
        labels TEXT NOT NULL DEFAULT '{}',
        media_type TEXT NOT NULL,
        digest TEXT NOT NULL,
        size INTEGER NOT NULL,
        annotations TEXT NOT NULL DEFAULT '{}',
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (namespace, name)
    );
    CREATE TABLE containers (
        namespace TEXT NOT NULL REFERENCES namespaces(name) ON DELETE RESTRICT,
        id TEXT NOT NULL,
        labels TEXT NOT NULL DEFAULT '{}',
        image TEXT NOT NULL DEFAULT '',
        runtime_name TEXT NOT NULL,
        runtime_options_type TEXT,
        runtime_options BLOB,
        spec_type TEXT,
        spec BLOB,
        snapshotter TEXT NOT NULL DEFAULT '',
        snapshot_key TEXT NOT NULL DEFAULT '',
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (namespace, id)
    );
    CREATE TABLE container_extensions (
        namespace TEXT NOT NULL,
        container_id TEXT NOT NULL,
        name TEXT NOT NULL,
        type_url TEXT NOT NULL,
        value BLOB NOT NULL,
        PRIMARY KEY (namespace, container_id, name),
        FOREIGN KEY (namespace, container_id) REFERENCES containers(namespace, id)
            ON DELETE CASCADE
    );
    CREATE TABLE leases (
        namespace TEXT NOT NULL REFERENCES namespaces(name) ON DELETE RESTRICT,
        id TEXT NOT NULL,
        labels TEXT NOT NULL DEFAULT '{}',
        created_at INTEGER NOT NULL,
        PRIMARY KEY (namespace, id)
    );
    CREATE TABLE lease_resources (
        namespace TEXT NOT NULL,
        lease_id TEXT NOT NULL,
        type TEXT NOT NULL,
        resource_id TEXT NOT NULL,
        PRIMARY KEY (namespace, lease_id, type, resource_id),
        FOREIGN KEY (namespace, lease_id) REFERENCES leases(namespace, id) ON DELETE CASCADE
    );
    CREATE TABLE content (
        namespace TEXT NOT NULL REFERENCES namespaces(name) ON DELETE RESTRICT,
        digest TEXT NOT NULL,
        size INTEGER NOT NULL,
        labels TEXT NOT NULL DEFAULT '{}',
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (namespace, digest)
    );
    CREATE INDEX content_by_digest ON content(digest);
    CREATE TABLE ingests (
        namespace TEXT NOT NULL,
        ref TEXT NOT NULL,
        expected TEXT NOT NULL DEFAULT '',
        created_at INTEGER NOT NULL,
        PRIMARY KEY (namespace, ref)
    );
    """,
    # 2: snapshot records of every snapshotter; children point at their parent by id.
    """
    CREATE TABLE snapshots (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        namespace TEXT NOT NULL REFERENCES namespaces(name) ON DELETE RESTRICT,
        snapshotter TEXT NOT NULL,
        key TEXT NOT NULL,
        kind INTEGER NOT NULL,
        parent_id INTEGER REFERENCES snapshots(id) ON DELETE RESTRICT,
        labels TEXT NOT NULL DEFAULT '{}',
        directory TEXT NOT NULL,
        size INTEGER NOT NULL DEFAULT 0,
        inodes INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        UNIQUE (namespace, snapshotter, key)
    );
    CREATE INDEX snapshots_by_parent ON snapshots(parent_id);
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)
CHECKPOINT_EVERY = 64
"""Commits between the checkpoints `sync` makes.

A checkpoint that folds the whole log into the file makes the next commit start the
log afresh, and SQLite syncs a fresh log's header before that commit's own sync: a
client's write pays two. Checkpointing at every collection put that on the first
write of nearly every `ctr run`; 64 commits keep the log far below the 1,000 pages
at which a commit on the loop would checkpoint it itself.
"""


def now_us() -> int:
    """Microseconds since the epoch: the resolution betterproto keeps of a timestamp."""
    return time.time_ns() // 1000


def now_after(previous: int) -> int:
    """`now_us`, but later than `previous`: a record's update time is the key of its cached
    encoding, so two updates may not share one, whatever the clock does."""
    return max(now_us(), previous + 1)


def to_datetime(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1_000_000, tz=UTC).replace(microsecond=us % 1_000_000)


def dump_labels(labels: Mapping[str, str]) -> str:
    return json.dumps(dict(labels), separators=(",", ":"), sort_keys=True)


def load_labels(text: str) -> dict[str, str]:
    return json.loads(text) if text and text != "{}" else {}


class Database:
    """The open metadata database. Used from the event loop thread only."""

    def __init__(self, path: Path) -> None:
        _make_private(path)
        self.path = path
        self.conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, cached_statements=256
        )
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("PRAGMA foreign_keys=ON")
        self.conn.execute("PRAGMA busy_timeout=5000")
        self._depth = 0
        self.commits = 0
        """Commits on this connection, for `sync` to tell when a checkpoint is due."""
        self._last_commit = time.monotonic()
        self._checkpointed_at = 0
        self._migrate()
        self._content_changes = 0
        self._count_content_changes()

    def _migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise Internal(
                f"metadata database {self.path} has schema version {version}, newer than "
                f"this engine's {SCHEMA_VERSION}; refusing to touch it"
            )
        for number in range(version, SCHEMA_VERSION):
            with self.tx():
                for statement in _split(MIGRATIONS[number]):
                    self.conn.execute(statement)
                self.conn.execute(f"PRAGMA user_version={number + 1}")

    def _count_content_changes(self) -> None:
        """Count row changes of the content table, however they are made (see `content_generation`).

        TEMP triggers live on this connection only, which is the one every
        mutation runs on; they fire for each row, cascades and rolled-back
        statements included (a change undone only costs a cache a rebuild).
        """
        self.conn.create_function("ctrdeck_content_changed", 0, self._content_changed)
        for op in ("INSERT", "UPDATE", "DELETE"):
            self.conn.execute(
                f"CREATE TEMP TRIGGER content_{op.lower()} AFTER {op} ON main.content "
                "BEGIN SELECT ctrdeck_content_changed(); END"
            )

    def _content_changed(self) -> None:
        self._content_changes += 1

    @contextlib.contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; nested uses join the outer one."""
        if self._depth:
            self._depth += 1
            try:
                yield self.conn
            finally:
                self._depth -= 1
            return
        self.conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")
            self.commits += 1
            self._last_commit = time.monotonic()
        finally:
            self._depth = 0

    @contextlib.contextmanager
    def deferred_sync(self) -> Iterator[None]:
        """Commits inside neither fsync nor checkpoint; `sync` does both later, off the loop.

        Use it only around writes that a crash may undo, and never across an await:
        every other transaction must commit with `synchronous=FULL`.
        """
        checkpoint = self.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA wal_autocheckpoint=0")
        try:
            yield
        finally:
            self.conn.execute("PRAGMA synchronous=FULL")
            self.conn.execute(f"PRAGMA wal_autocheckpoint={int(checkpoint)}")

    def quiet_for(self) -> float:
        """Seconds since the last commit: how long no client (or pass) has written."""
        return time.monotonic() - self._last_commit

    def checkpoint_due(self) -> bool:
        """Whether CHECKPOINT_EVERY commits have come since `sync` last folded the log."""
        return self.commits - self._checkpointed_at >= CHECKPOINT_EVERY

    def sync(self) -> None:
        """Make every commit so far durable, now and then folding the log into the file; any thread.

        The fsync of the log is the durability; the checkpoint, on a connection of
        its own, only keeps the log short so no later commit on the loop has to,
        once CHECKPOINT_EVERY commits have come since the last.
        """
        try:
            fd = os.open(self.path.with_name(self.path.name + "-wal"), os.O_RDONLY)
        except FileNotFoundError:
            return  # no log: every commit is already in the database file
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        commits = self.commits
        if commits - self._checkpointed_at < CHECKPOINT_EVERY:
            return
        self._checkpointed_at = commits
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            conn.close()

    @property
    def generation(self) -> int:
        """A number that moves whenever a row changes: the key of caches of whole replies.

        It is SQLite's count of rows this connection has inserted, updated or
        deleted (cascades included). Every mutation runs on this connection, so
        an unchanged number means unchanged records; a change rolled back moves
        it too, which only costs a cache a rebuild.
        """
        return self.conn.total_changes

    @property
    def content_generation(self) -> int:
        """A number that moves whenever a row of the content table changes.

        What a namespace's blob looks like to a client (its ownership, size,
        labels, times) is that table's row alone, so replies built from it stay
        valid while leases, snapshots and containers are written around them.
        """
        return self._content_changes

    def close(self) -> None:
        self.conn.close()


def _make_private(path: Path) -> None:
    """The database's directory 0700 and its files 0600, before SQLite opens it.

    Container specs (and the secrets in their environments) live here. SQLite
    creates the -wal and -shm files with the database file's mode, so the
    file is made 0600 first; a database an older engine left is tightened.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(file, 0o600)


def _split(script: str) -> list[str]:
    # executescript() would commit our transaction, so statements run one by one.
    return [s.strip() for s in script.split(";") if s.strip()]
