//! A generated SS-MIX2 tree (JAHIS-style messages in ISO-2022-JP) read back: names, the
//! condition flag, ordering, checkpoints, the watcher, and bad files.

use std::path::{Path, PathBuf};

use hl7v2::generate::{Generator, Style};
use ssmix2::{
    Change, Checkpoint, Condition, FileName, Skipped, Ssmix2Error, Watcher, current, invalidate,
    read_message, scan, store,
};

struct Tree {
    root: PathBuf,
}

impl Tree {
    fn new(tag: &str) -> Tree {
        let root = std::env::temp_dir().join(format!("renkei-ssmix2-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        Tree { root }
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Write `patients` patients' records; returns the file names written.
fn fill(root: &Path, patients: usize, seed: u64) -> Vec<FileName> {
    let mut g = Generator::new(seed, Style::Jahis);
    let mut names = Vec::new();
    for i in 0..patients {
        let p = g.person();
        for (j, m) in g.record(&p).into_iter().enumerate() {
            let ts = format!("20260110{:02}{:02}00{:03}", 8 + i % 10, j, i % 1000);
            let name = FileName::for_message(
                &m.patient_id,
                m.care_date.as_deref(),
                &m.message_type,
                m.order_number.as_deref(),
                &ts,
            )
            .unwrap_or_else(|| panic!("no data type for {}", m.message_type));
            store(root, &name, &m.bytes).unwrap();
            names.push(name);
        }
    }
    names
}

#[test]
fn generated_tree_reads_back_and_maps() {
    let tree = Tree::new("read");
    let names = fill(&tree.root, 5, 1);
    let scanned = scan(&tree.root).unwrap();
    assert!(scanned.skipped.is_empty(), "{:?}", scanned.skipped);
    assert_eq!(scanned.files.len(), names.len());
    let changes = current(&scanned.files);
    assert_eq!(changes.len(), names.len());
    // Ordered by timestamp; ADT-00 (patient basics) first for each patient.
    let first = changes[0].file();
    assert_eq!(first.name.key.data_type, "ADT-00");
    assert!(
        changes
            .windows(2)
            .all(|w| w[0].file().name.timestamp <= w[1].file().name.timestamp)
    );
    let options = hl7v2::fhir::MappingOptions::with_utc_offset("+09:00").unwrap();
    for change in &changes {
        let Change::Current(file) = change else {
            panic!("all valid")
        };
        let (bytes, message) = read_message(file).unwrap();
        assert!(bytes.iter().all(u8::is_ascii), "SS-MIX2 files are 7-bit");
        assert_eq!(message.charset, hl7v2::Charset::Iso2022Jp);
        let pid = message.segment("PID").unwrap();
        assert_eq!(pid.comp(3, 1), file.name.key.patient_id);
        let mapped = hl7v2::fhir::to_transaction_with(&message, &options).unwrap();
        fhir::validate_resource(&mapped.bundle).unwrap();
    }
    // Care dates: ADT-00, ADT-61 and PPR-01 live under "-".
    assert!(
        scanned
            .files
            .iter()
            .any(|f| f.path.to_string_lossy().contains("/-/ADT-00/"))
    );
    assert!(
        scanned
            .files
            .iter()
            .any(|f| f.path.to_string_lossy().contains("/-/PPR-01/"))
    );
}

#[test]
fn latest_valid_file_wins_and_deletions_retract() {
    let tree = Tree::new("flags");
    let names = fill(&tree.root, 1, 2);
    let lab = names
        .iter()
        .find(|n| n.key.data_type == "OML-11")
        .unwrap()
        .clone();
    let rx = names
        .iter()
        .find(|n| n.key.data_type == "OMP-01")
        .unwrap()
        .clone();

    // A correction: the old file is flagged 0, a newer valid file is written.
    invalidate(&tree.root, &lab).unwrap();
    let mut corrected = lab.clone();
    corrected.timestamp = "20270101000000000".into();
    std::fs::copy(
        tree.root.join({
            let mut old = lab.clone();
            old.condition = Condition::Invalid;
            old.relative_path()
        }),
        tree.root.join(corrected.relative_path()),
    )
    .unwrap();
    // A deletion: the only file is flagged 0.
    invalidate(&tree.root, &rx).unwrap();

    let changes = current(&scan(&tree.root).unwrap().files);
    assert_eq!(changes.len(), names.len());
    let lab_change = changes.iter().find(|c| c.key() == &lab.key).unwrap();
    assert!(matches!(lab_change, Change::Current(f) if f.name.timestamp == "20270101000000000"));
    let rx_change = changes.iter().find(|c| c.key() == &rx.key).unwrap();
    assert!(matches!(rx_change, Change::Retracted(_)));
    // The correction is the newest: last in import order.
    assert_eq!(changes.last().unwrap().key(), &lab.key);
}

#[test]
fn checkpoint_makes_reimport_idempotent_and_watch_sees_new_files() {
    let tree = Tree::new("watch");
    fill(&tree.root, 2, 3);
    let mut watcher = Watcher::new(&tree.root, Checkpoint::default());
    let first = watcher.poll().unwrap();
    assert_eq!(first.len(), 14);
    // Import all but the last; the last comes back at the next poll.
    for c in &first[..13] {
        watcher.checkpoint.mark(c);
    }
    assert_eq!(watcher.poll().unwrap(), vec![first[13].clone()]);
    watcher.checkpoint.mark(&first[13]);
    assert!(watcher.poll().unwrap().is_empty(), "re-import does nothing");

    // The checkpoint survives a round trip through its text form.
    let restored = Checkpoint::from_text(&watcher.checkpoint.to_text()).unwrap();
    assert_eq!(restored, watcher.checkpoint);
    assert!(matches!(
        Checkpoint::from_text("x\ty\n"),
        Err(Ssmix2Error::Checkpoint { line: 1 })
    ));

    // A new patient arrives: only their files are pending.
    fill(&tree.root, 1, 99);
    let new = watcher.poll().unwrap();
    assert_eq!(new.len(), 7);
    // A deletion of an imported record is pending as a retraction.
    for c in &new {
        watcher.checkpoint.mark(c);
    }
    let victim = new[2].file().name.clone();
    invalidate(&tree.root, &victim).unwrap();
    let pending = watcher.poll().unwrap();
    assert_eq!(pending.len(), 1);
    assert!(matches!(&pending[0], Change::Retracted(f) if f.name.key == victim.key));
}

#[test]
fn odd_files_are_skipped_and_bad_bytes_are_errors() {
    let tree = Tree::new("odd");
    let names = fill(&tree.root, 1, 4);
    std::fs::write(tree.root.join("README.txt"), "not a message").unwrap();
    std::fs::write(tree.root.join(".DS_Store"), "").unwrap();
    let misplaced = tree.root.join(names[0].to_string());
    std::fs::write(&misplaced, "MSH|").unwrap();
    let scanned = scan(&tree.root).unwrap();
    assert_eq!(scanned.files.len(), names.len());
    assert_eq!(scanned.skipped.len(), 2, "{:?}", scanned.skipped);
    assert!(
        scanned
            .skipped
            .iter()
            .any(|s| matches!(s, Skipped::BadName { .. }))
    );
    assert!(
        scanned
            .skipped
            .iter()
            .any(|s| matches!(s, Skipped::Misplaced { path, .. } if *path == misplaced))
    );

    // Invalid ISO-2022-JP inside a stored file: a typed error naming the file.
    let bad = FileName::for_message("9999999", None, "ADT^A08", None, "20260101000000000").unwrap();
    store(&tree.root, &bad, b"MSH|^~\\&|H|F|R|R|2026||ADT^A08^ADT_A01|1|P|2.5||||||~ISO IR87\rPID|||9999999^^^^PI||\x1b$B\x7f\x7f\x1b(B\r").unwrap();
    let file = scan(&tree.root)
        .unwrap()
        .files
        .into_iter()
        .find(|f| f.name == bad)
        .unwrap();
    let err = read_message(&file).unwrap_err();
    assert!(
        matches!(
            err,
            Ssmix2Error::Message {
                source: hl7v2::ParseError::InvalidBytes { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("9999999_-_ADT-00"));
}
