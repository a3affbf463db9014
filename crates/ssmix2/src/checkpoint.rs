//! What was already imported, for idempotent re-import and `--watch`.
//!
//! A [`Checkpoint`] maps each record key to the version (timestamp and condition) last
//! imported. A scan's [`Change`]s that match it are skipped; a newer version, a retraction or
//! a new record is pending. The checkpoint is a plain value with a line-oriented text form so
//! the store can persist it (one row per record) in the same transaction as the resources
//! the import wrote; the file form is for tools and tests.
//!
//! [`Watcher`] follows a live tree by polling: rescanning is cheap next to parsing, works on
//! the network shares SS-MIX2 trees usually live on (where inotify does not), and needs no
//! extra dependency. The caller owns the clock and the sleep.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::Ssmix2Error;
use crate::name::{Condition, RecordKey};
use crate::tree::{Change, Skipped, current, scan};

/// The version of a record last imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    pub timestamp: String,
    pub condition: Condition,
}

/// What was already imported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkpoint {
    records: BTreeMap<RecordKey, Imported>,
}

impl Checkpoint {
    /// The changes not yet imported (order preserved).
    pub fn pending(&self, changes: Vec<Change>) -> Vec<Change> {
        changes
            .into_iter()
            .filter(|c| !self.is_imported(c))
            .collect()
    }

    pub fn is_imported(&self, change: &Change) -> bool {
        let name = &change.file().name;
        self.records.get(&name.key).is_some_and(|i| {
            i.timestamp == name.timestamp && i.condition.is_valid() == name.condition.is_valid()
        })
    }

    /// Record a change as imported (after the store committed it).
    pub fn mark(&mut self, change: &Change) {
        let name = &change.file().name;
        self.records.insert(
            name.key.clone(),
            Imported {
                timestamp: name.timestamp.clone(),
                condition: name.condition,
            },
        );
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// One line per record: `patient date type order timestamp condition` (tab-separated).
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for (k, v) in &self.records {
            out.push_str(&format!(
                "{}\t{}\t{}\t{}\t{}\t{}\n",
                k.patient_id,
                k.care_date.as_deref().unwrap_or("-"),
                k.data_type,
                k.order_number,
                v.timestamp,
                v.condition.flag()
            ));
        }
        out
    }

    pub fn from_text(text: &str) -> Result<Checkpoint, Ssmix2Error> {
        let mut records = BTreeMap::new();
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let parts: Vec<&str> = line.split('\t').collect();
            let [id, date, kind, order, ts, cond] = parts[..] else {
                return Err(Ssmix2Error::Checkpoint { line: n + 1 });
            };
            let condition = match cond {
                "1" => Condition::Valid,
                "0" => Condition::Invalid,
                "2" => Condition::PastHistory,
                _ => return Err(Ssmix2Error::Checkpoint { line: n + 1 }),
            };
            records.insert(
                RecordKey {
                    patient_id: id.to_owned(),
                    care_date: (date != "-").then(|| date.to_owned()),
                    data_type: kind.to_owned(),
                    order_number: order.to_owned(),
                },
                Imported {
                    timestamp: ts.to_owned(),
                    condition,
                },
            );
        }
        Ok(Checkpoint { records })
    }
}

/// Follows a tree by polling: each [`Watcher::poll`] returns what changed since the last
/// committed change.
#[derive(Debug)]
pub struct Watcher {
    root: PathBuf,
    pub checkpoint: Checkpoint,
}

impl Watcher {
    pub fn new(root: &Path, checkpoint: Checkpoint) -> Self {
        Watcher {
            root: root.to_path_buf(),
            checkpoint,
        }
    }

    /// Scan and return the pending changes, in import order. The caller imports them and
    /// calls [`Checkpoint::mark`] for each one that committed; a change not marked comes
    /// back at the next poll.
    pub fn poll(&mut self) -> Result<Vec<Change>, Ssmix2Error> {
        Ok(self.poll_reporting()?.0)
    }

    /// [`Watcher::poll`], with the files of the tree that were not taken (not a standard
    /// name, or not where their name says), for the caller to report.
    pub fn poll_reporting(&mut self) -> Result<(Vec<Change>, Vec<Skipped>), Ssmix2Error> {
        let scanned = scan(&self.root)?;
        let changes = self.checkpoint.pending(current(&scanned.files));
        Ok((changes, scanned.skipped))
    }
}
