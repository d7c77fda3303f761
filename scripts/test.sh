#!/usr/bin/env bash
# Runs every test on a fresh Debian machine: installs what the tests need, then the whole suite
# against a real PostgreSQL cluster started for this run and stopped afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

cluster_dir="$(mktemp -d "${TMPDIR:-/tmp}/mpe-ledger-test-cluster.XXXXXX")"
export MPE_LEDGER_TEST_CLUSTER_DIR="$cluster_dir"
stop_cluster() {
  if [ -f "$cluster_dir/pgdata/postmaster.pid" ]; then
    pg_bin="${MPE_LEDGER_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}"
    owner="$(stat -c %U "$cluster_dir/pgdata")"
    if [ "$(id -u)" -eq 0 ] && [ "$owner" != root ]; then
      runuser -u "$owner" -- "$pg_bin/pg_ctl" -D "$cluster_dir/pgdata" stop -m immediate >/dev/null || true
    else
      "$pg_bin/pg_ctl" -D "$cluster_dir/pgdata" stop -m immediate >/dev/null || true
    fi
  fi
  rm -rf "$cluster_dir"
}
trap stop_cluster EXIT

cargo test --locked --all-targets
