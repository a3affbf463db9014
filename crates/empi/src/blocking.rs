//! Blocking keys: the few exact-match keys under which a record's possible duplicates are
//! looked up (phonetic surname + given initial, birth date with day/month order ignored, phone,
//! identifier, postcode + birth year). A pair is compared only if it shares at least one key,
//! so matching cost depends on block sizes, not on the population.

use crate::compare::Field;
use crate::hashing::key_hash;
use crate::normalize;
use crate::record::Record;
use crate::similarity::soundex;

/// The kinds of key. A key's low three bits hold its kind, so [`implied_fields`] can tell
/// which fields agree merely because two records share it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
enum Kind {
    Identifier = 0,
    Phone = 1,
    BirthDate = 2,
    Name = 3,
    PostcodeYear = 4,
}

fn tagged<T: std::hash::Hash>(kind: Kind, value: &T) -> u64 {
    (key_hash(&(kind, value)) & !7) | kind as u64
}

/// The field a shared key forces to agree (masked out of EM training for that pair).
pub fn implied_field(key: u64) -> Option<Field> {
    match key & 7 {
        0 => Some(Field::Identifier),
        1 => Some(Field::Phone),
        2 => Some(Field::BirthDate),
        3 => Some(Field::Family),
        4 => Some(Field::Address),
        _ => None,
    }
}

/// The record's blocking keys, as sorted, de-duplicated 64-bit hashes.
pub fn keys(r: &Record) -> Vec<u64> {
    let mut keys = Vec::with_capacity(8);
    for (system, value) in &r.identifiers {
        keys.push(key_hash(&(
            Kind::Identifier,
            system.as_str(),
            value.as_str(),
        )));
    }
    for p in &r.phones {
        keys.push(tagged(Kind::Phone, &p.as_str()));
    }
    if let Some(d) = r.birth
        && d.month > 0
        && d.day > 0
    {
        keys.push(tagged(Kind::BirthDate, &d.unordered_key()));
    } else if let Some(h) = &r.birth_hash {
        keys.push(tagged(Kind::BirthDate, &h.as_str()));
    }
    let initial = r
        .first_given()
        .and_then(|g| g.chars().next())
        .or_else(|| r.given_kana.as_ref().and_then(|g| g.chars().next()));
    let kana_initial = r
        .given_kana
        .as_ref()
        .and_then(|g| g.chars().next())
        .or(initial);
    for f in &r.family {
        let code = if normalize::is_japanese(f) {
            f.clone()
        } else {
            soundex(f)
        };
        keys.push(tagged(Kind::Name, &(code.as_str(), initial)));
    }
    if let Some(k) = &r.family_kana {
        keys.push(tagged(Kind::Name, &(k.as_str(), kana_initial)));
    }
    if let (Some(p), Some(d)) = (&r.postcode, r.birth) {
        keys.push(tagged(Kind::PostcodeYear, &(p.as_str(), d.year)));
    }
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// The smallest key both sorted key lists contain, ignoring keys `skip` rejects (oversized
/// blocks). A pair is scored only under this key, so it is scored once however many keys it shares.
pub fn first_shared(a: &[u64], b: &[u64], skip: impl Fn(u64) -> bool) -> Option<u64> {
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                if !skip(a[i]) {
                    return Some(a[i]);
                }
                i += 1;
                j += 1;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalize::Date;

    #[test]
    fn swapped_birth_dates_and_nicknames_share_keys() {
        let a = Record {
            id: "a".into(),
            given: vec!["robert".into()],
            family: vec!["smith".into()],
            birth: Date::parse("1980-04-07"),
            ..Record::default()
        };
        let b = Record {
            id: "b".into(),
            given: vec!["bob".into()],
            family: vec!["smyth".into()],
            birth: Date::parse("1980-07-04"),
            ..Record::default()
        };
        let (ka, kb) = (keys(&a), keys(&b));
        assert_eq!(ka.len(), 2);
        assert_eq!(ka, kb);
        assert!(first_shared(&ka, &kb, |_| false).is_some());
        assert_eq!(first_shared(&ka, &kb, |_| true), None);
    }
}
