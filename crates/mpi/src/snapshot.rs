//! A persisted copy of the EMPI's cache ([`Cache`]): the normalised record of every indexed
//! source with its identity, the membership of every golden record, the versions applied, and
//! the change-feed position they stand at. A start-up reads it instead of loading and
//! normalising every Patient version the feed holds, then follows the feed from that position
//! as it always does, so the copy may be as stale as it likes.
//!
//! The store stays the truth: a copy is used only if it was written by this format with the
//! same record normalisation (a stamp of the crate version, [`FORMAT`] and the records three
//! fixed Patients normalise to), and if the store still holds, at the copy's position, the
//! change the copy says it read last (a store replaced, restored from a backup or written
//! from scratch does not). Anything else (no file, an unreadable or foreign one, another
//! store's) is logged and the index is loaded from the feed as if there were no copy.
//!
//! Written whole to a temporary file beside it, synced, then renamed over it: a crash while
//! writing leaves the old copy (or none), never half of one.

use std::io::Write;
use std::path::{Path, PathBuf};

use empi::{EnterpriseId, EnterpriseIndex, IndexConfig, Model, Record};
use serde::{Deserialize, Serialize};
use serde_json::json;
use store::{FeedPosition, RequestContext, Store, StoreError};

use empi::hashing::FxHashMap;

use super::cache::{Cache, FxHashSet};
use super::resources::GoldenState;

/// Bumped whenever what a copy holds changes meaning.
const FORMAT: u32 = 2;

/// The change at a copy's position, as the store recorded it: `(type, id, version)`.
type ChangeKey = (String, String, u64);

/// The file: four JSON documents, one a line (JSON text never holds a raw newline), so that
/// they are parsed on two threads at once.
///
/// 1. [`Header`]: what decides whether the copy may be used at all;
/// 2. and 3. the records with their identities, in the index's order, in two halves (parsed
///    side by side; then the index is rebuilt from them while the fourth is parsed);
/// 4. [`Rest`]: golden records' membership, versions applied, sources without a golden record.
#[derive(Serialize, Deserialize)]
struct Header {
    stamp: String,
    position: String,
    last_change: Option<ChangeKey>,
    next_enterprise: u64,
    /// The number of records in each half (absent from copies written before it was
    /// recorded): the reader sizes its tables from it instead of growing them.
    #[serde(default)]
    halves: [usize; 2],
}

#[derive(Serialize)]
struct RestOut<'a> {
    applied: &'a FxHashMap<String, u64>,
    goldens: Vec<(&'a EnterpriseId, &'a GoldenState)>,
    member_of: &'a FxHashMap<String, EnterpriseId>,
    unlinked: &'a FxHashSet<String>,
}

