//! Field comparators: turn two [`Record`]s into a comparison vector, one discrete agreement
//! level per [`Field`] (the Fellegi–Sunter "gamma"), plus the guard facts (possible twins,
//! different birth order) that scoring must respect whatever the weights say.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::identifier::{self, Agreement, IdentifierEvidence, IdentifierKinds};
use crate::record::Record;
use crate::similarity::{edit_distance, jaro_winkler, soundex};

/// A compared attribute. Level 0 of every field means "missing on one side" (weight 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    /// First given name (with nicknames and kana readings).
    Given,
    /// Family name (with kana readings, maiden and other names).
    Family,
    /// Birth date (with swapped day/month and single-part typos).
    BirthDate,
    /// Administrative sex.
    Gender,
    /// Any phone number.
    Phone,
    /// Home address: first line and postcode.
    Address,
    /// Identifiers sharing a system (`missing` also when the two records share no system; an
    /// explanation then shows `not_comparable_different_systems`, see `score::NOT_COMPARABLE`).
    Identifier,
}

/// Number of fields in a comparison vector.
pub const FIELDS: usize = 7;

impl Field {
    /// Every field, in comparison-vector order.
    pub const ALL: [Field; FIELDS] = [
        Field::Given,
        Field::Family,
        Field::BirthDate,
        Field::Gender,
        Field::Phone,
        Field::Address,
        Field::Identifier,
    ];

    /// The names of this field's agreement levels; index 0 is always `missing`.
    pub fn levels(self) -> &'static [&'static str] {
        match self {
            Field::Given => &[
                "missing",
                "exact",
                "nickname",
                "close",
                "initial",
                "different",
            ],
            Field::Family => &["missing", "exact", "close", "other_name", "different"],
            Field::BirthDate => &[
                "missing",
                "exact",
                "day_month_swapped",
                "one_part_differs",
                "different",
            ],
            Field::Gender => &["missing", "same", "different"],
            Field::Phone => &["missing", "exact", "close", "different"],
            Field::Address => &["missing", "exact", "postcode_or_line", "different"],
            Field::Identifier => &["missing", "agree", "conflict"],
        }
    }

    /// Position in the comparison vector.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Level indexes, named for readability where the comparators set them.
pub mod level {
    /// Missing on at least one side.
    pub const MISSING: u8 = 0;
    /// Exact agreement (first non-missing level of every field).
    pub const EXACT: u8 = 1;
    /// Given: nickname of each other.
    pub const GIVEN_NICKNAME: u8 = 2;
    /// Given: close spelling.
    pub const GIVEN_CLOSE: u8 = 3;
    /// Given: one is the other's initial.
    pub const GIVEN_INITIAL: u8 = 4;
    /// Given: different.
    pub const GIVEN_DIFFERENT: u8 = 5;
    /// Family: close spelling or same reading.
    pub const FAMILY_CLOSE: u8 = 2;
    /// Family: one side's other (maiden, old) name.
    pub const FAMILY_OTHER: u8 = 3;
    /// Family: different.
    pub const FAMILY_DIFFERENT: u8 = 4;
    /// Birth date: day and month swapped.
    pub const BIRTH_SWAPPED: u8 = 2;
    /// Birth date: one of year / month / day differs by a typo.
    pub const BIRTH_ONE_PART: u8 = 3;
    /// Birth date: different.
    pub const BIRTH_DIFFERENT: u8 = 4;
    /// Gender different.
    pub const GENDER_DIFFERENT: u8 = 2;
    /// Phone one edit apart.
    pub const PHONE_CLOSE: u8 = 2;
    /// Phone different.
    pub const PHONE_DIFFERENT: u8 = 3;
    /// Address: same postcode or same line.
    pub const ADDRESS_PARTIAL: u8 = 2;
    /// Address different.
    pub const ADDRESS_DIFFERENT: u8 = 3;
    /// Identifier: same system, different value.
    pub const IDENTIFIER_CONFLICT: u8 = 2;
}

