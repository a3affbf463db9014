//! Files into a real SQLite store without the CLI: NDJSON chunks with bad lines reported and
//! skipped, a non-FHIR file skipped, a batch Bundle whose read is refused, references to
//! resources not on the server counted, and what the observer is told.

use std::io::Write;
use std::sync::Arc;

use ingest::R4Validator;
use ingest::import::{ImportObserver, Options, Summary, collect_files, import};
use serde_json::json;
use store::{FhirIndexExtractor, RequestContext, SqliteStore, Store};

#[derive(Default)]
struct Seen {
    problems: Vec<String>,
    commits: Vec<(usize, String)>,
    bytes: u64,
}

impl ImportObserver for Seen {
    fn problem(&mut self, message: &str, _: &Summary) {
        self.problems.push(message.to_owned());
    }

    fn committed(&mut self, resources: usize, what: &str) {
        self.commits.push((resources, what.to_owned()));
    }

    fn progress(&mut self, bytes: u64, _: &Summary) {
        self.bytes += bytes;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_imported_with_their_problems_named_and_counted() {
    let dir = std::env::temp_dir().join(format!("renkei-ingest-import-{}", uuid::Uuid::new_v4()));
    let input = dir.join("input");
    std::fs::create_dir_all(&input).unwrap();
    let mut f = std::fs::File::create(input.join("Observation.ndjson")).unwrap();
    writeln!(f, r#"{{"resourceType":"Observation","id":"o-1","status":"final","code":{{"text":"x"}},"subject":{{"reference":"Patient/nobody"}}}}"#).unwrap();
    writeln!(f, r#"{{"resourceType":"Observation","id":"o-2","status":"final","code":{{"text":"x"}},"subject":{{"reference":"Patient/p-1"}}}}"#).unwrap();
    drop(f);
    let mut f = std::fs::File::create(input.join("Patient.ndjson")).unwrap();
    writeln!(f, r#"{{"resourceType":"Patient","id":"p-1"}}"#).unwrap();
    writeln!(f, r#"{{"resourceType":"Patient","id":"#).unwrap();
    writeln!(
        f,
        r#"{{"resourceType":"Patient","id":"p-bad","birthDate":"1999-02-30"}}"#
    )
    .unwrap();
    drop(f);
    std::fs::write(input.join("log.ndjson"), "{\"level\":\"info\"}\n").unwrap();
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": {"resourceType": "Patient", "id": "p-2"},
         "request": {"method": "PUT", "url": "Patient/p-2"}},
        {"request": {"method": "GET", "url": "Patient/p-2"}}
    ]});
    std::fs::write(input.join("batch.json"), batch.to_string()).unwrap();

    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open_dir(&dir.join("data"), Arc::new(FhirIndexExtractor::new())).unwrap(),
    );
    let files = collect_files(std::slice::from_ref(&input)).unwrap();
    // Patients before the resources that point at them.
    assert!(files[0].ends_with("Patient.ndjson"), "{files:?}");
    let total: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    let mut seen = Seen::default();
    let summary = import(
        store.clone(),
        Arc::new(R4Validator),
        files,
        &Options::default(),
        &mut seen,
    )
    .await
    .unwrap();
    assert_eq!(
        (summary.resources, summary.created, summary.errors),
        (4, 4, 3),
        "{summary:?} {:?}",
        seen.problems
    );
    assert_eq!((summary.files, summary.skipped_files), (3, 1));
    assert_eq!(summary.dangling_references, 1);
    let problems = seen.problems.join("\n");
    assert!(
        problems.contains("Patient.ndjson:2: invalid JSON"),
        "{problems}"
    );
    assert!(
        problems.contains("Patient.ndjson:3: '1999-02-30' is not a valid date")
            && problems.contains("(Patient.birthDate)"),
        "{problems}"
    );
    assert!(
        problems.contains("batch.json: Bundle.entry[1]: a read (Patient/p-2) is not a write"),
        "{problems}"
    );
    assert_eq!(seen.commits.len(), 3, "{:?}", seen.commits);
    assert!(
        seen.commits
            .iter()
            .any(|(n, what)| *n == 2 && what.ends_with("batch.json"))
    );
    // The non-FHIR log is skipped unread; every other byte is accounted for.
    assert_eq!(seen.bytes + "{\"level\":\"info\"}\n".len() as u64, total);

    let ctx = RequestContext::system();
    for id in ["p-1", "p-2"] {
        assert!(
            store.load(&ctx, "Patient", id).await.unwrap().is_some(),
            "{id}"
        );
    }
    assert!(
        store
            .load(&ctx, "Patient", "p-bad")
            .await
            .unwrap()
            .is_none()
    );

    // Again: nothing changes, and the summary says so.
    let files = collect_files(std::slice::from_ref(&input)).unwrap();
    let again = import(
        store,
        Arc::new(R4Validator),
        files,
        &Options::default(),
        &mut Seen::default(),
    )
    .await
    .unwrap();
    assert_eq!((again.resources, again.unchanged), (4, 4), "{again:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_missing_input_is_an_error() {
    let missing = std::env::temp_dir().join(format!("renkei-missing-{}", uuid::Uuid::new_v4()));
    let e = collect_files(std::slice::from_ref(&missing)).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{} does not exist", missing.display())
    );
}

/// An SS-MIX2 tree through the HL7 v2 sink: the latest version of each record is imported,
/// a second pass finds nothing new, and a new importer (a restart) finds every receipt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ssmix2_tree_is_imported_once() {
    use ingest::hl7::{Hl7Config, StoreSink};
    use ingest::ssmix2::{FileOutcome, Importer, PassObserver};

    #[derive(Default)]
    struct Outcomes(Vec<FileOutcome>);
    impl PassObserver for Outcomes {
        fn done(&mut self, outcome: &FileOutcome) {
            self.0.push(outcome.clone());
        }
    }

    let dir = std::env::temp_dir().join(format!("renkei-ingest-ssmix2-{}", uuid::Uuid::new_v4()));
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open_dir(&dir, Arc::new(FhirIndexExtractor::new())).unwrap());
    let root =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ssmix2/tests/fixtures/tree");
    let mapping = Arc::new(hl7v2::fhir::MappingOptions::with_utc_offset("+09:00").unwrap());
    let sink = || StoreSink::new(store.clone(), Arc::new(R4Validator), &Hl7Config::default());
    let mut importer = Importer::new(sink(), &root, mapping.clone(), 4);
    let mut seen = Outcomes::default();
    let first = importer.pass(&mut seen).await.unwrap();
    // Two records: the ADT, and the later of the two PPR versions.
    assert_eq!(
        (first.imported, first.failed, first.files()),
        (2, 0, 2),
        "{seen:?}",
        seen = seen.0
    );
    assert_eq!(seen.0, [FileOutcome::Imported, FileOutcome::Imported]);
    let again = importer.pass(&mut Outcomes::default()).await.unwrap();
    assert_eq!(again.files(), 0);
    let restarted = Importer::new(sink(), &root, mapping, 4)
        .pass(&mut Outcomes::default())
        .await
        .unwrap();
    assert_eq!((restarted.unchanged, restarted.files()), (2, 2));
    let _ = std::fs::remove_dir_all(&dir);
}
