#!/usr/bin/env bash
# Installs what running and testing the ledger needs on a Debian machine, only when missing:
# the PostgreSQL server binaries (initdb, pg_ctl, postgres), and the end-to-end test environment
# in .test-env/ (ganache and the SingularityNET clients with their contract artifacts), and Patroni
# with etcd for the failover test.
set -euo pipefail

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
  echo "installing the PostgreSQL server (Debian package postgresql)"
  apt_install postgresql
  # Debian's package creates and starts a default cluster; the ledger runs its own, so stop that one.
  if command -v pg_lsclusters >/dev/null 2>&1; then
    pg_lsclusters --no-header 2>/dev/null | while read -r version name _; do
      as_root pg_ctlcluster "$version" "$name" stop 2>/dev/null || true
    done
  fi
fi

# The failover test (tests/failover.rs) runs a primary and a synchronous standby under Patroni with
# etcd, all started by the test itself on loopback: the packages' own services are not used.
if ! command -v patroni >/dev/null 2>&1 || ! command -v etcd >/dev/null 2>&1; then
  echo "installing Patroni and etcd (Debian packages patroni, etcd-server)"
  apt_install patroni etcd-server
  # etcd-server starts a default member on 127.0.0.1:2379, which the test does not want.
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    as_root systemctl disable --now etcd patroni >/dev/null 2>&1 || true
  fi
  if command -v service >/dev/null 2>&1; then
    as_root service etcd stop >/dev/null 2>&1 || true
  fi
fi

# The end-to-end test environment, in .test-env/ at the repository root (never committed): ganache
# (a local Ethereum node) from npm, and the real clients with the MPE contract artifacts from PyPI.
# Override the location with MPE_LEDGER_TEST_ENV.
repo_root="$(cd "$(dirname "$0")/.." && pwd)"
test_env="${MPE_LEDGER_TEST_ENV:-$repo_root/.test-env}"
ganache_version=7.9.2
python_packages=(snet-contracts==1.0.1 snet-sdk==6.0.0 snet-cli==3.1.1)
mkdir -p "$test_env"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "installing Node.js and npm (Debian packages nodejs, npm)"
  apt_install nodejs npm
fi

installed_ganache="$(node -p "require('$test_env/node_modules/ganache/package.json').version" 2>/dev/null || true)"
if [ "$installed_ganache" != "$ganache_version" ]; then
  echo "installing ganache@$ganache_version into $test_env/node_modules"
  npm install --prefix "$test_env" --no-audit --no-fund --loglevel=error "ganache@$ganache_version" >/dev/null
fi

venv="$test_env/venv"
if [ ! -x "$venv/bin/python" ]; then
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
    echo "installing Python venv support (Debian package python3-venv)"
    apt_install python3-venv
  fi
  echo "creating the Python virtualenv $venv"
  python3 -m venv "$venv"
fi
# pip freeze names them with underscores or hyphens depending on the package's metadata: compare both.
frozen="$("$venv/bin/python" -m pip freeze 2>/dev/null | tr '_' '-' | tr 'A-Z' 'a-z')"
missing=()
for requirement in "${python_packages[@]}"; do
  grep -qx "$requirement" <<<"$frozen" || missing+=("$requirement")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing ${python_packages[*]} into $venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${python_packages[@]}"
fi
