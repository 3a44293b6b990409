"""The catalog of the nightly service: which sets were processed, how, and what was published.

An SQLite database in WAL mode (``<state>/catalog.sqlite``): every change is one
transaction, so the state survives a crash or a kill at any point, and readers
(``rmm nightly --status``, notebooks) never block the writer. It belongs on a local
disk: WAL needs shared memory between the processes that open it.

Tables:

* ``sets``: one row per calibration set (unique per detector and key: its runs and the
  digest of their files' fingerprints, see discover.py): runs, inputs (the fingerprints:
  every file's name, size, modification time, inode and ctime), status (``running``,
  ``published``, ``held``, ``failed``, ``interrupted``; ``superseded``: not published, and
  its runs changed since, so it is masked again as another set), attempts, version, store,
  parameters, software, host/pid, start/end, seconds, counts and the message;
* ``events``: what happened, in order (claimed, published, held, failed, interrupted,
  superseded, current switched, rebuilt: a set recorded again from its published version
  after the catalog was lost, see recover.py; inputs: the fingerprints recorded for a set
  made before rmm-dask recorded them);
* ``pointers``: the version ``current`` points to, per detector;
* ``runs``: what the service saw of each run at its last pass: the digest of its files'
  names, sizes and modification times and since when (a run whose files changed between
  passes waits ``settle`` from the pass that saw it), and the digest of the files the
  reader last opened without complaint (not opened again until they change);
* ``decisions``: an operator's release of a held version or hold of a published one
  (``rmm nightly --release/--hold NAME/vNNNN --reason TEXT``, decide.py): who, when, why,
  and where ``current`` pointed before and after.

A catalog of an earlier rmm-dask (no ``inputs`` column, no ``runs`` table) is brought up
to date when it is opened for writing.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import sqlite3
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS sets (
    id          INTEGER PRIMARY KEY,
    detector    TEXT NOT NULL,
    key         TEXT NOT NULL,
    runs        TEXT NOT NULL,
    status      TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    version     INTEGER,
    store       TEXT,
    parameters  TEXT,
    software    TEXT,
    host        TEXT,
    pid         INTEGER,
    discovered  TEXT NOT NULL,
    started     TEXT,
    finished    TEXT,
    seconds     REAL,
    bad_fraction REAL,
    newly_bad   INTEGER,
    recovered   INTEGER,
    message     TEXT,
    inputs      TEXT,
    UNIQUE (detector, key),
    UNIQUE (detector, version)
);
CREATE TABLE IF NOT EXISTS events (
    id      INTEGER PRIMARY KEY,
    set_id  INTEGER REFERENCES sets(id),
    detector TEXT NOT NULL,
    time    TEXT NOT NULL,
    event   TEXT NOT NULL,
    detail  TEXT
);
CREATE TABLE IF NOT EXISTS pointers (
    detector TEXT PRIMARY KEY,
    version  INTEGER NOT NULL,
    switched TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    detector TEXT NOT NULL,
    path     TEXT NOT NULL,
    listing  TEXT NOT NULL,
    since    REAL NOT NULL,
    changed  INTEGER NOT NULL,
    opened   TEXT,
    PRIMARY KEY (detector, path)
);
CREATE TABLE IF NOT EXISTS decisions (
    id       INTEGER PRIMARY KEY,
    set_id   INTEGER REFERENCES sets(id),
    detector TEXT NOT NULL,
    version  INTEGER NOT NULL,
    action   TEXT NOT NULL,
    user     TEXT NOT NULL,
    time     TEXT NOT NULL,
    reason   TEXT NOT NULL,
    current_before INTEGER,
    current_after  INTEGER
);
"""

#: statuses after which a set is not processed again
DONE = ("published", "held", "superseded")


def version_label(version: int) -> str:
    return f"v{version:04d}"


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