/// The outcome of comparing two records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparison {
    /// One level per field, in [`Field::ALL`] order.
    pub levels: [u8; FIELDS],
    /// Given and family names were found written the other way round.
    pub names_swapped: bool,
    /// Same family name (or one typo off) and birth date but a given name more than a typo apart: twins look
    /// like this. Caps the pair at review.
    pub possible_twin: bool,
    /// As `possible_twin`, with given names that are not even similar: never in one identity
    /// (the chain guard). Two records each with its own typo stay compatible.
    pub clear_twin: bool,
    /// Same family name, different birth dates, and given names not even similar (nor one
    /// reading) or, with the other sex, not the same (Connie / Vonnie): two members of one
    /// household look like this (a spouse, siblings born days or years apart). Caps the pair at review, and stops chains like `clear_twin`, unless a
    /// national or facility number lifts it (one substituted digit does not: siblings are
    /// often issued neighbouring numbers).
    pub household_member: bool,
    /// One record carries no name at all (no given, family or kana name): household members
    /// sharing address, landline and even a birth date cannot be told apart without one.
    /// Caps the pair at review unless an identifier lifts it.
    pub nameless: bool,
    /// Both records state a birth order and they differ: different people.
    pub different_birth_order: bool,
    /// Birth dates more than a keying error apart (not one part off by a digit or by one, not
    /// day and month swapped). A parent and a child of the same name at one address (Jr. and Sr.)
    /// look like this, and their other fields may outweigh the dates. Caps the pair at
    /// review: a person decides, the matcher does not merge them. Two different keyed hashes
    /// of birth dates ([`Record::birth_hash`]) are a conflict too: how far apart the dates
    /// are cannot be told.
    pub birth_dates_conflict: bool,
    /// The deciding identifier evidence (national before facility before shared), when the
    /// records share an identifier system. Its level in `levels` is `agree` for the same
    /// value, `conflict` for different values and `missing` for a national number one keying
    /// error off (scoring weighs that itself).
    pub identifier: Option<IdentifierEvidence>,
}

/// Compares two records field by field; `kinds` says what each identifier system names.
pub fn compare(a: &Record, b: &Record, kinds: &IdentifierKinds) -> Comparison {
    let mut cheap = Cheap::of(a, b, kinds);
    cheap.address = compare_address(a, b);
    compare_names(a, b, cheap)
}

/// The fields of a comparison that cost little next to the names, exactly as [`compare`]
/// sets them: a scorer bounds a pair's weight with them before it compares names
/// ([`crate::score::Scorer::quick_if_reviewable`]), and hands them on to [`compare_names`].
#[derive(Debug, Clone)]
pub(crate) struct Cheap<'a> {
    pub birth: u8,
    pub gender: u8,
    pub phone: u8,
    /// Set by the caller with [`compare_address`] (it costs more than the others).
    pub address: u8,
    /// Its system borrowed from the first record, copied only for a pair compared in full.
    pub evidence: Option<identifier::Deciding<'a>>,
}

