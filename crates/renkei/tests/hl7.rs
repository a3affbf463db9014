//! End-to-end HL7 v2 ingestion: the real binary (`serve --mllp`, `import --ssmix2`) on
//! SQLite and on PostgreSQL, messages over a real TCP socket, results read back over HTTP,
//! ACKs read by Python's hl7apy (an independent implementation).

#[path = "../../hl7v2/tests/hl7apy/python.rs"]
mod hl7apy_python;
mod support;

use std::path::PathBuf;
use std::process::Stdio;

use hl7v2::generate::{Generator, Style};
use serde_json::Value;
use support::{Backend, Data, Server, renkei};

/// MSA-1, MSA-2, ERR-2 and ERR-3.1 of an ACK.
fn msa(ack: &[u8]) -> (String, String, String, String) {
    let m = hl7v2::parse(ack).expect("an ACK Renkei can read");
    let msa = m.segment("MSA").expect("MSA");
    let err3 = m
        .segment("ERR")
        .map(|e| e.comp(3, 1).to_owned())
        .unwrap_or_default();
    let text = m.to_text();
    let err2 = text
        .split('\r')
        .find(|s| s.starts_with("ERR|"))
        .and_then(|s| s.split('|').nth(2))
        .unwrap_or_default()
        .to_owned();
    (msa.get(1).to_owned(), msa.get(2).to_owned(), err2, err3)
}

/// The number of current resources of a type.
/// Source Patients (the EMPI's golden records aside).
const SOURCE_PATIENTS: &str = "Patient?_tag:not=https://renkei.dev/fhir/CodeSystem/empi|golden";

async fn total(server: &Server, query: &str) -> u64 {
    let sep = if query.contains('?') { '&' } else { '?' };
    let (status, _, body) = server
        .send("GET", &format!("{query}{sep}_count=0"), &[], None)
        .await;
    assert_eq!(status, 200, "{query}: {body}");
    body["total"].as_u64().expect("a total")
}

async fn totals(server: &Server) -> Vec<u64> {
    let mut out = Vec::new();
    for ty in [
        SOURCE_PATIENTS,
        "Encounter",
        "Observation",
        "DiagnosticReport",
        "Provenance",
        "Practitioner",
    ] {
        out.push(total(server, ty).await);
    }
    out
}

async fn first(server: &Server, query: &str) -> Value {
    let (status, _, body) = server.send("GET", query, &[], None).await;
    assert_eq!(status, 200, "{query}: {body}");
    body["entry"][0]["resource"].clone()
}

