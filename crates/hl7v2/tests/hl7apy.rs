//! An independent implementation reads what Renkei writes: ACKs built by this crate are
//! parsed and strictly validated by Python's `hl7apy` (installed, pinned, by
//! `scripts/install-hl7apy.sh`, which the test runs itself when hl7apy is missing: see
//! `hl7apy/python.rs`).

#[path = "hl7apy/python.rs"]
mod python;

use std::path::PathBuf;
use std::process::Command;

use hl7v2::ack::{AckHeader, Outcome, ack_unparseable, acknowledge};
use hl7v2::generate::{Generator, Style};
use hl7v2::{ErrorCode, ErrorDetail, Location, Severity, parse};
use serde_json::Value;

fn header(n: usize) -> AckHeader {
    AckHeader {
        application: "RENKEI".into(),
        facility: "HIE".into(),
        control_id: format!("ACK{n:05}"),
        timestamp: "20260102030405+0900".into(),
    }
}

#[test]
fn hl7apy_reads_renkei_acks() {
    let python = python::python_with_hl7apy();
    let dir = std::env::temp_dir().join(format!("renkei-hl7apy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut files: Vec<(PathBuf, &str, &str)> = Vec::new();
    let mut write = |name: &str, bytes: Vec<u8>, code: &'static str, err3: &'static str| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        files.push((path, code, err3));
    };

    let mut us = Generator::new(1, Style::Us);
    let p = us.person();
    let adt = parse(&us.adt(&p, "A01").bytes).unwrap();
    let aa = acknowledge(&adt, &Outcome::Accepted, &header(1))
        .immediate
        .unwrap();
    write("aa.hl7", aa.encode().unwrap(), "AA", "");

    let error = ErrorDetail {
        location: Some(Location::field("PID", 1, 7)),
        code: ErrorCode::DataTypeError,
        severity: Severity::Error,
        message: "PID-7 is not a date | see ^ spec".into(),
    };
    let ae = acknowledge(&adt, &Outcome::Error(vec![error]), &header(2))
        .immediate
        .unwrap();
    write("ae.hl7", ae.encode().unwrap(), "AE", "102");

    let unsupported =
        parse(b"MSH|^~\\&|EPIC|GENHOSP|RENKEI|HIE|20260101||QBP^Q22^QBP_Q21|Q1|P|2.5.1\r").unwrap();
    let err = hl7v2::structure::structure(&unsupported).unwrap_err();
    let ar = acknowledge(
        &unsupported,
        &Outcome::from_errors(vec![err.detail()]),
        &header(3),
    )
    .immediate
    .unwrap();
    write("ar.hl7", ar.encode().unwrap(), "AR", "200");

    let raw = b"MSH|^~|EPIC|GENHOSP|RENKEI|HIE|20260101||ADT^A01|C9|P|2.5\r";
    let bad = ack_unparseable(raw, &parse(raw).unwrap_err(), &header(4));
    write("ar-unparseable.hl7", bad.encode().unwrap(), "AR", "102");

    let enhanced_text = String::from_utf8(us.adt(&p, "A04").bytes)
        .unwrap()
        .replacen("|P|2.5.1", "|P|2.5.1|||AL|AL", 1);
    let enhanced = parse(enhanced_text.as_bytes()).unwrap();
    let acks = acknowledge(&enhanced, &Outcome::Accepted, &header(5));
    write(
        "ca.hl7",
        acks.immediate.unwrap().encode().unwrap(),
        "CA",
        "",
    );
    write(
        "aa-deferred.hl7",
        acks.deferred.unwrap().encode().unwrap(),
        "AA",
        "",
    );

    let mut jp = Generator::new(2, Style::Jahis);
    let jp_person = jp.person();
    let oul = parse(&jp.lab_result(&jp_person).bytes).unwrap();
    let jp_error = ErrorDetail {
        location: Some(Location::field("OBX", 2, 5)),
        code: ErrorCode::DataTypeError,
        severity: Severity::Error,
        message: "検査値が数値ではありません".into(),
    };
    let jp_ae = acknowledge(&oul, &Outcome::Error(vec![jp_error]), &header(6))
        .immediate
        .unwrap();
    write("ae-jahis.hl7", jp_ae.encode().unwrap(), "AE", "102");

    let old =
        parse(b"MSH|^~\\&|LEGACY|H|RENKEI|HIE|20260101||ADT^A08|L1|P|2.3\rEVN|A08\rPID|1||\r")
            .unwrap();
    let old_err = hl7v2::fhir::to_transaction(&old).unwrap_err();
    let old_ae = acknowledge(
        &old,
        &Outcome::from_errors(vec![old_err.detail()]),
        &header(7),
    )
    .immediate
    .unwrap();
    write("ae-v23.hl7", old_ae.encode().unwrap(), "AE", "");

    let output = Command::new(&python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/hl7apy/read_acks.py"
        ))
        .args(files.iter().map(|(p, _, _)| p))
        .output()
        .expect("run read_acks.py");
    assert!(
        output.status.success(),
        "hl7apy rejected a Renkei ACK:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), files.len());
    for (line, (path, code, err3)) in lines.iter().zip(&files) {
        assert_eq!(line["msa1"], *code, "{path:?}: {line}");
        assert_eq!(line["valid"], true, "{path:?}: {line}");
        if !err3.is_empty() {
            assert!(
                line["err"][0]["err3"].as_str().unwrap().starts_with(err3),
                "{path:?}: {line}"
            );
            assert_eq!(line["err"][0]["err4"], "E", "{path:?}: {line}");
        }
    }
    // Spot checks: the original control id comes back in MSA-2, the location in ERR-2.
    assert_eq!(lines[0]["msa2"], adt.control_id());
    // The ACK is from whom the message was sent to (its MSH-5/6), to its sender (MSH-3/4).
    let msh = adt.msh();
    assert_eq!(
        lines[0]["from"],
        serde_json::json!([msh.get(5), msh.get(6)])
    );
    assert_eq!(lines[0]["to"], serde_json::json!([msh.get(3), msh.get(4)]));
    assert_eq!(lines[2]["from"], serde_json::json!(["RENKEI", "HIE"]));
    assert_eq!(lines[2]["to"], serde_json::json!(["EPIC", "GENHOSP"]));
    assert_eq!(lines[1]["err"][0]["err2"], "PID^1^7^1");
    assert_eq!(lines[3]["msa2"], "C9");
    assert!(
        lines[7]["err"][0]["err1"]
            .as_str()
            .unwrap()
            .starts_with("PID^1^3^101"),
        "{}",
        lines[7]
    );
    std::fs::remove_dir_all(&dir).ok();
}
