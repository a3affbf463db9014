//! A generated SS-MIX2 tree (JAHIS-style messages from `hl7v2::generate`): one record of
//! every kind per patient, for tests, benchmarks and demonstrations.

use std::path::Path;

use hl7v2::generate::{Generator, Style};

use crate::{FileName, Ssmix2Error, store};

/// Writes `patients` generated patients (seven files each) under `root` and returns the file
/// names written, in writing order. Same seed, same tree.
pub fn write_sample_tree(
    root: &Path,
    patients: usize,
    seed: u64,
) -> Result<Vec<FileName>, Ssmix2Error> {
    let mut g = Generator::new(seed, Style::Jahis);
    let mut names = Vec::new();
    for i in 0..patients {
        let p = g.person();
        for (j, m) in g.record(&p).into_iter().enumerate() {
            let ts = format!("20260110{:02}{:02}00{:03}", i % 24, j, i % 1000);
            let Some(name) = FileName::for_message(
                &m.patient_id,
                m.care_date.as_deref(),
                &m.message_type,
                m.order_number.as_deref(),
                &ts,
            ) else {
                continue;
            };
            store(root, &name, &m.bytes)?;
            names.push(name);
        }
    }
    Ok(names)
}
