//! A persisted copy of the EMPI's cache ([`Cache`]): the normalised record of every indexed
//! source with its identity, the membership of every golden record, the versions applied, and
//! the change-feed position they stand at. A start-up reads it instead of loading and
//! normalising every Patient version the feed holds, then follows the feed from that position
//! as it always does, so the copy may be as stale as it likes.
//!
//! The store stays the truth: a copy is used only if it was written by this format with the
//! same record normalisation (a stamp of the crate version, [`FORMAT`] and the records two
//! fixed Patients normalise to), and if the store still holds, at the copy's position, the
//! change the copy says it read last (a store replaced, restored from a backup or written
//! from scratch does not). Anything else (no file, an unreadable or foreign one, another
//! store's) is logged and the index is loaded from the feed as if there were no copy.
//!
//! Written whole to a temporary file beside it, synced, then renamed over it: a crash while
//! writing leaves the old copy (or none), never half of one.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use empi::{EnterpriseId, EnterpriseIndex, IndexConfig, Model, Record};
use serde::{Deserialize, Serialize};
use serde_json::json;
use store::{FeedPosition, RequestContext, Store, StoreError};

use super::cache::Cache;
use super::resources::GoldenState;

/// Bumped whenever what a copy holds changes meaning.
const FORMAT: u32 = 1;

/// The change at a copy's position, as the store recorded it: `(type, id, version)`.
type ChangeKey = (String, String, u64);

/// The file: three JSON documents, one a line (JSON text never holds a raw newline), so that
/// the records and the rest are parsed on two threads at once.
///
/// 1. [`Header`]: what decides whether the copy may be used at all;
/// 2. the records with their identities, in the index's order;
/// 3. [`Rest`]: golden records' membership, versions applied, sources without a golden record.
#[derive(Serialize, Deserialize)]
struct Header {
    stamp: String,
    position: String,
    last_change: Option<ChangeKey>,
    next_enterprise: u64,
}

#[derive(Serialize)]
struct RestOut<'a> {
    applied: &'a HashMap<String, u64>,
    goldens: Vec<(&'a EnterpriseId, &'a GoldenState)>,
    member_of: &'a HashMap<String, EnterpriseId>,
    unlinked: &'a HashSet<String>,
}

#[derive(Deserialize)]
struct Rest {
    applied: HashMap<String, u64>,
    goldens: Vec<(EnterpriseId, GoldenState)>,
    member_of: HashMap<String, EnterpriseId>,
    unlinked: HashSet<String>,
}

/// Why a copy was not used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("reading {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{0} is not a patient-index snapshot: {1}")]
    Format(PathBuf, serde_json::Error),
    #[error("{0} was written by another version or record normalisation")]
    Stamp(PathBuf),
    #[error("{0} is of another store (the change at its position differs)")]
    OtherStore(PathBuf),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// This build's stamp: crate version, [`FORMAT`], and a digest of what two fixed Patients
/// normalise to (a change of normalisation changes it).
fn stamp() -> String {
    use std::hash::{Hash, Hasher};
    let samples = [
        json!({"resourceType": "Patient", "id": "a", "gender": "female",
               "birthDate": "1980-01-02",
               "name": [{"family": "Müller-Smith", "given": ["Anne", "Marie"]}],
               "telecom": [{"system": "phone", "value": "+1 (555) 123-4567"}],
               "address": [{"line": ["12 Main Street Apt 3"], "postalCode": "02138"}],
               "identifier": [{"system": "http://hl7.org/fhir/sid/us-ssn", "value": "999-12-3456"},
                              {"type": {"coding": [{"code": "MR"}]},
                               "system": "urn:oid:1.2.3", "value": "m1"}]}),
        json!({"resourceType": "Patient", "id": "b", "gender": "male",
               "birthDate": "1975-12-31", "multipleBirthInteger": 2,
               "name": [{"family": "山田", "given": ["太郎"]},
                        {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation",
                                        "valueCode": "SYL"}],
                         "family": "ヤマダ", "given": ["タロー"]}],
               "address": [{"text": "東京都千代田区１－２－３", "postalCode": "100-0001"}]}),
    ];
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for p in &samples {
        match Record::from_patient(p) {
            Ok(r) => serde_json::to_string(&r).unwrap_or_default().hash(&mut h),
            Err(e) => e.to_string().hash(&mut h),
        }
    }
    format!(
        "renkei {} snapshot {FORMAT} records {:016x}",
        env!("CARGO_PKG_VERSION"),
        h.finish()
    )
}

/// The change the store holds at `position` (the last one read before it).
async fn change_at(
    store: &dyn Store,
    ctx: &RequestContext,
    position: &FeedPosition,
) -> Result<Option<ChangeKey>, StoreError> {
    let seq: i64 = position
        .to_string()
        .rsplit(':')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if seq <= 0 {
        return Ok(None);
    }
    Ok(store
        .changes(ctx, seq - 1, 1)
        .await?
        .into_iter()
        .find(|c| c.seq == seq)
        .map(|c| (c.resource_type, c.id, c.version)))
}

