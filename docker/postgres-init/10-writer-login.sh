#!/bin/sh
# Run once by the postgres image when it initialises an empty data directory: the ledger's service
# login, mpe_ledger_writer, which is neither superuser nor owner. The migrations (run by the
# `migrate` service as POSTGRES_USER) grant it what it may do: read the log and append to it.
set -eu
psql -v ON_ERROR_STOP=1 -v pw="$MPE_LEDGER_WRITER_PASSWORD" --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
CREATE ROLE mpe_ledger_writer LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'pw';
SQL
