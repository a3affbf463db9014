//! Walking a storage tree, choosing the current version of every record, and reading files.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use hl7v2::{Charset, Message, ParseOptions};

use crate::Ssmix2Error;
use crate::name::{FileName, RecordKey, type_rank};

/// A file found in the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    /// Absolute (or root-joined) path.
    pub path: PathBuf,
    pub name: FileName,
    pub size: u64,
}

/// Why a file under the root was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skipped {
    /// The file name is not a standard name.
    BadName { path: PathBuf, reason: String },
    /// The name is standard but the file is not in the directory its name implies.
    Misplaced { path: PathBuf, expected: PathBuf },
}

/// The result of a scan: every standard file, and what was skipped.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    pub files: Vec<StoredFile>,
    pub skipped: Vec<Skipped>,
}

/// Walk `root` (patient-id directories, care-date directories, data-type directories) and
/// collect every file with a standard name. Hidden files (`.name`) and files ending in
/// `.tmp` (being written) are ignored silently; other odd files are reported in
/// [`Scan::skipped`], never fatal. An unreadable directory is an error.
pub fn scan(root: &Path) -> Result<Scan, Ssmix2Error> {
    let mut out = Scan::default();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = fs::read_dir(&dir).map_err(|e| Ssmix2Error::io(&dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Ssmix2Error::io(&dir, e))?;
            let path = entry.path();
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str() else {
                out.skipped.push(Skipped::BadName {
                    path,
                    reason: "not UTF-8".into(),
                });
                continue;
            };
            if name.starts_with('.') || name.ends_with(".tmp") {
                continue;
            }
            let kind = entry.file_type().map_err(|e| Ssmix2Error::io(&path, e))?;
            if kind.is_dir() {
                stack.push(path);
                continue;
            }
            if !kind.is_file() {
                continue;
            }
            match FileName::parse(name) {
                Ok(parsed) => {
                    let expected = root.join(parsed.relative_path());
                    if expected != path {
                        out.skipped.push(Skipped::Misplaced { path, expected });
                        continue;
                    }
                    let size = entry
                        .metadata()
                        .map_err(|e| Ssmix2Error::io(&path, e))?
                        .len();
                    out.files.push(StoredFile {
                        path,
                        name: parsed,
                        size,
                    });
                }
                Err(Ssmix2Error::Name { reason, .. }) => {
                    out.skipped.push(Skipped::BadName { path, reason })
                }
                Err(other) => return Err(other),
            }
        }
    }
    Ok(out)
}

/// The state of one record: its latest file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The latest version is valid: import it.
    Current(StoredFile),
    /// The latest version is flagged invalid and no valid version is newer: the record was
    /// deleted at the source.
    Retracted(StoredFile),
}

impl Change {
    pub fn file(&self) -> &StoredFile {
        match self {
            Change::Current(f) | Change::Retracted(f) => f,
        }
    }

    pub fn key(&self) -> &RecordKey {
        &self.file().name.key
    }
}

/// Reduce files to the latest version of every (patient, date, type, order) record (by
/// timestamp; at equal timestamps a valid file wins over an invalid one), ordered for
/// import: by timestamp, then patient basics before visits before clinical data, then path.
pub fn current(files: &[StoredFile]) -> Vec<Change> {
    let mut latest: BTreeMap<&RecordKey, &StoredFile> = BTreeMap::new();
    for f in files {
        let slot = latest.entry(&f.name.key).or_insert(f);
        let newer = (&f.name.timestamp, f.name.condition.is_valid())
            > (&slot.name.timestamp, slot.name.condition.is_valid());
        if newer {
            *slot = f;
        }
    }
    let mut changes: Vec<Change> = latest
        .into_values()
        .map(|f| {
            if f.name.condition.is_valid() {
                Change::Current(f.clone())
            } else {
                Change::Retracted(f.clone())
            }
        })
        .collect();
    changes.sort_by(|a, b| {
        let (fa, fb) = (a.file(), b.file());
        (
            &fa.name.timestamp,
            type_rank(&fa.name.key.data_type),
            &fa.path,
        )
            .cmp(&(
                &fb.name.timestamp,
                type_rank(&fb.name.key.data_type),
                &fb.path,
            ))
    });
    changes
}

/// Read and parse one stored message. SS-MIX2 text is 7-bit ISO-2022-JP; a file without
/// MSH-18 is read as ISO-2022-JP too (a superset of ASCII), and invalid bytes are an error.
pub fn read_message(file: &StoredFile) -> Result<(Vec<u8>, Message), Ssmix2Error> {
    let bytes = fs::read(&file.path).map_err(|e| Ssmix2Error::io(&file.path, e))?;
    let options = ParseOptions {
        default_charset: Charset::Iso2022Jp,
    };
    let message = hl7v2::parse_with(&bytes, &options).map_err(|source| Ssmix2Error::Message {
        path: file.path.clone(),
        source,
    })?;
    Ok((bytes, message))
}

/// Write a message into the tree under its standard name (through a `.tmp` file and a
/// rename, so a reader never sees half a file). For generators, tests and exports.
pub fn store(root: &Path, name: &FileName, bytes: &[u8]) -> Result<PathBuf, Ssmix2Error> {
    let path = root.join(name.relative_path());
    let dir = path.parent().unwrap_or(root);
    fs::create_dir_all(dir).map_err(|e| Ssmix2Error::io(dir, e))?;
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes).map_err(|e| Ssmix2Error::io(&tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| Ssmix2Error::io(&path, e))?;
    Ok(path)
}

/// Flag a stored file invalid (rename its condition flag to `0`), as a sender does when it
/// replaces or deletes a record.
pub fn invalidate(root: &Path, name: &FileName) -> Result<FileName, Ssmix2Error> {
    let mut invalid = name.clone();
    invalid.condition = crate::Condition::Invalid;
    let from = root.join(name.relative_path());
    let to = root.join(invalid.relative_path());
    fs::rename(&from, &to).map_err(|e| Ssmix2Error::io(&from, e))?;
    Ok(invalid)
}