/// Writes `cache` (brought up to date by the caller) to `path`. Returns its size in bytes.
pub(crate) async fn save(
    cache: &Cache,
    store: &dyn Store,
    ctx: &RequestContext,
    path: &Path,
) -> Result<u64, SnapshotError> {
    let last_change = change_at(store, ctx, &cache.position).await?;
    let header = Header {
        stamp: stamp(),
        position: cache.position.to_string(),
        last_change,
        next_enterprise: cache.index.next_enterprise().0,
    };
    let records: Vec<(&Record, EnterpriseId)> = cache.index.entries().collect();
    let rest = RestOut {
        applied: &cache.applied,
        goldens: cache.goldens.iter().collect(),
        member_of: &cache.member_of,
        unlinked: &cache.unlinked,
    };
    let tmp = path.with_extension("tmp");
    let io = |e| SnapshotError::Io(tmp.clone(), e);
    let file = std::fs::File::create(&tmp).map_err(io)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    let json = |w: &mut std::io::BufWriter<std::fs::File>| -> Result<(), serde_json::Error> {
        serde_json::to_writer(&mut *w, &header)?;
        w.write_all(b"\n").map_err(serde_json::Error::io)?;
        serde_json::to_writer(&mut *w, &records)?;
        w.write_all(b"\n").map_err(serde_json::Error::io)?;
        serde_json::to_writer(&mut *w, &rest)
    };
    json(&mut w).map_err(|e| io(e.into()))?;
    let file = w.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    drop(file);
    std::fs::rename(&tmp, path).map_err(|e| SnapshotError::Io(path.to_owned(), e))?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(size)
}

/// A copy read and its index rebuilt, not yet checked against the store.
struct Loaded {
    header: Header,
    index: EnterpriseIndex,
    rest: Rest,
}

/// Reads the copy at `path` and rebuilds its index (`model`, `config`): blocking, for a
/// thread of its own; the records and the rest are parsed on two threads.
fn read(path: &Path, model: Model, config: IndexConfig) -> Result<Loaded, SnapshotError> {
    let bytes = std::fs::read(path).map_err(|e| SnapshotError::Io(path.to_owned(), e))?;
    let format = |e| SnapshotError::Format(path.to_owned(), e);
    let mut parts = bytes.splitn(3, |b| *b == b'\n');
    let (header, records, rest) = match (parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(r), Some(x)) => (h, r, x),
        _ => {
            return Err(format(serde_json::Error::io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "fewer than three parts",
            ))));
        }
    };
    let header: Header = serde_json::from_slice(header).map_err(format)?;
    if header.stamp != stamp() {
        return Err(SnapshotError::Stamp(path.to_owned()));
    }
    let (index, rest) = std::thread::scope(|scope| {
        let rest = scope.spawn(|| serde_json::from_slice::<Rest>(rest));
        let index = serde_json::from_slice::<Vec<(Record, EnterpriseId)>>(records).map(|records| {
            let mut index = EnterpriseIndex::new(model, config);
            for (record, e) in records {
                let _ = index.restore(record, e);
            }
            if let Some(last) = header.next_enterprise.checked_sub(1) {
                index.note_used(EnterpriseId(last));
            }
            index
        });
        let rest = rest.join().unwrap_or_else(|_| {
            Err(serde_json::Error::io(std::io::Error::other(
                "the parsing thread panicked",
            )))
        });
        (index, rest)
    });
    Ok(Loaded {
        header,
        index: index.map_err(format)?,
        rest: rest.map_err(format)?,
    })
}

/// Fills `cache`, which must be empty (never refreshed), from the copy at `path`, if it may
/// be used (see the module documentation); returns the number of records it held. On an
/// error `cache` is unchanged. The reading and the rebuilding run on the blocking pool.
pub(crate) async fn load(
    cache: &mut Cache,
    store: &dyn Store,
    ctx: &RequestContext,
    path: &Path,
) -> Result<usize, SnapshotError> {
    if cache.position != FeedPosition::START || !cache.index.is_empty() {
        return Err(SnapshotError::Store(StoreError::Backend(
            "the patient index is loaded already".into(),
        )));
    }
    let (model, config) = (cache.index.model().clone(), cache.index.config());
    let owned = path.to_owned();
    let loaded = tokio::task::spawn_blocking(move || read(&owned, model, config))
        .await
        .map_err(|e| StoreError::Backend(format!("reading the index snapshot: {e}")))??;
    let position: FeedPosition = loaded.header.position.parse()?;
    if change_at(store, ctx, &position).await? != loaded.header.last_change {
        return Err(SnapshotError::OtherStore(path.to_owned()));
    }
    let n = loaded.index.len();
    cache.index = loaded.index;
    cache.goldens = loaded.rest.goldens.into_iter().collect();
    cache.member_of = loaded.rest.member_of;
    cache.applied = loaded.rest.applied;
    cache.unlinked = loaded.rest.unlinked;
    cache.position = position;
    Ok(n)
}