impl<'a> Cheap<'a> {
    /// Birth date, sex, phone and identifier evidence; the address left missing.
    pub(crate) fn of(a: &'a Record, b: &Record, kinds: &IdentifierKinds) -> Cheap<'a> {
        let gender = match (a.gender, b.gender) {
            (Some(x), Some(y)) if x == y => level::EXACT,
            (Some(_), Some(_)) => level::GENDER_DIFFERENT,
            _ => level::MISSING,
        };
        Cheap {
            birth: compare_birth(a, b),
            gender,
            phone: compare_phone(a, b),
            address: level::MISSING,
            evidence: identifier::deciding(a, b, kinds),
        }
    }
}

/// [`compare`], given the cheap fields (the address included).
pub(crate) fn compare_names(a: &Record, b: &Record, cheap: Cheap<'_>) -> Comparison {
    let Cheap {
        birth,
        gender,
        phone,
        address,
        evidence,
    } = cheap;
    let mut given = compare_given(a, b);
    let mut family = compare_family(a, b);
    let mut names_swapped = false;
    if given >= level::GIVEN_CLOSE
        && family >= level::FAMILY_CLOSE
        && let (Some(ag), Some(af), Some(bg), Some(bf)) = (
            a.given.first(),
            a.family.first(),
            b.given.first(),
            b.family.first(),
        )
        && similar(ag, bf)
        && similar(af, bg)
    {
        given = level::GIVEN_CLOSE;
        family = level::FAMILY_CLOSE;
        names_swapped = true;
    }
    let identifier = match evidence.as_ref().map(|e| e.agreement) {
        Some(Agreement::Exact) => level::EXACT,
        Some(Agreement::Conflict) => level::IDENTIFIER_CONFLICT,
        Some(Agreement::NeighboursSwapped | Agreement::OneSubstituted) | None => level::MISSING,
    };
    // Twins share surname and birth date; their given names differ by more than a typo
    // (Maria / Mariela is a sibling, Maria / Mraia is a keying error): two or more edits.
    // Different kanji under one kana reading (呉実 / 公望, both クミ) are an input method's
    // conversion error, not a sibling: the reading is the stronger evidence.
    // Asked only of a pair that could be twins (it is the costly part of a comparison).
    let given_far = || {
        let same_reading = matches!((&a.given_kana, &b.given_kana), (Some(x), Some(y)) if x == y);
        match (a.given.first(), b.given.first()) {
            (Some(x), Some(y)) => !same_reading && edit_distance(&ocr_fold(x), &ocr_fold(y)) >= 2,
            _ => false,
        }
    };
    // The family name as written or one typo off (Kshlerin / Kshlerln): a twin's record with
    // its own typo is still a twin's.
    let same_family_and_birth = !names_swapped
        && matches!(family, level::EXACT | level::FAMILY_CLOSE)
        && birth == level::EXACT;
    let clear_twin = same_family_and_birth && given == level::GIVEN_DIFFERENT;
    let possible_twin =
        clear_twin || (same_family_and_birth && given == level::GIVEN_CLOSE && given_far());
    let different_birth_order = matches!((a.multiple_birth, b.multiple_birth),
        (Some(x), Some(y)) if x > 0 && y > 0 && x != y);
    let birth_dates_conflict = birth == level::BIRTH_DIFFERENT && !birth_off_by_one(a, b);
    // Household members: another given name, or (the other sex) not the same given name
    // (Connie / Vonnie, Jim / Jimmy, brother and sister).
    let other_sex = gender == level::GENDER_DIFFERENT;
    let household_member = !names_swapped
        && family == level::EXACT
        && !matches!(birth, level::MISSING | level::EXACT)
        && (given == level::GIVEN_DIFFERENT
            || (other_sex && !matches!(given, level::MISSING | level::EXACT)));
    let unnamed = |r: &Record| {
        r.given.is_empty()
            && r.family.is_empty()
            && r.given_kana.is_none()
            && r.family_kana.is_none()
    };
    Comparison {
        levels: [given, family, birth, gender, phone, address, identifier],
        names_swapped,
        possible_twin,
        clear_twin,
        household_member,
        nameless: unnamed(a) || unnamed(b),
        different_birth_order,
        birth_dates_conflict,
        identifier: evidence.map(identifier::Deciding::owned),
    }
}

/// Whether two birth dates differ in one part only, by one (the 10th keyed as the 9th). The
/// level counts that as different (its digits are two edits apart); the birth-date guard
/// does not. Swapped neighbouring digits (1974 and 1947) are one edit, already a level of
/// their own.
fn birth_off_by_one(a: &Record, b: &Record) -> bool {
    let (Some(x), Some(y)) = (a.birth, b.birth) else {
        return false;
    };
    let parts = [
        (u32::from(x.year), u32::from(y.year)),
        (x.month.into(), y.month.into()),
        (x.day.into(), y.day.into()),
    ];
    let mut differing = parts.iter().filter(|(p, q)| p != q);
    matches!(
        (differing.next(), differing.next()),
        (Some((p, q)), None) if p.abs_diff(*q) == 1
    )
}

/// Folds the letter groups scanners confuse (rn/m, cl/d, vv/w) so an OCR error counts as one edit.
fn ocr_fold(s: &str) -> Cow<'_, str> {
    if ["rn", "cl", "vv"].iter().any(|p| s.contains(p)) {
        Cow::Owned(s.replace("rn", "m").replace("cl", "d").replace("vv", "w"))
    } else {
        Cow::Borrowed(s)
    }
}

fn similar(a: &str, b: &str) -> bool {
    a == b || jaro_winkler(a, b) >= 0.92
}