#[derive(Deserialize)]
struct Rest {
    applied: FxHashMap<String, u64>,
    goldens: Vec<(EnterpriseId, GoldenState)>,
    member_of: FxHashMap<String, EnterpriseId>,
    unlinked: FxHashSet<String>,
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

/// This build's stamp: crate version, [`FORMAT`], and a digest of what three fixed Patients
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
        // A privacy-mode pseudonym's hashed birth date (`empi::record::HASHED_BIRTH_DATE`).
        json!({"resourceType": "Patient", "id": "c",
               "extension": [{"url": empi::record::HASHED_BIRTH_DATE, "valueString": "h"}]}),
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
    let seq = position.last_seq();
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
    let records: Vec<(&Record, EnterpriseId)> = cache.index.entries().collect();
    let (first_half, second_half) = records.split_at(records.len() / 2);
    let header = Header {
        stamp: stamp(),
        position: cache.position.to_string(),
        last_change,
        next_enterprise: cache.index.next_enterprise().0,
        halves: [first_half.len(), second_half.len()],
    };
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
        serde_json::to_writer(&mut *w, first_half)?;
        w.write_all(b"\n").map_err(serde_json::Error::io)?;
        serde_json::to_writer(&mut *w, second_half)?;
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
/// thread of its own; the work is shared by two threads (see [`Header`]).
fn read(path: &Path, model: Model, config: IndexConfig) -> Result<Loaded, SnapshotError> {
    let io = |e| SnapshotError::Io(path.to_owned(), e);
    let file = std::fs::File::open(path).map_err(io)?;
    let bytes = map(&file).map_err(io)?;
    let format = |e| SnapshotError::Format(path.to_owned(), e);
    let mut parts = bytes.splitn(4, |b| *b == b'\n');
    let (Some(header), Some(first), Some(second), Some(rest)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(format(serde_json::Error::io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "fewer than four parts",
        ))));
    };
    let header: Header = serde_json::from_slice(header).map_err(format)?;
    if header.stamp != stamp() {
        return Err(SnapshotError::Stamp(path.to_owned()));
    }
    fn panicked<T>() -> Result<T, serde_json::Error> {
        Err(serde_json::Error::io(std::io::Error::other(
            "a parsing thread panicked",
        )))
    }
    let [first_len, second_len] = header.halves;
    let (first, second) = std::thread::scope(|scope| {
        let second = scope.spawn(|| records(second, second_len));
        let first = records(first, first_len);
        (first, second.join().unwrap_or_else(|_| panicked()))
    });
    let (first, second) = (first.map_err(format)?, second.map_err(format)?);
    let (index, rest) = std::thread::scope(|scope| {
        let rest = scope.spawn(|| serde_json::from_slice::<Rest>(rest));
        let mut index = EnterpriseIndex::with_capacity(model, config, first.len() + second.len());
        for (record, e) in first.into_iter().chain(second) {
            let _ = index.restore(record, e);
        }
        if let Some(last) = header.next_enterprise.checked_sub(1) {
            index.note_used(EnterpriseId(last));
        }
        (index, rest.join().unwrap_or_else(|_| panicked()))
    });
    Ok(Loaded {
        header,
        index,
        rest: rest.map_err(format)?,
    })
}

/// The records with their identities: one half of a copy ([`Header`]).
type Records = Vec<(Record, EnterpriseId)>;

/// Fewer bytes than any record takes in a copy (its field names alone take more): a count
/// in a damaged header reserves no more than the bytes could hold.
const MIN_RECORD_BYTES: usize = 64;