class Catalog:
    """The catalog database; ``readonly`` opens an existing one without changing anything."""

    def __init__(self, path: str | os.PathLike, *, readonly: bool = False):
        self.path = Path(path)
        if readonly:
            self.db = _connect_readonly(self.path)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            try:
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=FULL")
                self.db.executescript(SCHEMA)
                _migrate(self.db)
            except sqlite3.DatabaseError:  # not a database (or a damaged one): the caller decides
                self.db.close()
                raise
        self.db.row_factory = sqlite3.Row

    @classmethod
    def in_memory(cls, source: Catalog | None = None) -> Catalog:
        """A scratch catalog in memory (a copy of ``source``, or empty): what --dry-run may change."""
        self = cls.__new__(cls)
        self.path = Path(":memory:")
        self.db = sqlite3.connect(":memory:", isolation_level=None)
        if source is not None:
            source.db.backup(self.db)
        self.db.executescript(SCHEMA)
        _migrate(self.db)
        self.db.row_factory = sqlite3.Row
        return self

    def verify(self) -> None:
        """Raise sqlite3.DatabaseError unless SQLite finds the file sound and it holds our tables."""
        problems = [r[0] for r in self.db.execute("PRAGMA quick_check").fetchall()]
        if problems != ["ok"]:
            raise sqlite3.DatabaseError("; ".join(problems[:3]))
        for table in ("sets", "events", "pointers"):
            self.db.execute(f"SELECT * FROM {table} LIMIT 1").fetchall()

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------ reading

    def get(self, detector: str, key: str) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM sets WHERE detector = ? AND key = ?", (detector, key)).fetchone()

    def sets(self, detector: str | None = None) -> list[sqlite3.Row]:
        if detector is None:
            return self.db.execute("SELECT * FROM sets ORDER BY id").fetchall()
        return self.db.execute("SELECT * FROM sets WHERE detector = ? ORDER BY id", (detector,)).fetchall()

    def events(self, detector: str | None = None) -> list[sqlite3.Row]:
        sql, args = "SELECT * FROM events", ()
        if detector is not None:
            sql, args = sql + " WHERE detector = ?", (detector,)
        return self.db.execute(sql + " ORDER BY id", args).fetchall()

    def pointer(self, detector: str) -> int | None:
        row = self.db.execute("SELECT version FROM pointers WHERE detector = ?", (detector,)).fetchone()
        return None if row is None else row["version"]

    def of_runs(self, detector: str, runs: dict) -> list[sqlite3.Row]:
        """Every set of ``detector`` made of these runs (whatever their files were), newest version first."""
        return [r for r in reversed(self.sets(detector)) if json.loads(r["runs"]) == runs]

    def of_darks(self, detector: str, runs: dict) -> list[sqlite3.Row]:
        """Every set of ``detector`` made of the same dark runs as ``runs`` (whatever its flat), newest first."""
        def darks(r: dict) -> dict:
            return {role: path for role, path in r.items() if role != "flat"}

        return [r for r in reversed(self.sets(detector)) if darks(json.loads(r["runs"])) == darks(runs)]

    def of_version(self, detector: str, version: int) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM sets WHERE detector = ? AND version = ?", (detector, version)).fetchone()

    def decisions(self, detector: str | None = None) -> list[sqlite3.Row]:
        """The operators' releases and holds, in order (none in a catalog of an earlier rmm-dask opened read-only)."""
        tables = "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'decisions'"
        if self.db.execute(tables).fetchone() is None:
            return []
        sql, args = "SELECT * FROM decisions", ()
        if detector is not None:
            sql, args = sql + " WHERE detector = ?", (detector,)
        return self.db.execute(sql + " ORDER BY id", args).fetchall()

    def opened(self, detector: str, path: str) -> str | None:
        """The digest of the run's files when the reader last opened them without complaint, or None."""
        row = self.db.execute("SELECT opened FROM runs WHERE detector = ? AND path = ?", (detector, path)).fetchone()
        return None if row is None else row["opened"]

    # ------------------------------------------------------------------ writing

    def claim(self, detector: str, key: str, runs: dict, *, parameters: dict, software: str, floor: int = 0,
              inputs: dict | None = None) -> sqlite3.Row:
        """Mark a set running (a new row, or the next attempt of an earlier one) and give it a version.

        The version is the detector's next free number the first time (above ``floor``, the
        highest version directory on disk), and kept on later attempts, so a re-run after a
        crash publishes under the same number. ``inputs``: the fingerprints of its runs' files.
        """
        with self._transaction():
            row = self.get(detector, key)
            started = now()
            if row is None:
                (version,) = self.db.execute("SELECT MAX(COALESCE(MAX(version), 0), ?) + 1 FROM sets WHERE detector = ?", (floor, detector)).fetchone()
                self.db.execute(
                    "INSERT INTO sets (detector, key, runs, status, attempts, version, discovered, inputs)"
                    " VALUES (?, ?, ?, 'new', 0, ?, ?, ?)",
                    (detector, key, json.dumps(runs), version, started, None if inputs is None else json.dumps(inputs)),
                )
                row = self.get(detector, key)
            self.db.execute(
                "UPDATE sets SET status = 'running', attempts = attempts + 1, parameters = ?, software = ?, host = ?, pid = ?,"
                " started = ?, finished = NULL, seconds = NULL, message = NULL WHERE id = ?",
                (json.dumps(parameters), software, socket.gethostname(), os.getpid(), started, row["id"]),
            )
            self._event(row["id"], detector, "claimed", f"attempt {row['attempts'] + 1}, version {row['version']}")
        return self.get(detector, key)

    def finish(self, set_id: int, status: str, *, message: str | None = None, **fields) -> None:
        """Record the outcome of an attempt (``fields``: store, seconds, bad_fraction, newly_bad, recovered)."""
        allowed = {"store", "seconds", "bad_fraction", "newly_bad", "recovered"}
        if set(fields) - allowed:
            raise ValueError(f"unknown fields {sorted(set(fields) - allowed)}")
        cols = "".join(f", {k} = ?" for k in fields)
        with self._transaction():
            self.db.execute(
                f"UPDATE sets SET status = ?, finished = ?, message = ?{cols} WHERE id = ?",
                (status, now(), message, *fields.values(), set_id),
            )
            detector = self.db.execute("SELECT detector FROM sets WHERE id = ?", (set_id,)).fetchone()[0]
            self._event(set_id, detector, status, message)

    def interrupt_stale(self) -> list[sqlite3.Row]:
        """Sets left 'running' by a process that ended without finishing them: mark them interrupted.

        Call only while holding the service's lock (then nothing else is running).
        """
        with self._transaction():
            stale = self.db.execute("SELECT * FROM sets WHERE status = 'running' ORDER BY id").fetchall()
            for row in stale:
                detail = f"attempt {row['attempts']} by pid {row['pid']} on {row['host']} (started {row['started']}) did not finish"
                self.db.execute("UPDATE sets SET status = 'interrupted', message = ? WHERE id = ?", (detail, row["id"]))
                self._event(row["id"], row["detector"], "interrupted", detail)
        return stale

    def adopt(self, detector: str, key: str, runs: dict, version: int, status: str, *, source: str, **fields) -> int:
        """Record a set found published on disk but missing from the catalog (after it was lost);
        ``fields``: parameters, software, started, finished, seconds, store, bad_fraction,
        newly_bad, recovered, message, inputs. The attempts that made it are unknown: counted as one."""
        allowed = {"parameters", "software", "started", "finished", "seconds", "store", "bad_fraction", "newly_bad",
                   "recovered", "message", "inputs"}
        if set(fields) - allowed:
            raise ValueError(f"unknown fields {sorted(set(fields) - allowed)}")
        cols = "".join(f", {k}" for k in fields)
        marks = ", ?" * len(fields)
        with self._transaction():
            cur = self.db.execute(
                f"INSERT INTO sets (detector, key, runs, status, attempts, version, discovered{cols}) VALUES (?, ?, ?, ?, 1, ?, ?{marks})",
                (detector, key, json.dumps(runs), status, version, now(), *fields.values()),
            )
            self._event(cur.lastrowid, detector, "rebuilt", f"{status} {version_label(version)} recorded again from {source}")
        return cur.lastrowid

    def record_inputs(self, set_id: int, key: str, inputs: dict) -> None:
        """Give a set made before rmm-dask recorded its inputs the fingerprints of its files as they are
        now, and the key that goes with them: from now on a change of its runs is seen."""
        with self._transaction():
            self.db.execute("UPDATE sets SET key = ?, inputs = ? WHERE id = ?", (key, json.dumps(inputs), set_id))
            detector = self.db.execute("SELECT detector FROM sets WHERE id = ?", (set_id,)).fetchone()[0]
            self._event(set_id, detector, "inputs", "the fingerprints of its files recorded (made before they were)")

    def seen_change(self, detector: str, path: str, listing: str, now: float) -> float | None:
        """Remember the run's file set (``listing``: a digest of names, sizes and modification times);
        the time a pass first saw it differ from the one before, or None if it never did (first seen,
        or the same as then)."""
        with self._transaction():
            row = self.db.execute("SELECT * FROM runs WHERE detector = ? AND path = ?", (detector, path)).fetchone()
            if row is None:
                self.db.execute("INSERT INTO runs (detector, path, listing, since, changed) VALUES (?, ?, ?, ?, 0)",
                                (detector, path, listing, now))
                return None
            if row["listing"] != listing:
                self.db.execute("UPDATE runs SET listing = ?, since = ?, changed = 1 WHERE detector = ? AND path = ?",
                                (listing, now, detector, path))
                return now
        return row["since"] if row["changed"] else None

    def mark_opened(self, detector: str, path: str, digest: str) -> None:
        """The reader opened the run's files of ``digest`` without complaint."""
        with self._transaction():
            self.db.execute("UPDATE runs SET opened = ? WHERE detector = ? AND path = ?", (digest, detector, path))

    def set_pointer(self, detector: str, version: int, set_id: int | None = None) -> None:
        with self._transaction():
            self.db.execute(
                "INSERT INTO pointers (detector, version, switched) VALUES (?, ?, ?)"
                " ON CONFLICT (detector) DO UPDATE SET version = excluded.version, switched = excluded.switched",
                (detector, version, now()),
            )
            self._event(set_id, detector, "current", f"current -> v{version:04d}")

    def decide(self, set_id: int, decision: dict) -> None:
        """Record an operator's decision (``decision``: action 'released' or 'held', user, time, reason,
        current_before, current_after) in one transaction: the set's status, the decision, the events, and
        the pointer ``current`` (removed when ``current_after`` is None)."""
        status = {"released": "published", "held": "held"}[decision["action"]]
        with self._transaction():
            row = self.db.execute("SELECT * FROM sets WHERE id = ?", (set_id,)).fetchone()
            self.db.execute("UPDATE sets SET status = ? WHERE id = ?", (status, set_id))
            self._insert_decision(set_id, row["detector"], row["version"], decision)
            self._event(set_id, row["detector"], decision["action"],
                        f"by {decision['user']}: {decision['reason']}")
            after = decision["current_after"]
            if after is None:
                self.db.execute("DELETE FROM pointers WHERE detector = ?", (row["detector"],))
                self._event(set_id, row["detector"], "current", "current -> none")
            elif after != decision["current_before"]:
                self.db.execute(
                    "INSERT INTO pointers (detector, version, switched) VALUES (?, ?, ?)"
                    " ON CONFLICT (detector) DO UPDATE SET version = excluded.version, switched = excluded.switched",
                    (row["detector"], after, now()),
                )
                self._event(set_id, row["detector"], "current", f"current -> v{after:04d}")

    def restore_decisions(self, set_id: int, detector: str, version: int, decisions: list[dict]) -> None:
        """Record again the decisions a version's summary lists (the catalog was lost; recover.py)."""
        with self._transaction():
            for decision in decisions:
                self._insert_decision(set_id, detector, version, decision)

    def _insert_decision(self, set_id: int, detector: str, version: int, d: dict) -> None:
        self.db.execute(
            "INSERT INTO decisions (set_id, detector, version, action, user, time, reason, current_before,"
            " current_after) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (set_id, detector, version, d["action"], d["user"], d["time"], d["reason"], d.get("current_before"),
             d.get("current_after")),
        )

    def _event(self, set_id, detector: str, event: str, detail: str | None) -> None:
        self.db.execute("INSERT INTO events (set_id, detector, time, event, detail) VALUES (?, ?, ?, ?, ?)", (set_id, detector, now(), event, detail))

    def _transaction(self):
        return _Transaction(self.db)


def _migrate(db: sqlite3.Connection) -> None:
    """Bring a catalog of an earlier rmm-dask up to date: the ``inputs`` column (the ``runs`` table is in SCHEMA)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(sets)")}
    if "inputs" not in columns:
        db.execute("ALTER TABLE sets ADD COLUMN inputs TEXT")


def _connect_readonly(path: Path) -> sqlite3.Connection:
    """Open without writing. Between passes the -wal/-shm files are gone and a reader that may not
    create them (a user without write access to the state directory) falls back to immutable mode."""
    uri = Path(path).absolute().as_uri()
    db = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=30, isolation_level=None)
    try:
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError:
        db.close()
        db = sqlite3.connect(f"{uri}?immutable=1", uri=True, timeout=30, isolation_level=None)
    return db


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): one writer at a time, all or nothing."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb):
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