/// Runs `read_acks.py` (the hl7v2 crate's hl7apy reader) over ACK files.
fn hl7apy_read(acks: &[Vec<u8>]) -> Vec<Value> {
    let python = hl7apy_python::python_with_hl7apy();
    let dir = std::env::temp_dir().join(format!("renkei-e2e-acks-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let files: Vec<PathBuf> = acks
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let p = dir.join(format!("{i}.hl7"));
            std::fs::write(&p, a).unwrap();
            p
        })
        .collect();
    let out = std::process::Command::new(&python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../hl7v2/tests/hl7apy/read_acks.py"
        ))
        .args(&files)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python} ({e})"));
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        out.status.success(),
        "hl7apy rejected a Renkei ACK:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn mllp_acks_store_replay_and_reject(backend: Backend) {
    let data = Data::new(backend).await;
    let server = Server::start_with(&data, &["--mllp", "127.0.0.1:0"]).await;
    let addr = server.mllp.expect("serve printed its MLLP address");
    let mut client = mllp::Client::connect(addr).await.unwrap();
    let mut g = Generator::new(11, Style::Us);
    let p = g.person();
    let adt = g.adt(&p, "A01");
    let oru = g.lab_result(&p);
    let mut acks = Vec::new();

    // Accepted: AA after the commit, echoing MSH-10.
    for m in [&adt, &oru] {
        let ack = client.request(&m.bytes).await.unwrap().expect("an ACK");
        let (code, control, _, _) = msa(&ack);
        assert_eq!(
            (code.as_str(), control.as_str()),
            ("AA", m.control_id.as_str())
        );
        acks.push(ack);
    }
    let before = totals(&server).await;
    assert_eq!(before[0], 1, "one patient from ADT and ORU: {before:?}");
    assert_eq!(
        total(
            &server,
            "Patient?_tag=https://renkei.dev/fhir/CodeSystem/empi|golden"
        )
        .await,
        1,
        "and its golden record"
    );
    assert!(
        before[2] >= 1 && before[3] == 1 && before[4] == 2,
        "{before:?}"
    );
    let patient = first(&server, "Patient").await;
    let source = patient["meta"]["source"].as_str().unwrap();
    assert!(source.starts_with("urn:renkei:v2:"), "{source}");
    let observation = first(&server, "Observation").await;
    assert!(
        observation["meta"]["source"]
            .as_str()
            .unwrap()
            .ends_with(&format!("#{}", oru.control_id))
    );
    // Found through its references (index rows extracted while they were still `urn:uuid:`s).
    let subject = observation["subject"]["reference"].as_str().unwrap();
    assert!(subject.starts_with("Patient/"), "{subject}");
    assert_eq!(
        total(&server, &format!("Observation?patient={subject}")).await,
        before[2],
        "every Observation is of the one patient"
    );
    let observation_ref = format!("Observation/{}", observation["id"].as_str().unwrap());
    for search in ["DiagnosticReport?result=", "Provenance?target="] {
        assert_eq!(
            total(&server, &format!("{search}{observation_ref}")).await,
            1,
            "{search}"
        );
    }

    // A re-send gets the same ACK, byte for byte, and writes nothing.
    let again = client.request(&oru.bytes).await.unwrap().unwrap();
    assert_eq!(again, acks[1]);
    assert_eq!(totals(&server).await, before);
    let reread = first(&server, "Patient").await;
    assert_eq!(reread["meta"]["versionId"], patient["meta"]["versionId"]);

    // Two connections racing with one new message: one commit, the same ACK on both.
    let q = g.person();
    let racing = g.adt(&q, "A04");
    let send = |bytes: Vec<u8>| async move {
        let mut c = mllp::Client::connect(addr).await.unwrap();
        c.request(&bytes).await.unwrap().unwrap()
    };
    let (a, b) = tokio::join!(send(racing.bytes.clone()), send(racing.bytes.clone()));
    assert_eq!(a, b);
    assert_eq!(msa(&a).0, "AA");
    let after_race = totals(&server).await;
    assert_eq!(after_race[0], before[0] + 1, "{after_race:?}");

    // Content errors (AE, ERR names segment and field) and rejections (AR) store nothing.
    let bad: [(&[u8], &str, &str, &str); 4] = [
        (
            b"MSH|^~\\&|LAB|GENHOSP|RENKEI|HIE|20260101||ADT^A01|E1|P|2.5\rEVN|A01\rPID|1||\r",
            "AE",
            "PID^1^3",
            "101",
        ),
        (
            b"MSH|^~\\&|LAB|GENHOSP|RENKEI|HIE|20260101||QRY^Q01|E2|P|2.5\r",
            "AR",
            "MSH^1^9",
            "200",
        ),
        (
            b"MSH|^~\\&|LAB|GENHOSP|RENKEI|HIE|20260101||ADT^A01|E3|P|2.1\rEVN|A01\rPID|1||9^^^GENHOSP^MR\r",
            "AR",
            "MSH^1^12",
            "203",
        ),
        // ADT_A02 requires PV1 after PID.
        (
            b"MSH|^~\\&|LAB|GENHOSP|RENKEI|HIE|20260101||ADT^A02|E4|P|2.5\rEVN||20260101\rPID|1||9^^^GENHOSP^MR\rDB1|1\r",
            "AE",
            "DB1^1",
            "100",
        ),
    ];
    for (bytes, code, location, err3) in bad {
        let ack = client.request(bytes).await.unwrap().expect("an ACK");
        let (got, _, err2, got3) = msa(&ack);
        assert_eq!(
            (got.as_str(), got3.as_str()),
            (code, err3),
            "{}",
            String::from_utf8_lossy(&ack)
        );
        assert!(
            err2.starts_with(location),
            "ERR-2 {err2} should name {location}"
        );
        if err3 == "100" {
            let text = String::from_utf8_lossy(&ack);
            assert!(text.contains("PV1 is required before it"), "{text}");
        }
        // The AR to a v2.1 message answers in v2.1, which hl7apy does not read.
        if err3 != "203" {
            acks.push(ack);
        }
    }
    assert_eq!(totals(&server).await, after_race);

    // An ADT without EVN (required by the standard's structures, left out by some feeds) is
    // accepted: MSH-9 names the event; the AA warns.
    let ack = client
        .request(b"MSH|^~\\&|LAB|GENHOSP|RENKEI|HIE|20260101||ADT^A01|E5|P|2.5\rPID|1||77^^^GENHOSP^MR\rPV1|1|I\r")
        .await
        .unwrap()
        .expect("an ACK");
    let (got, _, _, got3) = msa(&ack);
    let text = String::from_utf8_lossy(&ack);
    assert_eq!((got.as_str(), got3.as_str()), ("AA", "100"), "{text}");
    assert!(text.contains("EVN is missing"), "{text}");
    acks.push(ack);
    let stored = totals(&server).await;
    assert_eq!(stored[0], after_race[0] + 1, "the ADT stored its Patient");
    let after_race = stored;

    // Garbage, a frame without MSH, and a truncated frame: never half-stored, and the
    // listener keeps serving.
    let mut junk = mllp::Client::connect(addr).await.unwrap();
    junk.send_raw(b"\x00\x01garbage\r\n").await.unwrap();
    let reply = junk
        .request(b"EVN|A01\rPID|1||1^^^GENHOSP^MR\r")
        .await
        .unwrap();
    if let Some(ack) = reply {
        assert_eq!(msa(&ack).0, "AR");
    }
    let mut cut = mllp::Client::connect(addr).await.unwrap();
    let r = g.person();
    let truncated = g.adt(&r, "A01").bytes;
    cut.send_raw(b"\x0b").await.unwrap();
    cut.send_raw(&truncated[..truncated.len() / 2])
        .await
        .unwrap();
    drop(cut);
    assert_eq!(totals(&server).await, after_race);

    // A40: the survivor gets `replaces`, the retired patient `replaced-by` and inactive.
    let merge = g.merge(&p, "OLD-77");
    let ack = client.request(&merge.bytes).await.unwrap().unwrap();
    assert_eq!(msa(&ack).0, "AA", "{}", String::from_utf8_lossy(&ack));
    acks.push(ack);
    let retired = first(&server, "Patient?active=false").await;
    assert_eq!(retired["link"][0]["type"], "replaced-by");
    let survivor_ref = retired["link"][0]["other"]["reference"].as_str().unwrap();
    let survivor = server.send("GET", survivor_ref, &[], None).await.2;
    assert_eq!(survivor["link"][0]["type"], "replaces", "{survivor}");
    // The EMPI follows the sender: one enterprise identity holds both.
    let golden_listing = |id: &str| {
        format!("Patient?_tag=https://renkei.dev/fhir/CodeSystem/empi|golden&link=Patient/{id}")
    };
    let g_retired = first(&server, &golden_listing(retired["id"].as_str().unwrap())).await;
    let g_survivor = first(&server, &golden_listing(survivor["id"].as_str().unwrap())).await;
    assert_eq!(g_retired["id"], g_survivor["id"], "{g_retired}");

    // Another implementation reads every ACK Renkei sent.
    let read = hl7apy_read(&acks);
    let codes: Vec<&str> = read.iter().map(|r| r["msa1"].as_str().unwrap()).collect();
    assert_eq!(codes, ["AA", "AA", "AE", "AR", "AE", "AA", "AA"]);
    assert!(read.iter().all(|r| r["valid"] == true), "{read:?}");
    assert_eq!(server.terminate().code(), Some(0));
}

