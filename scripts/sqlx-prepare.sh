#!/usr/bin/env bash
# Refreshes .sqlx/ (the offline query data) from a database that has the migrations applied.
# Usage: PREPARE_DATABASE_URL=postgres://... scripts/sqlx-prepare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
: "${PREPARE_DATABASE_URL:?set PREPARE_DATABASE_URL to a migrated database}"
rm -rf .sqlx && mkdir .sqlx
touch src/lib.rs
SQLX_OFFLINE=false SQLX_OFFLINE_DIR="$PWD/.sqlx" DATABASE_URL="$PREPARE_DATABASE_URL" \
  cargo check --all-targets --quiet
echo "wrote $(ls .sqlx | wc -l) query files to .sqlx/"