fn compare_given(a: &Record, b: &Record) -> u8 {
    let (ag, bg) = (a.given.first(), b.given.first());
    let (ak, bk) = (a.given_kana.as_deref(), b.given_kana.as_deref());
    let kana_eq = matches!((ak, bk), (Some(x), Some(y)) if x == y);
    let (ag, bg) = match (ag, bg) {
        (Some(x), Some(y)) => (x.as_str(), y.as_str()),
        // One side has only the kana reading: compare readings.
        _ if kana_eq => return level::EXACT,
        (Some(_), None) | (None, Some(_)) if ak.is_some() && bk.is_some() => {
            return level::GIVEN_DIFFERENT;
        }
        _ => return level::MISSING,
    };
    if ag == bg {
        return level::EXACT;
    }
    if kana_eq {
        // Same reading, different characters (太郎 / 太朗).
        return level::GIVEN_CLOSE;
    }
    let (ca, cb) = (
        crate::normalize::canonical_given(ag),
        crate::normalize::canonical_given(bg),
    );
    if ca == cb {
        return level::GIVEN_NICKNAME;
    }
    // Edit-distance rules only for alphabetic names: one kanji more or less is another name.
    let alphabetic = || !crate::normalize::is_japanese(ag) && !crate::normalize::is_japanese(bg);
    let close_spelling = || {
        let shorter = ag.chars().count().min(bg.chars().count());
        shorter >= 3 && alphabetic() && {
            let distance = edit_distance(ag, bg);
            distance <= 1 || (distance <= 2 && shorter >= 6)
        }
    };
    if jaro_winkler(ag, bg) >= 0.88 || close_spelling() {
        return level::GIVEN_CLOSE;
    }
    // First given name recorded as the middle name elsewhere.
    if b.given.iter().skip(1).any(|g| g == ag) || a.given.iter().skip(1).any(|g| g == bg) {
        return level::GIVEN_CLOSE;
    }
    let (a1, b1) = (ag.chars().count(), bg.chars().count());
    if (a1 == 1 || b1 == 1) && ag.chars().next() == bg.chars().next() {
        return level::GIVEN_INITIAL;
    }
    level::GIVEN_DIFFERENT
}

fn compare_family(a: &Record, b: &Record) -> u8 {
    let (ak, bk) = (a.family_kana.as_deref(), b.family_kana.as_deref());
    let kana_eq = matches!((ak, bk), (Some(x), Some(y)) if x == y);
    let (af, bf) = match (a.family.first(), b.family.first()) {
        (Some(x), Some(y)) => (x.as_str(), y.as_str()),
        _ if kana_eq => return level::EXACT,
        _ if ak.is_some() && bk.is_some() => return level::FAMILY_DIFFERENT,
        _ => return level::MISSING,
    };
    if af == bf {
        return level::EXACT;
    }
    if kana_eq {
        return level::FAMILY_CLOSE;
    }
    let jw = jaro_winkler(af, bf);
    if jw >= 0.9 || (jw >= 0.8 && soundex(af) == soundex(bf)) {
        return level::FAMILY_CLOSE;
    }
    if a.family.iter().any(|x| b.family.contains(x)) {
        return level::FAMILY_OTHER;
    }
    level::FAMILY_DIFFERENT
}

fn compare_birth(a: &Record, b: &Record) -> u8 {
    let (Some(x), Some(y)) = (a.birth, b.birth) else {
        // Keyed hashes (a pseudonym's): the same date or another one.
        return match (&a.birth_hash, &b.birth_hash) {
            (Some(p), Some(q)) if p == q => level::EXACT,
            (Some(_), Some(_)) => level::BIRTH_DIFFERENT,
            _ => level::MISSING,
        };
    };
    if x == y {
        return level::EXACT;
    }
    if x.year == y.year && x.month == y.day && x.day == y.month {
        return level::BIRTH_SWAPPED;
    }
    let near =
        |p: u32, q: u32| p == 0 || q == 0 || edit_distance(&p.to_string(), &q.to_string()) <= 1;
    let same = [x.year == y.year, x.month == y.month, x.day == y.day];
    let differing = same.iter().filter(|s| !**s).count();
    if differing == 1 {
        let ok = if !same[0] {
            near(x.year.into(), y.year.into())
        } else if !same[1] {
            near(x.month.into(), y.month.into())
        } else {
            near(x.day.into(), y.day.into())
        };
        if ok {
            return level::BIRTH_ONE_PART;
        }
    }
    level::BIRTH_DIFFERENT
}

