#!/bin/bash
# Candidate key/split indexes, without/with, on PostgreSQL (BENCHMARKS.md, "Store migration 4"), in schema bench_m4 of the test database: 1M impressions, 100k keys (10 rows each), 50 splits.
set -e
S=${SLUICE:-target/debug/sluice}
PSQL="psql ${PSQL_ARGS:--h 127.0.0.1 -U postgres -d test} -qAt"
$PSQL -c "DROP SCHEMA IF EXISTS bench_m4 CASCADE; CREATE SCHEMA bench_m4"
URL="postgres://postgres@127.0.0.1:5432/test?options=-csearch_path%3Dbench_m4"
$S --data-dir "${TMPDIR:-/tmp}/sluice-m4-pg" --store "$URL" migrate >/dev/null 2>&1
Q="SET search_path = bench_m4;"
# The candidate indexes (not part of sluice's schema; see BENCHMARKS.md).
$PSQL -c "$Q CREATE INDEX impressions_key ON impressions (key, time, journal_offset); CREATE INDEX impressions_split ON impressions (split, time, journal_offset);"
$PSQL -c "$Q INSERT INTO impressions (key, split, environment, environment_id, treatment, label, time, machine_name, machine_ip, split_version_number, sdk, sdk_version, properties, received_at, journal_offset, identity)
 SELECT 'user-' || (i % 100000), 'split-' || (i % 50), 'Production', 'env1', CASE WHEN i % 3 = 0 THEN 'off' ELSE 'on' END, 'default rule',
        1700000000000 + i * 10, 'ip-10-0-0-1', '10.0.0.1', 1572632100000, 'java', '4.1.0', '{}', 1700000000000 + i * 10 + 5, i, int8send(i)
 FROM generate_series(0, 999999) i; ANALYZE impressions;"
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
run() { for r in 1 2 3 4 5; do s=$(date +%s%N); $S --data-dir "${TMPDIR:-/tmp}/sluice-m4-pg" --store "$URL" export impressions --format ndjson "$@" -o /dev/null 2>/dev/null; echo $(( ($(date +%s%N) - s) / 1000000 )); done | median; }
plan() { $PSQL -c "$Q EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) SELECT * FROM impressions WHERE $1 ORDER BY time, journal_offset" | grep -E "Scan|Sort|Execution" | sed 's/^ *//' | tr '\n' ';'; }
for phase in before after; do
  if [ $phase = before ]; then
    $PSQL -c "$Q DROP INDEX impressions_key; DROP INDEX impressions_split;"
  else
    s=$(date +%s%N)
    $PSQL -c "$Q CREATE INDEX impressions_key ON impressions (key, time, journal_offset); CREATE INDEX impressions_split ON impressions (split, time, journal_offset); ANALYZE impressions;"
    echo "the candidate key and split indexes on 1M rows: $(( ($(date +%s%N) - s) / 1000000 )) ms"
  fi
  echo "$phase --key user-4242: $(run --key user-4242) ms | $(plan "key = 'user-4242'")"
  echo "$phase --key x3: $(run --key user-1 --key user-50000 --key user-99999) ms | $(plan "key IN ('user-1','user-50000','user-99999')")"
  echo "$phase --split split-7: $(run --split split-7) ms | $(plan "split = 'split-7'")"
  echo "$phase --split split-7 --limit 100: $(run --split split-7 --limit 100) ms"
  echo "$phase no filter (control): $(run) ms"
done
# Index upkeep on load: 200k rows COPY'd into a copy of the table without / with the two indexes.
for idx in without with; do
  $PSQL -c "$Q DROP TABLE IF EXISTS t; CREATE TABLE t (LIKE impressions INCLUDING INDEXES);"
  [ $idx = without ] && $PSQL -c "$Q DROP INDEX t_key_time_journal_offset_idx; DROP INDEX t_split_time_journal_offset_idx;"
  s=$(date +%s%N)
  $PSQL -c "$Q INSERT INTO t SELECT * FROM impressions WHERE journal_offset < 200000;"
  echo "load 200k rows $idx the candidate indexes: $(( 200000000 / (($(date +%s%N) - s) / 1000000) )) rows/s (INSERT … SELECT)"
done
$PSQL -c "DROP SCHEMA bench_m4 CASCADE"