/// `serve --mllp` with `TZ` set in its environment and its log (at info) in a file.
async fn serve_with_tz(data: &Data, tz: &str) -> (Server, PathBuf) {
    let log = data.dir.join("serve.log");
    let server = Server::start_logged(data, &["--mllp", "127.0.0.1:0"], &[("TZ", tz)], &log).await;
    (server, log)
}

/// US Eastern time: the zone file when the host has it, else the same rules as POSIX TZ.
fn new_york() -> (&'static str, &'static str) {
    if std::path::Path::new("/usr/share/zoneinfo/America/New_York").is_file() {
        ("America/New_York", "America/New_York")
    } else {
        ("EST5EDT,M3.2.0,M11.1.0", "EST5EDT,M3.2.0,M11.1.0")
    }
}

/// An ORU^R01 whose OBX-14 (and MSH-7) carry no UTC offset.
fn oru_at(control_id: &str, obx14: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|LAB|GENHOSP|RENKEI|HIE|{obx14}||ORU^R01^ORU_R01|{control_id}|P|2.5.1\r\
         PID|1||TZ-1^^^GENHOSP^MR||Zeitzone^Tina||19800101|F\r\
         OBR|1||{control_id}|718-7^Hemoglobin^LN\r\
         OBX|1|NM|718-7^Hemoglobin^LN||13.5|g/dL^^UCUM|||||F|||{obx14}\r"
    )
    .into_bytes()
}

