#!/usr/bin/env bash
# Runs the service on a fresh Debian machine: installs the PostgreSQL server if missing, then
# `mpe-ledger serve`. Without DATABASE_URL the ledger starts its own cluster in its data directory.
# Arguments are passed to `serve` (e.g. --listen 0.0.0.0:7000).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
exec cargo run --locked --release --bin mpe-ledger -- serve "$@"