fn compare_phone(a: &Record, b: &Record) -> u8 {
    if a.phones.is_empty() || b.phones.is_empty() {
        return level::MISSING;
    }
    if a.phones.iter().any(|p| b.phones.contains(p)) {
        return level::EXACT;
    }
    if a.phones.iter().any(|p| {
        b.phones
            .iter()
            .any(|q| p.len() == q.len() && edit_distance(p, q) <= 1)
    }) {
        return level::PHONE_CLOSE;
    }
    level::PHONE_DIFFERENT
}

pub(crate) fn compare_address(a: &Record, b: &Record) -> u8 {
    let has = |r: &Record| r.postcode.is_some() || r.line.is_some();
    if !has(a) || !has(b) {
        return level::MISSING;
    }
    let post = match (&a.postcode, &b.postcode) {
        (Some(x), Some(y)) => Some(x == y),
        _ => None,
    };
    let line = match (&a.line, &b.line) {
        (Some(x), Some(y)) => {
            Some(x == y || jaro_winkler(x, y) >= 0.95 || crate::normalize::same_words_joined(x, y))
        }
        _ => None,
    };
    match (post, line) {
        (Some(true), Some(true)) | (None, Some(true)) => level::EXACT,
        (Some(true), _) | (_, Some(true)) => level::ADDRESS_PARTIAL,
        _ => level::ADDRESS_DIFFERENT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalize::Date;

    fn compare(a: &Record, b: &Record) -> Comparison {
        super::compare(a, b, &IdentifierKinds::default())
    }

    fn rec(given: &str, family: &str, birth: &str) -> Record {
        Record {
            id: format!("{given}-{family}"),
            given: vec![given.into()],
            family: vec![family.into()],
            birth: Date::parse(birth),
            ..Record::default()
        }
    }

    #[test]
    fn levels_for_common_errors() {
        let a = rec("robert", "smith", "1980-04-07");
        let c = compare(&a, &rec("bob", "smith", "1980-07-04"));
        assert_eq!(c.levels[0], level::GIVEN_NICKNAME);
        assert_eq!(c.levels[2], level::BIRTH_SWAPPED);
        let c = compare(&a, &rec("robret", "smyth", "1981-04-07"));
        assert_eq!(c.levels[0], level::GIVEN_CLOSE);
        assert_eq!(c.levels[1], level::FAMILY_CLOSE);
        assert_eq!(c.levels[2], level::BIRTH_ONE_PART);
        let c = compare(&a, &rec("smith", "robert", "1980-04-07"));
        assert!(c.names_swapped);
    }

    #[test]
    fn similar_but_distinct_given_names_are_possible_twins() {
        let c = compare(
            &rec("maria", "rowe", "1943-08-16"),
            &rec("mariela", "rowe", "1943-08-16"),
        );
        assert!(c.possible_twin);
        let c = compare(
            &rec("maria", "rowe", "1943-08-16"),
            &rec("mraia", "rowe", "1943-08-16"),
        );
        assert!(!c.possible_twin);
    }

    #[test]
    fn birth_dates_far_apart_conflict_and_keying_errors_do_not() {
        let a = rec("john", "smith", "1974-01-01");
        assert!(compare(&a, &rec("john", "smith", "1939-09-22")).birth_dates_conflict);
        assert!(compare(&a, &rec("john", "smith", "1974-02-03")).birth_dates_conflict);
        assert!(!compare(&a, &rec("john", "smith", "1975-01-01")).birth_dates_conflict);
        assert!(!compare(&a, &rec("john", "smith", "1974-01-01")).birth_dates_conflict);
        assert!(!compare(&a, &rec("john", "smith", "")).birth_dates_conflict);
        // Keying errors: the year's digits swapped, the day off by one across a ten.
        assert!(!compare(&a, &rec("john", "smith", "1947-01-01")).birth_dates_conflict);
        let b = rec("john", "smith", "1974-01-10");
        assert!(!compare(&b, &rec("john", "smith", "1974-01-09")).birth_dates_conflict);
        assert!(compare(&b, &rec("john", "smith", "1974-01-25")).birth_dates_conflict);
    }

    /// Keyed hashes of birth dates (a privacy-mode pseudonym's) compare as the same date or
    /// another one: no keying error can be recognised, so another is a conflict. A clear date
    /// on both sides wins over them.
    #[test]
    fn hashed_birth_dates_are_equal_or_in_conflict() {
        let hashed = |given: &str, hash: Option<&str>| {
            let mut r = rec(given, "smith", "");
            r.birth_hash = hash.map(str::to_owned);
            r
        };
        let a = hashed("john", Some("h1"));
        let c = compare(&a, &hashed("john", Some("h1")));
        assert_eq!(c.levels[Field::BirthDate.index()], level::EXACT);
        assert!(!c.birth_dates_conflict);
        let c = compare(&a, &hashed("john", Some("h2")));
        assert_eq!(c.levels[Field::BirthDate.index()], level::BIRTH_DIFFERENT);
        assert!(c.birth_dates_conflict);
        let c = compare(&a, &hashed("john", None));
        assert_eq!(c.levels[Field::BirthDate.index()], level::MISSING);
        // Twins: one family name and birth date, other given names.
        assert!(compare(&a, &hashed("alice", Some("h1"))).possible_twin);
        // Clear dates decide when both records have one.
        let mut x = rec("john", "smith", "1974-01-01");
        let mut y = rec("john", "smith", "1974-01-01");
        x.birth_hash = Some("h1".into());
        y.birth_hash = Some("h2".into());
        assert_eq!(
            compare(&x, &y).levels[Field::BirthDate.index()],
            level::EXACT
        );
    }

    #[test]
    fn twins_are_flagged() {
        let c = compare(
            &rec("robert", "smith", "1980-04-07"),
            &rec("alice", "smith", "1980-04-07"),
        );
        assert!(c.possible_twin);
    }

    fn jp(given: &str, given_kana: &str, birth: &str) -> Record {
        let mut r = rec(given, "佐藤", birth);
        r.family_kana = Some("サトー".into());
        r.given_kana = Some(given_kana.into());
        r
    }

    #[test]
    fn different_kanji_under_one_reading_are_a_conversion_error_not_a_twin() {
        // 呉実 / 公望, both クミ: an input method's conversion error.
        let c = compare(
            &jp("呉実", "クミ", "1980-04-07"),
            &jp("公望", "クミ", "1980-04-07"),
        );
        assert_eq!(c.levels[0], level::GIVEN_CLOSE);
        assert!(!c.possible_twin && !c.clear_twin);
        // Different readings under different kanji are still possible twins.
        let c = compare(
            &jp("一儀", "カズノリ", "1980-04-07"),
            &jp("和美", "カズミ", "1980-04-07"),
        );
        assert!(c.possible_twin);
    }

    #[test]
    fn address_words_split_or_joined_agree() {
        let mut a = rec("a", "b", "2000-01-01");
        let mut b = a.clone();
        a.line = Some(crate::normalize::text("4 Lubuma Place"));
        b.line = Some(crate::normalize::text("4 Lubumaplace"));
        a.postcode = Some("66780".into());
        b.postcode = a.postcode.clone();
        assert_eq!(compare(&a, &b).levels[5], level::EXACT);
    }

    #[test]
    fn identifiers_agree_or_conflict_within_a_system() {
        let mut a = rec("a", "b", "2000-01-01");
        let mut b = a.clone();
        a.identifiers = vec![("ssn".into(), "1".into())];
        b.identifiers = vec![("ssn".into(), "2".into())];
        assert_eq!(compare(&a, &b).levels[6], level::IDENTIFIER_CONFLICT);
        b.identifiers.push(("ssn".into(), "1".into()));
        assert_eq!(compare(&a, &b).levels[6], level::EXACT);
        b.identifiers = vec![("mrn".into(), "1".into())];
        assert_eq!(compare(&a, &b).levels[6], level::MISSING);
    }
}
