//! A committed SS-MIX2 tree whose ISO-2022-JP bytes were written by Python's codec, not by
//! Renkei: read, versions chosen, mapped to valid FHIR with JP Core names.

use std::path::Path;

use ssmix2::{Change, current, read_message, scan};

#[test]
fn committed_fixture_tree() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tree");
    let scanned = scan(&root).unwrap();
    assert_eq!(scanned.files.len(), 3);
    assert!(scanned.skipped.is_empty());
    let changes = current(&scanned.files);
    assert_eq!(changes.len(), 2, "the invalid PPR-01 version is superseded");
    assert_eq!(changes[0].key().data_type, "ADT-00");
    let options = hl7v2::fhir::MappingOptions::with_utc_offset("+09:00").unwrap();
    let mut names = Vec::new();
    for change in &changes {
        let Change::Current(file) = change else {
            panic!("both records are current")
        };
        assert!(file.name.timestamp.starts_with("20260110"));
        let (_, message) = read_message(file).unwrap();
        let mapped = hl7v2::fhir::to_transaction_with(&message, &options).unwrap();
        fhir::validate_resource(&mapped.bundle).unwrap();
        for entry in mapped.bundle["entry"].as_array().unwrap() {
            let resource = &entry["resource"];
            fhir::validate_resource(resource).unwrap();
            match resource["resourceType"].as_str().unwrap() {
                "Patient" => {
                    names.push(resource["name"].clone());
                    // JIS X 0208 0x215D: Python's codec writes it for U+2212; encoding_rs
                    // (WHATWG) reads it as U+FF0D FULLWIDTH HYPHEN-MINUS.
                    if let Some(address) = resource.get("address") {
                        assert_eq!(address[0]["city"], "東京都港区芝公園４－２－８");
                    }
                }
                "Condition" => {
                    assert_eq!(resource["code"]["coding"][0]["display"], "２型糖尿病");
                    assert_eq!(resource["onsetDateTime"], "2019-04-01");
                }
                _ => {}
            }
        }
    }
    assert_eq!(names[0][0]["text"], "患者 太郎");
    assert_eq!(names[0][1]["family"], "カンジャ");
    assert_eq!(names[0][1]["family"], "カンジャ");
    assert_eq!(names[0][1]["extension"][0]["valueCode"], "SYL");
}
