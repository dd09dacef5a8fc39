# Candidate key/split indexes, without/with, on SQLite (BENCHMARKS.md, "Store migration 4"): 1M impressions, 100k keys (10 rows each),
# 50 splits; the same store with the two impression indexes dropped, then created.
# Usage: cargo build --bin sluice && python3 scripts/bench/migration4_sqlite.py
import os, shutil, sqlite3, statistics, subprocess, tempfile, time
SLUICE = os.environ.get("SLUICE", "target/debug/sluice")
d = tempfile.mkdtemp(prefix="sluice-m4-")
subprocess.run([SLUICE, "--data-dir", d, "migrate"], check=True, capture_output=True)
db = os.path.join(d, "store.sqlite")
c = sqlite3.connect(db)
c.execute("PRAGMA synchronous=OFF")
# The candidate indexes (not part of sluice's schema; see BENCHMARKS.md).
c.execute("CREATE INDEX impressions_key ON impressions (key, time)")
c.execute("CREATE INDEX impressions_split ON impressions (split, time)"); c.commit()
c.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the copies below read the main file only
N = 1_000_000
def rows(lo, hi):
    for i in range(lo, hi):
        yield (f"user-{i % 100_000}", f"split-{i % 50}", "Production", "env1", "on" if i % 3 else "off", "default rule",
               1_700_000_000_000 + i * 10, None, "ip-10-0-0-1", "10.0.0.1", 1_572_632_100_000, "java", "4.1.0", "{}", None,
               1_700_000_000_000 + i * 10 + 5, i, i.to_bytes(16, "big"))
SQL = ("INSERT INTO impressions (key, split, environment, environment_id, treatment, label, time, bucketing_key, machine_name,"
       " machine_ip, split_version_number, sdk, sdk_version, properties, extra, received_at, journal_offset, identity)"
       " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")
def load(conn, lo, hi):
    t = time.perf_counter()
    with conn:
        conn.executemany(SQL, rows(lo, hi))
    return time.perf_counter() - t
# Index upkeep: 200k rows into a copy without / with the two new indexes, same run.
for label, drop in [("load 200k rows, schema v2 indexes", True), ("load 200k rows, + the candidate indexes", False)]:
    p = os.path.join(d, "loadtest.sqlite"); shutil.copy(db, p); lc = sqlite3.connect(p); lc.execute("PRAGMA synchronous=OFF")
    if drop:
        lc.execute("DROP INDEX impressions_key"); lc.execute("DROP INDEX impressions_split")
    ts = [load(lc, 0, 200_000)]
    lc.close(); os.remove(p)
    print(f"{label}: {200_000/ts[0]:,.0f} rows/s (python sqlite3 executemany, {sqlite3.sqlite_version})")
print(f"loaded {N:,} rows in {load(c, 0, N):.1f} s"); c.execute("ANALYZE"); c.commit()

QUERIES = [("--key user-4242", ["--key", "user-4242"], "key IN ($1)"),
           ("--key ×3", ["--key", "user-1", "--key", "user-50000", "--key", "user-99999"], "key IN ($1, $2, $3)"),
           ("--split split-7", ["--split", "split-7"], "split IN ($1)"),
           ("--split split-7 --limit 100", ["--split", "split-7", "--limit", "100"], "split IN ($1)"),
           ("no filter (control)", [], None)]
def run(args):
    out = []
    for _ in range(5):
        t = time.perf_counter()
        r = subprocess.run([SLUICE, "--data-dir", d, "export", "impressions", "--format", "ndjson", *args, "-o", "/dev/null"],
                           capture_output=True, text=True, check=True)
        out.append(time.perf_counter() - t)
    return statistics.median(out), r.stderr.strip()
def plan(where):
    if where is None: return "-"
    sql = f"SELECT * FROM impressions WHERE {where} ORDER BY time, rowid"
    params = ["x"] * where.count("$")
    return " / ".join(r[3] for r in c.execute("EXPLAIN QUERY PLAN " + sql.replace("$1", "?").replace("$2", "?").replace("$3", "?"), params))
results = {}
for phase in ["before (indexes dropped)", "after (with the candidates)"]:  # "after": with the candidates
    if phase.startswith("before"):
        c.execute("DROP INDEX impressions_key"); c.execute("DROP INDEX impressions_split"); c.commit()
    else:
        t = time.perf_counter()
        c.execute("CREATE INDEX impressions_key ON impressions (key, time)")
        c.execute("CREATE INDEX impressions_split ON impressions (split, time)"); c.commit()
        print(f"the candidate key and split indexes on {N:,} rows: {time.perf_counter() - t:.1f} s")
    c.execute("ANALYZE"); c.commit()
    for name, args, where in QUERIES:
        m, err = run(args)
        results.setdefault(name, {})[phase] = m
        print(f"{phase:26} {name:28} median {m*1000:8.1f} ms  plan: {plan(where)}  [{err}]")
for name, r in results.items():
    b, a = r["before (indexes dropped)"], r["after (with the candidates)"]
    print(f"| {name} | {b*1000:,.0f} ms | {a*1000:,.0f} ms | {b/a:.1f}× |")
