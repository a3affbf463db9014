//! The SS-MIX2 standard file name and where a file lives in the tree.
//!
//! `<patient id>_<care date|->_<data type>_<order no>_<timestamp>_<department|->_<condition>`,
//! stored under `ROOT/<id 1-3>/<id 4-6>/<patient id>/<care date|->/<data type>/`.

use std::fmt;
use std::path::PathBuf;

use crate::Ssmix2Error;

/// The condition flag (last part of the name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Condition {
    /// `1`: valid, the current truth for its record (if it is the latest).
    Valid,
    /// `0`: invalid / deleted; a newer file replaces it, or the record was deleted.
    Invalid,
    /// `2`: past history (written by some implementations); read as valid.
    PastHistory,
}

impl Condition {
    pub fn flag(self) -> char {
        match self {
            Condition::Valid => '1',
            Condition::Invalid => '0',
            Condition::PastHistory => '2',
        }
    }

    pub fn is_valid(self) -> bool {
        !matches!(self, Condition::Invalid)
    }
}

/// The identity of a record: every version of it (re-sends, corrections, the deletion)
/// shares this key and differs by timestamp and condition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordKey {
    pub patient_id: String,
    /// `None` for `-` (no care date).
    pub care_date: Option<String>,
    pub data_type: String,
    /// 15 digits; `999999999999999` when the data has no order.
    pub order_number: String,
}

/// A parsed standard file name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileName {
    pub key: RecordKey,
    /// 17 digits `YYYYMMDDHHMMSSfff`: when the file was stored.
    pub timestamp: String,
    /// HL7 table 0069 department code, `None` for `-`.
    pub department: Option<String>,
    pub condition: Condition,
}

/// The order number of data that has no order.
pub const NO_ORDER: &str = "999999999999999";

fn digits(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| b.is_ascii_digit())
}

impl FileName {
    /// Parse a file name (not a path).
    pub fn parse(name: &str) -> Result<FileName, Ssmix2Error> {
        let bad = |reason: &str| Ssmix2Error::Name {
            name: name.to_owned(),
            reason: reason.to_owned(),
        };
        let parts: Vec<&str> = name.split('_').collect();
        let [id, date, kind, order, ts, dept, cond] = parts[..] else {
            return Err(bad("expected 7 parts separated by '_'"));
        };
        if id.is_empty() || id.len() > 15 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(bad("patient id must be 1 to 15 ASCII letters or digits"));
        }
        if date != "-" && !digits(date, 8) {
            return Err(bad("care date must be YYYYMMDD or '-'"));
        }
        if kind.is_empty()
            || kind.len() > 6
            || !kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(bad("data type must be like ADT-00 or OMP-01"));
        }
        if !digits(order, 15) {
            return Err(bad("order number must be 15 digits"));
        }
        if !digits(ts, 17) {
            return Err(bad("timestamp must be 17 digits (YYYYMMDDHHMMSSfff)"));
        }
        if dept != "-" && (dept.is_empty() || dept.len() > 3) {
            return Err(bad(
                "department must be a code of up to 3 characters or '-'",
            ));
        }
        let condition = match cond {
            "1" => Condition::Valid,
            "0" => Condition::Invalid,
            "2" => Condition::PastHistory,
            _ => return Err(bad("condition flag must be 0, 1 or 2")),
        };
        Ok(FileName {
            key: RecordKey {
                patient_id: id.to_owned(),
                care_date: (date != "-").then(|| date.to_owned()),
                data_type: kind.to_owned(),
                order_number: order.to_owned(),
            },
            timestamp: ts.to_owned(),
            department: (dept != "-").then(|| dept.to_owned()),
            condition,
        })
    }

    /// The valid-file name for a message of `message_type` (`OUL^R22`); `None` when
    /// SS-MIX2 has no data type for it. Order numbers are zero-padded to 15 digits.
    pub fn for_message(
        patient_id: &str,
        care_date: Option<&str>,
        message_type: &str,
        order_number: Option<&str>,
        timestamp: &str,
    ) -> Option<FileName> {
        let data_type = data_type_for(message_type)?;
        let order = match order_number {
            Some(o) if o.bytes().all(|b| b.is_ascii_digit()) && o.len() <= 15 => {
                format!("{o:0>15}")
            }
            _ => NO_ORDER.to_owned(),
        };
        // Types filed under "-" carry no care date even when the message has one.
        let dated = !matches!(data_type, "ADT-00" | "ADT-61" | "PPR-01");
        Some(FileName {
            key: RecordKey {
                patient_id: patient_id.to_owned(),
                care_date: care_date.filter(|_| dated).map(str::to_owned),
                data_type: data_type.to_owned(),
                order_number: order,
            },
            timestamp: timestamp.to_owned(),
            department: Some("01".to_owned()),
            condition: Condition::Valid,
        })
    }

    /// The path of this file relative to the storage root.
    pub fn relative_path(&self) -> PathBuf {
        let id = &self.key.patient_id;
        let part = |a: usize, b: usize| {
            id.get(a..b.min(id.len()))
                .filter(|s| !s.is_empty())
                .unwrap_or("-")
                .to_owned()
        };
        let mut p = PathBuf::from(part(0, 3));
        p.push(part(3, 6));
        p.push(id);
        p.push(self.key.care_date.as_deref().unwrap_or("-"));
        p.push(&self.key.data_type);
        p.push(self.to_string());
        p
    }
}

