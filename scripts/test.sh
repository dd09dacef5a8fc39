#!/usr/bin/env bash
# Runs every check CI runs: formatting, lints, and the whole test suite (unit, integration,
# crash tests against the real binary). Needs only a Rust toolchain; installs nothing else yet.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "cargo is missing: install Rust from https://rustup.rs" >&2; exit 1; }

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "== cargo test"
cargo test --locked --all-targets "$@"
