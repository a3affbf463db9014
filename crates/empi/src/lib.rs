//! Enterprise master patient index (EMPI): decides which source `Patient` records are the same
//! person, explains every decision, and composes one golden record per person.
//!
//! Pure library: FHIR Patients come in as `serde_json::Value`, decisions go out as serialisable
//! values. It knows no SQL, no HTTP, no files, no clock and no async runtime; the store persists
//! links and the review queue, the server exposes `$match` / PIXm / PDQm, the binary runs batches.
//!
//! # Pipeline
//!
//! 1. [`record::Record::from_patient`] extracts and [`normalize`]s what matching compares: names
//!    (NFKC, case, diacritics, punctuation; hiragana/katakana and half/full width folded; long
//!    vowels of kana readings written one way, ショウヘイ = ショーヘイ; kanji
//!    variants 髙→高, 﨑→崎, 齋→斎; JP Core kana names from the iso21090 `EN-representation`
//!    extension `SYL`, ideographic `IDE`, alphabetic `ABC`), nicknames (Bob→Robert), phone
//!    numbers and postcodes in any format, birth dates (swapped day/month recognised), and a
//!    privacy-mode pseudonym's keyed hash of the birth date (compared as equal or not).
//! 2. [`blocking::keys`] gives a record's candidate keys: phonetic surname + given initial, birth
//!    date (day/month order ignored), phone, each identifier, postcode + birth year. Candidates
//!    are found through hash maps from key to records, so finding them costs the size of a few
//!    blocks, not the population; oversized (non-discriminating) blocks are skipped. The
//!    incremental index compares a record with every member of a small block (a phone, an
//!    identifier) and with a member of a larger one only when it shares two keys with it (or
//!    the record has one larger block at most), ranking candidates over the cap by the
//!    rarity of the keys they share.
//! 3. [`compare::compare`] maps a pair to one agreement level per field; [`score::Scorer`] turns
//!    levels into Fellegi–Sunter weights (log2 m/u) from a [`model::Model`], adjusts exact name
//!    weights by term frequency (a shared "Smith" says less than a shared "Goldner"), and
//!    applies the guards: possible twins (same surname and birth date, different given name;
//!    different kanji under one kana reading are a conversion error, not a twin), household
//!    members (same surname, different given names and birth dates) and records without any
//!    name are never linked automatically, birth dates more than a keying error apart are only
//!    reviewed, different stated birth orders never match. Identifiers weigh by the
//!    [`identifier::IdentifierKind`] of their system (the model's `identifier_kinds`): a
//!    **national** person number (US SSN) agreeing, or one keying error off with the other
//!    fields agreeing, lifts those guards (one substituted digit only the birth-date guard, and
//!    only under the same given name: twins are often issued consecutive numbers), and disagreeing counts
//!    strongly against; a **facility** record number (type `MR`, JP Core's record-number OID + facility)
//!    agreeing lifts the guards, disagreeing is weak evidence (a second registration at one
//!    hospital is a duplicate to find); a **shared** one (unknown systems, an insurance card a
//!    family shares) counts as evidence but never lifts a guard. Every [`score::Score`]
//!    carries a per-field explanation (level, weight, both values), the guards an identifier
//!    lifted and why, and serialises to JSON.
//! 4. The model's `m`/`u` probabilities and prior are estimated from the data itself without
//!    labels ([`cluster::train`], as Splink does): `u` from random pairs; `m` by EM once per kind
//!    of blocking key over the pairs sharing such a key, with the field that key forces to agree
//!    masked out (EM over all candidates at once degenerates: blocking makes the blocked field
//!    agree for non-matches too); the prior by EM over all candidates. Identifier `m` stays at
//!    its configured value (a conflict is strong evidence against by policy). The model is
//!    JSON; thresholds (`auto_link`, `review`, match probabilities) are part of it. The prior
//!    is for a random pair of the training population: train on a population of the size the
//!    index will hold (a larger population makes any given agreement less conclusive).
//!
//! # Incremental matching: [`EnterpriseIndex`]
//!
//! ```
//! use empi::{EnterpriseIndex, IndexConfig, Model, Outcome};
//! use serde_json::json;
//!
//! let mut index = EnterpriseIndex::new(Model::default(), IndexConfig::default());
//! let a = json!({"resourceType": "Patient", "id": "a", "gender": "male", "birthDate": "1943-03-17",
//!     "name": [{"family": "Goldner", "given": ["Robert"]}],
//!     "telecom": [{"system": "phone", "value": "555-806-9773"}]});
//! let b = json!({"resourceType": "Patient", "id": "b", "gender": "male", "birthDate": "1943-03-17",
//!     "name": [{"family": "GOLDNER", "given": ["Bob"]}],
//!     "telecom": [{"system": "phone", "value": "(555) 806 9773"}]});
//! let first = index.insert(&a).unwrap();
//! assert_eq!(first.outcome, Outcome::New);
//! let second = index.insert(&b).unwrap();
//! assert_eq!(second.outcome, Outcome::Linked);
//! assert_eq!(second.enterprise_id, first.enterprise_id);
//! // The decision, with score and per-field explanation, is what the store persists with the link.
//! let stored = serde_json::to_string(&second).unwrap();
//! assert!(stored.contains("\"nickname\""));
//! ```
//!
//! How the store wires it (the index is a cache; the database is the truth):
//!
//! - **Start-up**: for every stored source Patient and its persisted link, call
//!   [`EnterpriseIndex::restore`]`(Record::from_patient(p)?, enterprise_id)`: no re-matching, so
//!   manual decisions and earlier links survive restarts exactly.
//! - **Patient create / update** (REST, transaction, import, HL7 v2): [`EnterpriseIndex::insert`]
//!   (after [`EnterpriseIndex::remove`] on update) returns a [`Decision`]: `linked`, `new`, or
//!   `review` (a new provisional identity, with candidates for the review queue). A record that
//!   links to several identities joins them when the chain guard finds nothing between their
//!   members (records of one person arrive in any order, and two may only be tied by a third):
//!   the decision's `merged` lists the identities retired and their records;
//!   [`EnterpriseIndex::insert_record_with`] lets the caller keep identities a person decided
//!   about out of such merges. Persist the link and the decision JSON in the same transaction
//!   as the resource.
//! - **Manual link / merge / unlink**: [`EnterpriseIndex::assign`] and
//!   [`EnterpriseIndex::detach`] apply a persisted manual decision; the caller marks it manual so
//!   a later automatic pass never undoes it (automatic passes only ever touch new records).
//! - **`$match` / PDQm**: [`EnterpriseIndex::find`] returns scored candidates without inserting;
//!   a candidate's probability is `search.score`, its class gives the match grade.
//! - **Golden record**: [`golden::Survivorship::compose`] over the identity's source Patients
//!   (from [`EnterpriseIndex::members`]' ids) gives a `Patient` tagged golden with `link`s.
//!
//! # Batch: [`cluster::cluster`]
//!
//! De-duplicates a whole file: keys are sorted into blocks, each pair is scored once (under the
//! first key it shares) on all cores, then auto-link pairs are merged strongest first with a
//! union-find whose guard ([`chain`]) refuses a merge if two members of the two clusters are
//! clearly different people and no third member explains why they differ (so A≈B≈C cannot
//! chain twins A and C together, while one person's record with a replaced given name, tied
//! to the others by their national number, joins them).
//! Memory is linear in the records plus the probable pairs; no quadratic structure is built.
//!
//! # Evaluation
//!
//! `synth::generate` (cargo feature `synth`, off by default: test data, not product) makes
//! labelled duplicates (typos, OCR, nicknames, swaps, missing values, married names, moves,
//! twins, Japanese script variants, and with `replaced_rate` issue 19's data-entry classes and
//! household members) from seed Patients; [`eval::evaluate`] reports pairwise
//! precision, recall and F1, overall and per error type ([`label`]).

pub mod blocking;
pub mod chain;
pub mod cluster;
pub mod compare;
pub mod error;
pub mod eval;
pub mod golden;
pub mod hashing;
pub mod identifier;
pub mod index;
pub mod label;
pub mod model;
pub mod normalize;
pub mod record;
pub mod rng;
pub mod score;
pub mod similarity;
#[cfg(feature = "synth")]
pub mod synth;

pub use error::EmpiError;
pub use index::{Candidate, Decision, EnterpriseId, EnterpriseIndex, IndexConfig, Merged, Outcome};
pub use model::{Model, Thresholds};
pub use record::Record;
pub use score::{MatchClass, Score, Scorer};