impl fmt::Display for FileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}_{}_{}_{}_{}_{}_{}",
            self.key.patient_id,
            self.key.care_date.as_deref().unwrap_or("-"),
            self.key.data_type,
            self.key.order_number,
            self.timestamp,
            self.department.as_deref().unwrap_or("-"),
            self.condition.flag()
        )
    }
}

/// The SS-MIX2 data type for a message type (guideline table 1-1); `None` when SS-MIX2
/// standardized storage has no place for it.
pub fn data_type_for(message_type: &str) -> Option<&'static str> {
    Some(match message_type {
        "ADT^A08" | "ADT^A23" => "ADT-00",
        "ADT^A54" | "ADT^A55" => "ADT-01",
        "ADT^A04" => "ADT-12",
        "ADT^A14" | "ADT^A27" => "ADT-21",
        "ADT^A01" | "ADT^A11" => "ADT-22",
        "ADT^A21" | "ADT^A52" => "ADT-31",
        "ADT^A22" | "ADT^A53" => "ADT-32",
        "ADT^A15" | "ADT^A26" => "ADT-41",
        "ADT^A02" | "ADT^A12" => "ADT-42",
        "ADT^A16" | "ADT^A25" => "ADT-51",
        "ADT^A03" | "ADT^A13" => "ADT-52",
        "ADT^A60" => "ADT-61",
        "PPR^ZD1" => "PPR-01",
        "OMD^O03" => "OMD",
        "RDE^O11" => "OMP-01",
        "RAS^O17" => "OMP-11",
        "OML^O33" => "OML-01",
        "OUL^R22" => "OML-11",
        "ORU^R01" => "OMG-13",
        _ => return None,
    })
}

/// Processing rank of a data type at equal timestamps: patient basics first, then visits,
/// then clinical data (so a lab result never arrives before its patient).
pub fn type_rank(data_type: &str) -> u8 {
    match data_type {
        "ADT-00" => 0,
        t if t.starts_with("ADT") => 1,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print() {
        let n = "0000000012_20260110_OMP-01_123456789012345_20260110120000123_01_1";
        let f = FileName::parse(n).unwrap();
        assert_eq!(f.key.patient_id, "0000000012");
        assert_eq!(f.key.care_date.as_deref(), Some("20260110"));
        assert_eq!(f.department.as_deref(), Some("01"));
        assert_eq!(f.condition, Condition::Valid);
        assert_eq!(f.to_string(), n);
        assert_eq!(
            f.relative_path(),
            PathBuf::from("000/000/0000000012/20260110/OMP-01").join(n)
        );
        let g = FileName::parse("1234567_-_ADT-00_999999999999999_20260110120000123_-_0").unwrap();
        assert_eq!(g.key.care_date, None);
        assert_eq!(g.condition, Condition::Invalid);
    }

    #[test]
    fn bad_names() {
        for n in [
            "x",
            "1_20260110_ADT-00_999999999999999_20260110120000123_-",
            "1_2026011_ADT-00_999999999999999_20260110120000123_-_1",
            "1_20260110_ADT-00_99999_20260110120000123_-_1",
            "1_20260110_ADT-00_999999999999999_2026_-_1",
            "1_20260110_ADT-00_999999999999999_20260110120000123_-_9",
            "../1_20260110_ADT-00_999999999999999_20260110120000123_-_1",
        ] {
            assert!(FileName::parse(n).is_err(), "{n}");
        }
    }
}
