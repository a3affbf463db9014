//! The EMPI over a real SQLite store in a temporary directory (removed when the harness is
//! dropped), for the `mpi` integration tests.

#![allow(dead_code)]

use std::sync::Arc;

use mpi::{EmpiStore, Mpi};
use store::{IndexExtractor, RequestContext, SqliteStore, Store};

pub struct Harness {
    /// The store underneath (writes to it are not linked).
    pub base: Arc<dyn Store>,
    /// The store that links every Patient write.
    pub linked: EmpiStore,
    pub mpi: Arc<Mpi>,
    pub ctx: RequestContext,
    dir: std::path::PathBuf,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A fresh store whose search rows `extractor` writes, with linking on.
pub fn harness(extractor: Arc<dyn IndexExtractor>) -> Harness {
    let dir = std::env::temp_dir().join(format!("renkei-mpi-test-{}", uuid::Uuid::new_v4()));
    let base: Arc<dyn Store> = Arc::new(SqliteStore::open_dir(&dir, extractor).unwrap());
    let mpi = Arc::new(Mpi::with_defaults(base.clone()));
    Harness {
        linked: EmpiStore::new(mpi.clone()),
        base,
        mpi,
        ctx: RequestContext::system(),
        dir,
    }
}