/// Parses one half of the records, `len` of them (0 if unknown), into a vector of that size.
fn records(json: &[u8], len: usize) -> Result<Records, serde_json::Error> {
    let len = len.min(json.len() / MIN_RECORD_BYTES);
    use serde::de::{DeserializeSeed, SeqAccess, Visitor};
    struct Sized(usize);
    impl<'de> Visitor<'de> for Sized {
        type Value = Records;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an array of records with their identities")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Records, A::Error> {
            let mut out = Vec::with_capacity(self.0);
            while let Some(entry) = seq.next_element()? {
                out.push(entry);
            }
            Ok(out)
        }
    }
    impl<'de> DeserializeSeed<'de> for Sized {
        type Value = Records;
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Records, D::Error> {
            d.deserialize_seq(self)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(json);
    let out = Sized(len).deserialize(&mut de)?;
    de.end()?;
    Ok(out)
}

/// The copy's bytes, mapped rather than read: a read copies them into as much fresh memory,
/// which the kernel must zero page by page first, and on this kind of virtual machine a page
/// a process touches for the first time is slow to come (a quarter of a start-up's samples
/// at a million people went to zeroing the 1.2 GB buffer). Mapped, they are the page cache's
/// own pages, which the copy's writer at shutdown left there.
#[allow(unsafe_code)]
fn map(file: &std::fs::File) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: the mapping is only read, and a copy is never changed in place: `save` writes a
    // new file and renames it over the old one, so a reader keeps the inode it opened. A
    // process outside Renkei truncating the file while it is read would fault this one; the
    // same is true of every mapped file, and the data directory is Renkei's own.
    unsafe { memmap2::Mmap::map(file) }
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use empi::IndexConfig;
    use serde_json::{Value, json};
    use store::{FhirIndexExtractor, SqliteStore, WriteEntry, WriteOp};

    use super::*;
    use crate::Mpi;

    struct Dir(PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn open() -> (Arc<dyn Store>, Dir) {
        let dir = std::env::temp_dir().join(format!("renkei-snapshot-{}", uuid::Uuid::new_v4()));
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open_dir(&dir, Arc::new(FhirIndexExtractor::new())).unwrap());
        (store, Dir(dir))
    }

    fn mpi(store: &Arc<dyn Store>, snapshot: Option<&Path>) -> Arc<Mpi> {
        let mpi = Mpi::with_defaults(store.clone());
        Arc::new(match snapshot {
            Some(path) => mpi.with_snapshot(path.to_owned()),
            None => mpi,
        })
    }

    fn patient(id: &str, family: &str, given: &str, birth: &str, phone: &str) -> Value {
        json!({"resourceType": "Patient", "id": id, "gender": "female", "birthDate": birth,
               "name": [{"family": family, "given": [given]}],
               "telecom": [{"system": "phone", "value": phone}]})
    }

    async fn write(mpi: &Arc<Mpi>, ops: Vec<WriteOp>) {
        let entries = ops.into_iter().map(WriteEntry::new).collect();
        mpi.linked_store()
            .transaction(&RequestContext::system(), entries)
            .await
            .unwrap();
    }

    fn put(p: Value) -> WriteOp {
        WriteOp::Update {
            resource_type: "Patient".into(),
            id: p["id"].as_str().unwrap().to_owned(),
            resource: p,
            if_match: None,
        }
    }

    /// People, two of whom are one person (linked), and one in review (a twin).
    async fn people(mpi: &Arc<Mpi>) {
        write(
            mpi,
            vec![
                put(patient(
                    "a",
                    "Koch",
                    "Margaret",
                    "1925-06-26",
                    "555-162-4456",
                )),
                put(patient("b", "Smith", "John", "1971-05-12", "555-999-0000")),
            ],
        )
        .await;
        write(
            mpi,
            vec![put(patient(
                "c",
                "Koch",
                "Peggy",
                "1925-26-06",
                "5551624456",
            ))],
        )
        .await;
        write(
            mpi,
            vec![put(patient(
                "d",
                "Smith",
                "Jane",
                "1971-05-12",
                "555-999-0000",
            ))],
        )
        .await;
    }

    /// Everything the cache holds, in its order (`exact`) or sorted, after bringing it up to
    /// date.
    async fn state(mpi: &Mpi, exact: bool) -> String {
        let mut cache = mpi.cache.write().await;
        mpi.refresh(&mut cache, &RequestContext::system())
            .await
            .unwrap();
        let mut records: Vec<String> = cache
            .index
            .entries()
            .map(|(r, e)| format!("{e} {r:?}"))
            .collect();
        let sorted = |mut v: Vec<String>| {
            v.sort();
            v
        };
        if !exact {
            records.sort();
        }
        // A golden record deleted (its last source gone) is kept as such by a cache that saw
        // it live, and left out by one that only reads its current (deleted) version: the
        // same for every decision (retired, no members, its id never handed out again).
        let goldens = sorted(
            cache
                .goldens
                .iter()
                .filter(|(_, g)| exact || !(g.deleted && g.links.is_empty()))
                .map(|g| format!("{g:?}"))
                .collect(),
        );
        let member_of = sorted(cache.member_of.iter().map(|m| format!("{m:?}")).collect());
        let applied = sorted(cache.applied.iter().map(|a| format!("{a:?}")).collect());
        let unlinked = sorted(cache.unlinked.iter().cloned().collect());
        let next = if exact {
            cache.index.next_enterprise().to_string()
        } else {
            String::new()
        };
        format!(
            "{records:#?}\n{goldens:#?}\n{member_of:#?}\n{applied:#?}\n{unlinked:?}\n{} {next}",
            cache.position
        )
    }

    fn empty_cache() -> Cache {
        Cache::new(EnterpriseIndex::new(
            Model::default(),
            IndexConfig::default(),
        ))
    }

    /// Asserts that the copy at `path` loads (the four people of [`people`]) and that a new
    /// process reading it holds the index `saved` ([`state`]); returns that process's EMPI.
    async fn loads_as_saved(store: &Arc<dyn Store>, path: &Path, saved: &str) -> Arc<Mpi> {
        let mut cache = empty_cache();
        let n = load(&mut cache, store.as_ref(), &RequestContext::system(), path)
            .await
            .unwrap();
        assert_eq!(n, 4);
        let second = mpi(store, Some(path));
        second.start_loading().await.unwrap().unwrap();
        assert_eq!(state(&second, true).await, saved);
        second
    }

    /// Saved and read back, the index is the one saved, record order and identities to hand
    /// out next included; a new process reads it instead of the feed.
    #[tokio::test]
    async fn a_snapshot_restores_the_index_exactly() {
        let (store, dir) = open();
        let path = dir.0.join("empi-index.snapshot");
        let first = mpi(&store, Some(&path));
        people(&first).await;
        assert!(first.save_snapshot().await.unwrap().unwrap() > 0);
        let saved = state(&first, true).await;

        let second = loads_as_saved(&store, &path, &saved).await;
        let linked = second
            .identity_of(&RequestContext::system(), "c")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(linked.1, vec!["a".to_owned(), "c".to_owned()]);
    }

    /// A copy written before the header counted its records (no `halves`) still loads, into
    /// the same index.
    #[tokio::test]
    async fn a_copy_without_record_counts_still_loads() {
        let (store, dir) = open();
        let path = dir.0.join("empi-index.snapshot");
        let first = mpi(&store, Some(&path));
        people(&first).await;
        first.save_snapshot().await.unwrap();
        let saved = state(&first, true).await;
        let text = std::fs::read_to_string(&path).unwrap();
        let (header, rest) = text.split_once('\n').unwrap();
        let mut header: Value = serde_json::from_str(header).unwrap();
        assert_eq!(header["halves"], json!([2, 2]));
        header.as_object_mut().unwrap().remove("halves");
        std::fs::write(&path, format!("{header}\n{rest}")).unwrap();

        loads_as_saved(&store, &path, &saved).await;
    }

    /// A snapshot older than the store is caught up from the feed: written, updated and
    /// deleted Patients since are all there, as a load from the feed alone has them.
    #[tokio::test]
    async fn a_stale_snapshot_is_caught_up_from_the_feed() {
        let (store, dir) = open();
        let path = dir.0.join("empi-index.snapshot");
        let first = mpi(&store, Some(&path));
        people(&first).await;
        first.save_snapshot().await.unwrap();
        write(
            &first,
            vec![
                put(patient("e", "Koch", "Maggie", "1925-06-26", "555-162-4456")),
                put(patient(
                    "b",
                    "Smith",
                    "Johnny",
                    "1971-05-12",
                    "555-999-0001",
                )),
                WriteOp::Delete {
                    resource_type: "Patient".into(),
                    id: "d".into(),
                    if_match: None,
                },
            ],
        )
        .await;

        let from_snapshot = mpi(&store, Some(&path));
        from_snapshot.start_loading().await.unwrap().unwrap();
        let from_feed = mpi(&store, None);
        from_feed.start_loading().await.unwrap().unwrap();
        assert_eq!(
            state(&from_snapshot, false).await,
            state(&from_feed, false).await
        );
        let ctx = RequestContext::system();
        let e = from_snapshot.identity_of(&ctx, "e").await.unwrap().unwrap();
        assert_eq!(e.1, vec!["a".to_owned(), "c".to_owned(), "e".to_owned()]);
        assert!(
            from_snapshot
                .identity_of(&ctx, "d")
                .await
                .unwrap()
                .is_none()
        );
    }

    /// A copy that is corrupt, of another build's normalisation, or of another store is not
    /// used (each for its reason), and the index loads from the feed as without one.
    #[tokio::test]
    async fn unusable_snapshots_fall_back_to_the_feed() {
        let (store, dir) = open();
        let path = dir.0.join("empi-index.snapshot");
        let first = mpi(&store, Some(&path));
        people(&first).await;
        first.save_snapshot().await.unwrap();
        let good = std::fs::read(&path).unwrap();
        let from_feed = state(&mpi(&store, None), false).await;
        let ctx = RequestContext::system();

        // Missing.
        let missing = dir.0.join("none.snapshot");
        let err = load(&mut empty_cache(), store.as_ref(), &ctx, &missing)
            .await
            .unwrap_err();
        assert!(matches!(err, SnapshotError::Io(..)), "{err}");
        assert_eq!(state(&mpi(&store, Some(&missing)), false).await, from_feed);

        // Cut short, and not JSON.
        for bytes in [&good[..good.len() / 2], b"not a snapshot".as_slice()] {
            std::fs::write(&path, bytes).unwrap();
            let err = load(&mut empty_cache(), store.as_ref(), &ctx, &path)
                .await
                .unwrap_err();
            assert!(matches!(err, SnapshotError::Format(..)), "{err}");
            assert_eq!(state(&mpi(&store, Some(&path)), false).await, from_feed);
        }

        // Empty (mapping an empty file is an error of its own or an empty map, never a crash).
        std::fs::write(&path, b"").unwrap();
        assert!(
            load(&mut empty_cache(), store.as_ref(), &ctx, &path)
                .await
                .is_err()
        );
        assert_eq!(state(&mpi(&store, Some(&path)), false).await, from_feed);

        // A header whose record counts are absurd reserves no more than the bytes could hold,
        // and the copy still loads as it is.
        let text = String::from_utf8(good.clone()).unwrap();
        let huge = format!("\"halves\":[{},{}]", usize::MAX / 2, usize::MAX / 2);
        assert!(text.contains("\"halves\":[2,2]"));
        std::fs::write(&path, text.replacen("\"halves\":[2,2]", &huge, 1)).unwrap();
        let n = load(&mut empty_cache(), store.as_ref(), &ctx, &path)
            .await
            .unwrap();
        assert_eq!(n, 4);

        // Another build's record normalisation.
        std::fs::write(&path, text.replacen("renkei ", "renkei 0.0.0-other ", 1)).unwrap();
        let err = load(&mut empty_cache(), store.as_ref(), &ctx, &path)
            .await
            .unwrap_err();
        assert!(matches!(err, SnapshotError::Stamp(..)), "{err}");
        assert_eq!(state(&mpi(&store, Some(&path)), false).await, from_feed);

        // Another store (one with fewer changes than the copy's position: a store written
        // from scratch since): it holds no change, or another one, where the copy stands.
        std::fs::write(&path, &good).unwrap();
        let (other, _other_dir) = open();
        let writer = mpi(&other, None);
        write(
            &writer,
            vec![put(patient(
                "x",
                "Tanaka",
                "Yui",
                "2001-02-03",
                "03-1234-5678",
            ))],
        )
        .await;
        let err = load(&mut empty_cache(), other.as_ref(), &ctx, &path)
            .await
            .unwrap_err();
        assert!(matches!(err, SnapshotError::OtherStore(..)), "{err}");
        assert_eq!(
            state(&mpi(&other, Some(&path)), false).await,
            state(&mpi(&other, None), false).await
        );
    }
}
