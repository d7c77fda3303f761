-- The service may run with a writer-only login and no owner URL: it then applies no migration and
-- checks, by reading this table, that every migration it was built with is applied.
-- The table belongs to the login that runs the migrations (not to mpe_ledger_owner), so this grant
-- runs as that login.
GRANT SELECT ON _sqlx_migrations TO mpe_ledger_writer;
