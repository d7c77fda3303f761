//! Embedded clusters that tests start in temporary data roots, and what stops them when a test
//! fails half-way (a postgres must never outlive its deleted tempdir).

use std::path::{Path, PathBuf};

use mpe_ledger::startup::cluster::stop_blocking_in;

/// Stops whatever cluster runs in the data root when dropped, whoever started it.
pub struct StopClusterOnDrop(pub PathBuf);

impl StopClusterOnDrop {
    pub fn root(&self) -> &Path {
        &self.0
    }
}

impl Drop for StopClusterOnDrop {
    fn drop(&mut self) {
        let _ = stop_blocking_in(&self.0);
    }
}
