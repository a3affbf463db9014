//! Required bindings: the value sets that R4 binds `required` to `code`, `Coding` and
//! `CodeableConcept` elements, expanded to their codes at generation time
//! (`generated/bindings.txt`), so that validation can refuse a code outside them.
//!
//! Only value sets that can be enumerated from the definitions are here; those drawing on an
//! external terminology (UCUM units, BCP-13 MIME types, ISO 4217 currencies, a LOINC answer
//! list) are listed as `# skipped` comments in the table, with the reason, and the elements
//! bound to them are not checked.

use std::collections::HashMap;

use crate::definitions::{data_lines, split_list};

/// One expanded value set.
#[derive(Debug, Clone)]
pub struct ValueSet {
    /// Its canonical URL (`http://hl7.org/fhir/ValueSet/administrative-gender`).
    pub url: String,
    /// Its codes by code system, systems in definition order.
    systems: Vec<(String, Vec<String>)>,
    /// (system, code) -> present.
    index: HashMap<Box<str>, HashMap<Box<str>, ()>>,
}

impl ValueSet {
    /// Whether the value set holds `code` of `system`.
    pub fn contains(&self, system: &str, code: &str) -> bool {
        self.index
            .get(system)
            .is_some_and(|codes| codes.contains_key(code))
    }

    /// Whether the value set holds `code` in any of its systems (what a `code` element,
    /// which carries no system, can be checked against).
    pub fn contains_code(&self, code: &str) -> bool {
        self.index.values().any(|codes| codes.contains_key(code))
    }

    /// The code systems and their codes, in definition order.
    pub fn systems(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.systems.iter().map(|(s, c)| (s.as_str(), c.as_slice()))
    }

    /// How many codes it holds.
    pub fn len(&self) -> usize {
        self.systems.iter().map(|(_, c)| c.len()).sum()
    }

    /// Whether it holds no code (never true of a generated one).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The parsed `bindings.txt`: value sets, and element paths bound to them.
#[derive(Debug, Default)]
pub(crate) struct Bindings {
    pub(crate) value_sets: Vec<ValueSet>,
    pub(crate) by_url: HashMap<Box<str>, u32>,
    /// (element path, value set index).
    pub(crate) elements: Vec<(String, u32)>,
}

impl Bindings {
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let mut bindings = Bindings::default();
        for (n, line) in data_lines(text) {
            let err = |msg: &str| format!("bindings.txt:{n}: {msg}");
            let fields: Vec<&str> = line.split('\t').collect();
            match fields.as_slice() {
                ["V", url] => {
                    let i = bindings.value_sets.len() as u32;
                    bindings.by_url.insert((*url).into(), i);
                    bindings.value_sets.push(ValueSet {
                        url: (*url).to_owned(),
                        systems: Vec::new(),
                        index: HashMap::new(),
                    });
                }
                ["C", system, codes] => {
                    let vs = bindings
                        .value_sets
                        .last_mut()
                        .ok_or_else(|| err("codes before a value set"))?;
                    let codes = split_list(codes);
                    let index = vs.index.entry((*system).into()).or_default();
                    for code in &codes {
                        index.insert(code.as_str().into(), ());
                    }
                    vs.systems.push(((*system).to_owned(), codes));
                }
                ["R", path, url] => {
                    let &i = bindings
                        .by_url
                        .get(*url)
                        .ok_or_else(|| err("binding to an unknown value set"))?;
                    bindings.elements.push(((*path).to_owned(), i));
                }
                _ => return Err(err("bad line")),
            }
        }
        Ok(bindings)
    }
}