/// Times without an offset keep their time of day, placed in the host's zone (TZ) with the
/// offset in force on their date; a time that zone skipped is an AE naming the field; every
/// AE/AR is logged with its control id and sender, without the message's values.
async fn hl7_times_keep_their_hour_and_refusals_are_logged(backend: Backend) {
    let data = Data::new(backend).await;
    let (tz, zone_name) = new_york();
    let (server, log) = serve_with_tz(&data, tz).await;
    let mut client = mllp::Client::connect(server.mllp.unwrap()).await.unwrap();
    for (control, when) in [
        ("TZ-WINTER", "20240115110000"),
        ("TZ-SUMMER", "20240715110000"),
    ] {
        let ack = client
            .request(&oru_at(control, when))
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&ack).into_owned();
        assert_eq!(msa(&ack).0, "AA", "{text}");
        assert!(!text.contains("\rERR|"), "no warning: {text}");
        // The ACK answers from whom the message was addressed to (MSH-5/6).
        assert!(
            text.starts_with("MSH|^~\\&|RENKEI|HIE|LAB|GENHOSP|"),
            "{text}"
        );
    }
    let mut effective: Vec<String> = Vec::new();
    for control in ["TZ-WINTER", "TZ-SUMMER"] {
        let report = first(&server, &format!("DiagnosticReport?identifier={control}")).await;
        let observation = server
            .send(
                "GET",
                report["result"][0]["reference"].as_str().unwrap(),
                &[],
                None,
            )
            .await
            .2;
        effective.push(
            observation["effectiveDateTime"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(
        effective,
        ["2024-01-15T11:00:00-05:00", "2024-07-15T11:00:00-04:00"]
    );
    // 02:30 on 10 March 2024 never happened in New York.
    let gap = client
        .request(&oru_at("TZ-GAP", "20240310023000"))
        .await
        .unwrap()
        .unwrap();
    let (code, _, err2, err3) = msa(&gap);
    assert_eq!((code.as_str(), err3.as_str()), ("AE", "102"));
    assert!(err2.starts_with("OBX^1^14"), "{err2}");
    assert_eq!(
        total(&server, "DiagnosticReport?identifier=TZ-GAP").await,
        0
    );
    assert_eq!(server.terminate().code(), Some(0));

    let log = std::fs::read_to_string(log).unwrap();
    assert!(
        log.contains(&format!(
            "HL7 v2 times without an offset are read in {zone_name} (UTC-0"
        )) && log.contains("--hl7-utc-offset overrides"),
        "{log}"
    );
    let refused: Vec<&str> = log.lines().filter(|l| l.contains("TZ-GAP")).collect();
    assert_eq!(refused.len(), 1, "{log}");
    for part in [
        "WARN",
        "AE",
        "LAB",
        "GENHOSP",
        "OBX[1]-14",
        "102 Data type error",
    ] {
        assert!(refused[0].contains(part), "{part} missing: {}", refused[0]);
    }
    // No patient data: neither the value nor the patient.
    for data in ["20240310023000", "Zeitzone", "TZ-1"] {
        assert!(!log.contains(data), "{data} in the log:\n{log}");
    }
}

/// A `TZ` naming no zone is refused at start-up: chrono would read it as UTC, silently.
#[test]
fn an_unknown_tz_stops_the_start_instead_of_reading_utc() {
    let dir = std::env::temp_dir().join(format!("renkei-e2e-{}", uuid::Uuid::new_v4()));
    let run = |extra: &[&str]| {
        renkei()
            .args(["serve", "--data"])
            .arg(&dir)
            .args(["--listen", "127.0.0.1:0", "--mllp", "127.0.0.1:0"])
            .args(extra)
            .env("TZ", "Mars/Olympus_Mons")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let out = run(&[]).wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("TZ=\"Mars/Olympus_Mons\" names no time zone")
            && stderr.contains("--hl7-utc-offset"),
        "{stderr}"
    );
    // With an explicit offset the zone is not needed: the server comes up.
    let mut child = run(&["--hl7-utc-offset", "+09:00"]);
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.starts_with("renkei listening on"), "{line:?}");
    std::fs::remove_dir_all(&dir).ok();
}

fn import(data: &Data, root: &std::path::Path) -> String {
    import_with_log(data, root).0
}

/// The import's stdout (its summary) and stderr (its log), in Japan's time zone.
fn import_with_log(data: &Data, root: &std::path::Path) -> (String, String) {
    import_tz(data, root, "Asia/Tokyo")
}

/// `import --ssmix2` with `TZ` set (the host zone is the default there too): its stdout (the
/// summary) and stderr (its log).
fn import_tz(data: &Data, root: &std::path::Path, tz: &str) -> (String, String) {
    let out = renkei()
        .args(["import", "--quiet", "--ssmix2"])
        .arg(root)
        .args(data.args())
        .env("TZ", tz)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "import failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn ssmix2_import_is_idempotent_and_honours_deletion(backend: Backend) {
    let data = Data::new(backend).await;
    let root = data.dir.join("ssmix2");
    let names = ssmix2::write_sample_tree(&root, 3, 5).unwrap();
    assert_eq!(names.len(), 21);
    let first_run = import(&data, &root);
    assert!(
        first_run.contains("21 imported, 0 retracted, 0 unchanged, 0 failed"),
        "{first_run}"
    );
    assert!(
        first_run
            .contains("0 other files skipped; 0 references to resources not (yet) on this server"),
        "{first_run}"
    );
    // A stray file in the tree is skipped, named in the log and counted.
    let stray = root.join("notes.txt");
    std::fs::write(&stray, "not an SS-MIX2 file").unwrap();
    let (second, log) = import_with_log(&data, &root);
    assert!(
        second.contains("0 imported, 0 retracted, 21 unchanged, 0 failed; 1 other files skipped"),
        "{second}"
    );
    assert!(
        log.contains("notes.txt") && log.contains("skipped"),
        "{log}"
    );
    std::fs::remove_file(&stray).unwrap();

    let server = Server::start(&data).await;
    let before = totals(&server).await;
    assert_eq!(before[0], 3, "{before:?}");
    assert_eq!(
        total(&server, "Observation?status=entered-in-error").await,
        0
    );
    let kanji = first(&server, "Patient").await;
    assert!(
        kanji["name"].to_string().chars().any(|c| c > '\u{3000}'),
        "{kanji}"
    );
    // JAHIS times carry no offset: read in the host's zone, Tokyo here, to the minute.
    let observation = first(&server, "Observation?_sort=date").await;
    let when = observation["effectiveDateTime"].as_str().unwrap();
    assert!(when.len() > 10 && when.ends_with("+09:00"), "{when}");
    drop(server);

    // The sender deletes one lab result: its file is re-flagged 0.
    let lab = names
        .iter()
        .find(|n| n.key.data_type.starts_with("OML-11"))
        .expect("a lab result file");
    ssmix2::invalidate(&root, lab).unwrap();
    let third = import(&data, &root);
    assert!(
        third.contains("0 imported, 1 retracted, 20 unchanged"),
        "{third}"
    );
    let fourth = import(&data, &root);
    assert!(
        fourth.contains("0 imported, 0 retracted, 21 unchanged"),
        "{fourth}"
    );

    let server = Server::start(&data).await;
    assert!(total(&server, "Observation?status=entered-in-error").await >= 1);
    let after = totals(&server).await;
    assert_eq!(after[..4], before[..4], "a retraction creates no records");
}

async fn ssmix2_watch_follows_a_live_tree(backend: Backend) {
    use std::io::{BufRead, BufReader};
    let data = Data::new(backend).await;
    let root = data.dir.join("ssmix2");
    ssmix2::write_sample_tree(&root, 1, 8).unwrap();
    let mut child = renkei()
        .args([
            "import",
            "--quiet",
            "--watch",
            "--interval",
            "0.1",
            "--ssmix2",
        ])
        .arg(&root)
        .args(data.args())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = move || lines.next().unwrap().unwrap();
    let line = tokio::task::spawn_blocking({
        let l = next();
        move || l
    })
    .await
    .unwrap();
    assert!(line.contains("7 imported"), "{line}");
    // A second patient arrives while the importer watches.
    ssmix2::write_sample_tree(&root, 2, 8).unwrap();
    let line = tokio::task::spawn_blocking(next).await.unwrap();
    assert!(line.contains("7 imported"), "{line}");
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
    let server = Server::start(&data).await;
    assert_eq!(total(&server, SOURCE_PATIENTS).await, 2);
}

/// A message sent in the crash test: what it is and whether it was acknowledged.
struct Sent {
    bytes: Vec<u8>,
    lab: bool,
    acknowledged: bool,
}

/// Eight senders keep the group commit busy; the server is killed (SIGKILL) while messages
/// are in flight. After a restart, every acknowledged message is there (its re-sent copy is
/// answered from its receipt), and sending everything again leaves exactly one set of
/// resources per message: nothing acknowledged was lost, nothing was half-stored, nothing
/// was stored twice.
async fn kill_9_during_mllp_ingest_loses_nothing_acknowledged(backend: Backend) {
    const SENDERS: u64 = 8;
    const ACKNOWLEDGED_BEFORE_KILL: usize = 120;
    let data = Data::new(backend).await;
    let server = Server::start_with(&data, &["--mllp", "127.0.0.1:0"]).await;
    let addr = server.mllp.expect("serve printed its MLLP address");
    let acknowledged = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut senders = Vec::new();
    for seed in 0..SENDERS {
        let acknowledged = acknowledged.clone();
        senders.push(tokio::spawn(async move {
            let mut g = Generator::new(100 + seed, Style::Us);
            let mut client = mllp::Client::connect(addr).await.unwrap();
            let mut sent: Vec<Sent> = Vec::new();
            // Until the connection breaks (the kill), or long past the kill's threshold.
            'send: for _ in 0..400 {
                let p = g.person();
                for (message, lab) in [(g.adt(&p, "A01"), false), (g.lab_result(&p), true)] {
                    sent.push(Sent {
                        bytes: message.bytes.clone(),
                        lab,
                        acknowledged: false,
                    });
                    match client.request(&message.bytes).await {
                        Ok(Some(ack)) => {
                            let (code, control, _, _) = msa(&ack);
                            assert_eq!((code.as_str(), control), ("AA", message.control_id));
                            sent.last_mut().unwrap().acknowledged = true;
                            acknowledged.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        Ok(None) | Err(_) => break 'send,
                    }
                }
            }
            sent
        }));
    }
    while acknowledged.load(std::sync::atomic::Ordering::SeqCst) < ACKNOWLEDGED_BEFORE_KILL {
        assert!(
            !senders.iter().all(|s| s.is_finished()),
            "the senders stopped before {ACKNOWLEDGED_BEFORE_KILL} acknowledgements"
        );
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    drop(server); // SIGKILL, with messages in flight on every connection
    let mut sent = Vec::new();
    for s in senders {
        sent.extend(s.await.unwrap());
    }
    let acked: Vec<&Sent> = sent.iter().filter(|s| s.acknowledged).collect();
    assert!(acked.len() >= ACKNOWLEDGED_BEFORE_KILL);
    assert!(
        acked.len() < sent.len(),
        "the kill found no message in flight"
    );

    let server = Server::start_with(&data, &["--mllp", "127.0.0.1:0"]).await;
    let addr = server.mllp.expect("serve printed its MLLP address");
    let stored = totals(&server).await;
    // Every acknowledged message's resources survived: at least one Provenance each.
    assert!(
        stored[4] as usize >= acked.len(),
        "{} Provenances for {} acknowledged messages",
        stored[4],
        acked.len()
    );
    // Re-sent, an acknowledged message is a duplicate: its ACK comes from the receipt and
    // nothing is written.
    let mut client = mllp::Client::connect(addr).await.unwrap();
    for s in &acked {
        let ack = client.request(&s.bytes).await.unwrap().expect("an ACK");
        assert_eq!(msa(&ack).0, "AA");
    }
    assert_eq!(
        totals(&server).await,
        stored,
        "a re-sent message wrote again"
    );
    // Everything sent, once more: each message now has exactly its own resources.
    for s in &sent {
        let ack = client.request(&s.bytes).await.unwrap().expect("an ACK");
        assert_eq!(msa(&ack).0, "AA");
    }
    let labs = sent.iter().filter(|s| s.lab).count() as u64;
    let after = totals(&server).await;
    assert_eq!(after[4], sent.len() as u64, "Provenances: one per message");
    assert_eq!(after[3], labs, "DiagnosticReports: one per lab result");
    assert_eq!(
        after[1],
        sent.len() as u64 - labs,
        "Encounters: one per ADT"
    );
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Postgres).await;
                }
            )*
        }
    };
}

both!(
    mllp_acks_store_replay_and_reject,
    hl7_times_keep_their_hour_and_refusals_are_logged,
    kill_9_during_mllp_ingest_loses_nothing_acknowledged,
    ssmix2_import_is_idempotent_and_honours_deletion,
    ssmix2_watch_follows_a_live_tree,
);
