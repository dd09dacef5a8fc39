#!/usr/bin/env bash
# Runs every check CI runs: formatting, lints, and the whole test suite (unit, integration,
# crash tests against the real binary, the lake against a real S3-compatible server).
# Needs a Rust toolchain and python3 (with venv). Installs, once per machine, into
# $TEST_TOOLS_DIR (default ~/.cache/sluice-test-tools, outside the checkout so that every clone
# and every CI run on the machine reuses them):
#   bin/s3s-fs  an S3-compatible server on loopback for the lake tests
#   venv/       pyarrow and duckdb, the independent readers for the lake tests,
#               segment-analytics-python, Segment's own client for the Tracking API tests,
#               aiokafka, the independent Kafka client reading back the Kafka output, and
#               scipy, the independent statistics the experiment read-outs are checked against,
#               ChannelAttribution (with the matplotlib it imports), the independent Markov
#               attribution the data-driven model is checked against
#   bin/nats-server  only where Debian's nats-server is not installed: the same package, unpacked
# The JetStream tests start their own nats-server processes (single servers and 3-node clusters).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "cargo is missing: install Rust from https://rustup.rs" >&2; exit 1; }
command -v python3 >/dev/null || { echo "python3 is missing: install it (with venv) to run the lake tests" >&2; exit 1; }

tools="${TEST_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice-test-tools}"
mkdir -p "$tools"
if [ ! -x "$tools/bin/s3s-fs" ]; then
  echo "== installing s3s-fs into $tools (once; a few minutes)"
  cargo install s3s-fs@0.14.1 --locked --features binary --root "$tools"
fi
if [ ! -x "$tools/venv/bin/python" ] || ! "$tools/venv/bin/python" -c 'import pyarrow' 2>/dev/null; then
  echo "== creating $tools/venv with pyarrow (once)"
  python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install --quiet pyarrow
fi
if ! "$tools/venv/bin/python" -c 'import duckdb' 2>/dev/null; then
  echo "== installing duckdb into $tools/venv (once)"
  "$tools/venv/bin/pip" install --quiet duckdb
fi
export TEST_S3S_FS="$tools/bin/s3s-fs"
if ! "$tools/venv/bin/python" -c 'import segment.analytics' 2>/dev/null; then
  echo "== installing segment-analytics-python into $tools/venv (once)"
  "$tools/venv/bin/pip" install --quiet segment-analytics-python
fi
if ! "$tools/venv/bin/python" -c 'import scipy' 2>/dev/null; then
  echo "== installing scipy into $tools/venv (once)"
  "$tools/venv/bin/pip" install --quiet scipy
fi
if ! "$tools/venv/bin/python" -c 'import aiokafka' 2>/dev/null; then
  echo "== installing aiokafka into $tools/venv (once)"
  "$tools/venv/bin/pip" install --quiet aiokafka
fi
if ! "$tools/venv/bin/python" -c 'import ChannelAttribution' >/dev/null 2>&1; then
  echo "== installing ChannelAttribution into $tools/venv (once; it compiles C++)"
  "$tools/venv/bin/pip" install --quiet ChannelAttribution matplotlib
fi
export TEST_PYTHON="$tools/venv/bin/python"
if [ -z "${TEST_NATS_SERVER:-}" ]; then
  if [ -x /usr/sbin/nats-server ]; then
    TEST_NATS_SERVER=/usr/sbin/nats-server
  else
    if [ ! -x "$tools/bin/nats-server" ]; then
      echo "== unpacking Debian's nats-server into $tools/bin (once)"
      (cd "$tools" && apt-get download nats-server && dpkg -x nats-server_*.deb "$tools/nats-deb" && rm -f nats-server_*.deb)
      mkdir -p "$tools/bin" && ln -sf "$tools/nats-deb/usr/sbin/nats-server" "$tools/bin/nats-server"
    fi
    TEST_NATS_SERVER="$tools/bin/nats-server"
  fi
  export TEST_NATS_SERVER
fi
echo "== nats-server for the JetStream tests: $TEST_NATS_SERVER ($("$TEST_NATS_SERVER" --version))"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "== cargo test"
# Every test binary runs even after one fails, and the run ends with each failure's message: the
# tail is what a CI log shows, and a test's own message says more than a backtrace.
log=target/test-output.log
mkdir -p target
export RUST_BACKTRACE=0
if cargo test --locked --all-targets --no-fail-fast "$@" 2>&1 | tee "$log"; then
  exit 0
fi
echo "== what failed (the whole output: $log)"
awk '/^---- .* stdout ----$/ { n = 25; print; next }
     /^failures:$/ { n = 0 }
     n > 0 { print; n-- }
     /^error: .*test failed|^test result: FAILED/ { print }' "$log"
exit 1
