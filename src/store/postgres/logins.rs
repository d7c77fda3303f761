//! What a login may do, and whether the schema it sees is migrated: the checks `serve` runs on
//! its own login before taking calls.
//!
//! A login "can lift the append-only guard" when it is a superuser or a member of [`OWNER_ROLE`]
//! (it may `RESET ROLE`, disable the trigger, set `session_replication_role`). The service's login
//! should be neither; [`login_privilege`] tells, [`missing_migrations`] lets such a login check
//! the schema without being able to migrate it.

use sqlx::Connection;

use super::schema::{AppliedMigrations, FIRST_MIGRATION_READABLE_BY_WRITER, applied_migrations};
use super::{MIGRATOR, OWNER_ROLE};
use crate::store::StoreError;

/// The attributes of a session's login that matter for the append-only guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginPrivilege {
    pub superuser: bool,
    /// A member of [`OWNER_ROLE`] (false when that role does not exist yet).
    pub owner_member: bool,
}

impl LoginPrivilege {
    /// Whether this login could change or delete events (module doc).
    pub fn can_lift_guard(self) -> bool {
        self.superuser || self.owner_member
    }
}

/// The privilege of `url`'s login (its session user, whatever role it switches to).
pub async fn login_privilege(url: &str) -> Result<LoginPrivilege, StoreError> {
    let mut conn = super::hosts::connect(url).await?;
    // CASE keeps pg_has_role from being evaluated for a role that does not exist.
    let (superuser, owner_member): (bool, bool) = sqlx::query_as(
        "SELECT r.rolsuper, CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1) \
                THEN pg_has_role(session_user, $1, 'MEMBER') ELSE false END \
         FROM pg_roles r WHERE r.rolname = session_user",
    )
    .bind(OWNER_ROLE)
    .fetch_one(&mut conn)
    .await?;
    let _ = conn.close().await;
    Ok(LoginPrivilege { superuser, owner_member })
}

/// The versions of this binary's migrations that `url`'s database has not applied (all of them
/// for a database never migrated). A login that cannot read `_sqlx_migrations` (a schema from
/// before migration 4, which grants it) sees every migration from 4 on as missing.
pub async fn missing_migrations(url: &str) -> Result<Vec<i64>, StoreError> {
    let mut conn = super::hosts::connect(url).await?;
    let applied = applied_migrations(&mut conn).await;
    let _ = conn.close().await;
    let applied: Vec<i64> = match applied? {
        AppliedMigrations::Known(applied) => applied.into_iter().map(|m| m.version).collect(),
        AppliedMigrations::Unreadable => (1..FIRST_MIGRATION_READABLE_BY_WRITER).collect(),
    };
    Ok(MIGRATOR.iter().map(|m| m.version).filter(|v| !applied.contains(v)).collect())
}
