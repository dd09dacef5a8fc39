#!/usr/bin/env python3
"""What migration 6's `events_track (event, timestamp) WHERE type = 'track'` costs loading events
into SQLite: the same 1,000,000 event rows (90% track events of 20 names, growing timestamps, as
a site sends them) inserted in 10,000-row transactions into a store made by `sluice migrate`,
once without the index and once with it, in the same run. Prints rows/s for each and the ratio.

Usage: python3 scripts/bench/migration6_sqlite.py [path/to/sluice]   (default: target/release/sluice)
ROWS=… changes the size.
"""

import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time

SLUICE = sys.argv[1] if len(sys.argv) > 1 else "target/release/sluice"
ROWS = int(os.environ.get("ROWS", "1000000"))
BATCH = 10_000
NAMES = [f"Event {i}" for i in range(20)]


def rows():
    rng = random.Random(6)
    t0 = 1_793_491_200_000
    for i in range(ROWS):
        kind = "track" if rng.random() < 0.9 else "page"
        user = f"user-{rng.randrange(200_000)}"
        event = rng.choice(NAMES) if kind == "track" else None
        raw = f'{{"type":"{kind}","userId":"{user}","messageId":"m-{i}"}}'
        yield (f"m-{i}", kind, event, user, t0 + i * 10, t0 + i * 10, 0, raw, i)


def load(with_index):
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([SLUICE, "--data-dir", d, "migrate"], check=True, capture_output=True)
        db = sqlite3.connect(os.path.join(d, "store.sqlite"), isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        if not with_index:
            db.execute("DROP INDEX events_track")
        sql = ("INSERT INTO events (message_id, type, event, user_id, timestamp, arrived_at, timestamp_clamped, raw, "
               "journal_offset) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
        batch = []
        started = time.perf_counter()
        for row in rows():
            batch.append(row)
            if len(batch) == BATCH:
                db.execute("BEGIN")
                db.executemany(sql, batch)
                db.execute("COMMIT")
                batch = []
        if batch:
            db.execute("BEGIN")
            db.executemany(sql, batch)
            db.execute("COMMIT")
        return ROWS / (time.perf_counter() - started)


without = load(False)
with_index = load(True)
print(f"SQLite, {ROWS} events: without events_track {without:,.0f} rows/s; with it {with_index:,.0f} rows/s; "
      f"with/without {with_index / without:.2f}")
