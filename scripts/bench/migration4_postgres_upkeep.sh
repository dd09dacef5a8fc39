#!/bin/bash
# Candidate key/split indexes on PostgreSQL (BENCHMARKS.md, "Store migration 4"), in schema bench_m4b: index upkeep per index, and a rare split (100 rows in 1M).
set -e
PSQL="psql ${PSQL_ARGS:--h 127.0.0.1 -U postgres -d test} -qAt"
Q="SET search_path = bench_m4b;"
$PSQL -c "DROP SCHEMA IF EXISTS bench_m4b CASCADE; CREATE SCHEMA bench_m4b"
$PSQL -c "$Q CREATE TABLE impressions (key text NOT NULL, split text NOT NULL, environment text, environment_id text, treatment text NOT NULL, label text, time bigint NOT NULL, bucketing_key text, machine_name text, machine_ip text, split_version_number bigint, sdk text, sdk_version text, properties text, extra text, received_at bigint NOT NULL, journal_offset bigint NOT NULL, identity bytea NOT NULL UNIQUE);
CREATE INDEX impressions_time ON impressions (time, journal_offset);
INSERT INTO impressions SELECT 'user-' || (i % 100000), CASE WHEN i % 10000 = 0 THEN 'split-rare' ELSE 'split-' || (i % 50) END, 'Production', 'env1', 'on', 'default rule', 1700000000000 + i * 10, NULL, 'ip-10-0-0-1', '10.0.0.1', 1572632100000, 'java', '4.1.0', '{}', NULL, 1700000000000 + i * 10 + 5, i, int8send(i) FROM generate_series(0, 999999) i; ANALYZE impressions;"
ex() { $PSQL -c "$Q EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) SELECT * FROM impressions WHERE split = 'split-rare' ORDER BY time, journal_offset" | grep -E "Scan|Execution" | sed 's/^ *//' | tr '\n' ';'; }
echo "rare split, no split index: $(ex)"; echo "rare split, no split index: $(ex)"
$PSQL -c "$Q CREATE INDEX impressions_split ON impressions (split, time, journal_offset); ANALYZE impressions;"
echo "rare split, split index: $(ex)"; echo "rare split, split index: $(ex)"
for extra in "" "CREATE INDEX ON t (key, time, journal_offset);" "CREATE INDEX ON t (key, time, journal_offset); CREATE INDEX ON t (split, time, journal_offset);"; do
  for r in 1 2; do
  $PSQL -c "$Q DROP TABLE IF EXISTS t; CREATE TABLE t (LIKE impressions); ALTER TABLE t ADD UNIQUE (identity); CREATE INDEX ON t (time, journal_offset); $extra" 2>/dev/null
  s=$(date +%s%N); $PSQL -c "$Q INSERT INTO t SELECT * FROM impressions WHERE journal_offset < 200000;"
  echo "load 200k, extra [${extra:-none}] run $r: $(( 200000000 / (($(date +%s%N) - s) / 1000000) )) rows/s"
  done
done
$PSQL -c "DROP SCHEMA bench_m4b CASCADE" 2>/dev/null
