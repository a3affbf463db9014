//! A labelled generator of realistic duplicate Patients for evaluation and benchmarks.
//!
//! Persons are taken from seed Patients (for example a Synthea export) or, with a target count,
//! recombined from their names, dates and addresses; some are turned into Japanese persons (JP
//! Core kanji + kana names). Each person gets one original record and possibly duplicates from
//! other facilities, each carrying exactly one error type ([`ErrorKind`]); some persons get a
//! twin (a different person with the same surname, birth date and address). With
//! [`GenConfig::replaced_rate`] some duplicates carry issue 19's data-entry classes instead
//! (given name, birth date or both names replaced under one SSN, SSN digits swapped with the
//! birth date missing, address words split or joined, kanji conversion errors, long-vowel
//! spellings, a second record number at the original facility), and some persons get a
//! household member (a different person at the same address and landline: of the other sex
//! with another given name born days apart, or without any name born the same day). The labels say which person (true cluster) each record belongs to and
//! which error it carries.
//! Deterministic for a given seed; no I/O.

use serde_json::{Value, json};

use crate::normalize::NICKNAMES;

pub use crate::label::{ErrorKind, Label};
pub use crate::rng::Rng;

/// Generator settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenConfig {
    /// Random seed.
    pub seed: u64,
    /// Target number of records; `None` uses each seed Patient as one person.
    pub count: Option<usize>,
    /// Share of persons with duplicates.
    pub duplicate_rate: f64,
    /// Share of persons rendered as Japanese.
    pub japanese_rate: f64,
    /// Share of persons with a twin.
    pub twin_rate: f64,
    /// Share of duplicates carrying one of the data-entry error classes of issue 19 (given
    /// name or birth date replaced, national number digits swapped with the birth date
    /// missing, both names swapped or replaced, address words split or joined, kanji
    /// conversion error, long-vowel spelling, second record number at one facility); above 0,
    /// persons also get a household member at `twin_rate`. 0 (the default) draws none and
    /// leaves the other sets exactly as they were.
    pub replaced_rate: f64,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            seed: 42,
            count: None,
            duplicate_rate: 0.4,
            japanese_rate: 0.15,
            twin_rate: 0.03,
            replaced_rate: 0.0,
        }
    }
}

/// Generated Patients and their labels (same order).
#[derive(Debug, Clone)]
pub struct Generated {
    /// FHIR R4 Patient resources.
    pub patients: Vec<Value>,
    /// One label per Patient.
    pub labels: Vec<Label>,
}

const JP_FAMILY: &[(&str, &str)] = &[
    ("佐藤", "サトウ"),
    ("鈴木", "スズキ"),
    ("高橋", "タカハシ"),
    ("田中", "タナカ"),
    ("渡辺", "ワタナベ"),
    ("伊藤", "イトウ"),
    ("山本", "ヤマモト"),
    ("中村", "ナカムラ"),
    ("小林", "コバヤシ"),
    ("加藤", "カトウ"),
    ("吉田", "ヨシダ"),
    ("山田", "ヤマダ"),
    ("佐々木", "ササキ"),
    ("山口", "ヤマグチ"),
    ("松本", "マツモト"),
    ("井上", "イノウエ"),
    ("木村", "キムラ"),
    ("林", "ハヤシ"),
    ("斎藤", "サイトウ"),
    ("清水", "シミズ"),
    ("山崎", "ヤマザキ"),
    ("森", "モリ"),
    ("池田", "イケダ"),
    ("橋本", "ハシモト"),
    ("阿部", "アベ"),
    ("石川", "イシカワ"),
    ("前田", "マエダ"),
    ("藤田", "フジタ"),
    ("長谷川", "ハセガワ"),
    ("村上", "ムラカミ"),
    ("近藤", "コンドウ"),
    ("坂本", "サカモト"),
    ("遠藤", "エンドウ"),
    ("青木", "アオキ"),
    ("西村", "ニシムラ"),
    ("福田", "フクダ"),
    ("太田", "オオタ"),
    ("三浦", "ミウラ"),
    ("藤井", "フジイ"),
    ("岡田", "オカダ"),
    ("浜田", "ハマダ"),
    ("島田", "シマダ"),
    ("沢田", "サワダ"),
    ("広田", "ヒロタ"),
    ("桜井", "サクライ"),
    ("宮崎", "ミヤザキ"),
    ("高田", "タカダ"),
    ("渡部", "ワタナベ"),
];
const JP_MALE: &[(&str, &str)] = &[
    ("太郎", "タロウ"),
    ("翔太", "ショウタ"),
    ("大輔", "ダイスケ"),
    ("健一", "ケンイチ"),
    ("誠", "マコト"),
    ("浩", "ヒロシ"),
    ("拓也", "タクヤ"),
    ("直樹", "ナオキ"),
    ("隆", "タカシ"),
    ("和也", "カズヤ"),
    ("竜之介", "リュウノスケ"),
    ("蓮", "レン"),
    ("悠真", "ユウマ"),
    ("大翔", "ヒロト"),
    ("健太", "ケンタ"),
    ("修", "オサム"),
    ("真一", "シンイチ"),
    ("広志", "ヒロシ"),
];
const JP_FEMALE: &[(&str, &str)] = &[
    ("花子", "ハナコ"),
    ("陽子", "ヨウコ"),
    ("恵子", "ケイコ"),
    ("美咲", "ミサキ"),
    ("さくら", "サクラ"),
    ("愛", "アイ"),
    ("裕子", "ユウコ"),
    ("真由美", "マユミ"),
    ("結衣", "ユイ"),
    ("陽菜", "ヒナ"),
    ("直子", "ナオコ"),
    ("由美", "ユミ"),
    ("明美", "アケミ"),
    ("智子", "トモコ"),
    ("優子", "ユウコ"),
    ("恵美", "エミ"),
    ("桜子", "サクラコ"),
];
/// Given names written in other kanji under one reading (an input method's candidates).
const JP_HOMOPHONES: &[(&str, &[&str])] = &[
    ("タロウ", &["太郎", "太朗"]),
    ("ショウタ", &["翔太", "将太", "祥太"]),
    ("ダイスケ", &["大輔", "大介"]),
    ("ケンイチ", &["健一", "賢一", "憲一"]),
    ("マコト", &["誠", "真", "信"]),
    ("ヒロシ", &["浩", "博", "弘", "広志"]),
    ("タクヤ", &["拓也", "卓也", "拓哉"]),
    ("ナオキ", &["直樹", "尚樹", "直紀"]),
    ("タカシ", &["隆", "孝", "崇"]),
    ("カズヤ", &["和也", "一也", "和哉"]),
    ("ユウマ", &["悠真", "優真", "佑真"]),
    ("ケンタ", &["健太", "健汰", "賢太"]),
    ("ヨウコ", &["陽子", "洋子", "葉子"]),
    ("ケイコ", &["恵子", "敬子", "啓子"]),
    ("ユウコ", &["裕子", "優子", "祐子"]),
    ("マユミ", &["真由美", "真弓", "麻由美"]),
    ("ナオコ", &["直子", "尚子", "奈緒子"]),
    ("ユミ", &["由美", "裕美", "弓"]),
    ("トモコ", &["智子", "友子", "知子"]),
    ("アケミ", &["明美", "朱美"]),
];
const JP_PLACES: &[&str] = &[
    "東京都新宿区西新宿",
    "東京都千代田区丸の内",
    "大阪府大阪市北区梅田",
    "神奈川県横浜市中区山下町",
    "愛知県名古屋市中村区名駅",
    "福岡県福岡市博多区博多駅前",
    "北海道札幌市中央区北一条西",
    "京都府京都市下京区烏丸通",
    "宮城県仙台市青葉区一番町",
    "広島県広島市中区基町",
];
/// Standard kanji -> the variant a registry may hold instead.
const KANJI_TO_VARIANT: &[(char, char)] = &[
    ('高', '髙'),
    ('崎', '﨑'),
    ('斎', '齋'),
    ('辺', '邊'),
    ('沢', '澤'),
    ('浜', '濱'),
    ('島', '嶋'),
    ('広', '廣'),
    ('桜', '櫻'),
    ('恵', '惠'),
    ('真', '眞'),
    ('竜', '龍'),
    ('吉', '𠮷'),
];
const OCR_LETTERS: &[(&str, &str)] = &[
    ("rn", "m"),
    ("m", "rn"),
    ("cl", "d"),
    ("d", "cl"),
    ("vv", "w"),
    ("w", "vv"),
    ("e", "c"),
    ("c", "e"),
    ("h", "b"),
    ("i", "l"),
    ("l", "i"),
    ("u", "v"),
    ("n", "h"),
    ("a", "o"),
];
const OCR_DIGITS: &[(char, char)] = &[
    ('0', '8'),
    ('8', '0'),
    ('1', '7'),
    ('7', '1'),
    ('5', '6'),
    ('6', '5'),
    ('3', '8'),
];
const FACILITIES: &[&str] = &[
    "urn:oid:1.2.392.200119.6.102.11",
    "http://hospital-b.example.org/mrn",
    "http://clinic-c.example.org/patients",
    "urn:oid:2.16.840.1.113883.3.7777",
];
const SSN: &str = "http://hl7.org/fhir/sid/us-ssn";
const ORIGINAL_MRN: &str = "http://hospital.smarthealthit.org";

/// A person's demographic truth, rendered into records by [`View`].
#[derive(Debug, Clone)]
struct Person {
    given: Vec<String>,
    family: String,
    gender: &'static str,
    birth: (u16, u8, u8),
    phone: String,
    line: String,
    city: String,
    state: String,
    postcode: String,
    ssn: Option<String>,
    kana: Option<(String, String)>,
}

/// What one record says about a person (mutated by the error operations).
#[derive(Debug, Clone)]
struct View {
    family: Option<String>,
    given: Vec<String>,
    maiden: Option<String>,
    family_kana: Option<String>,
    given_kana: Option<String>,
    birth: Option<String>,
    gender: Option<&'static str>,
    phone: Option<String>,
    line: Option<String>,
    city: Option<String>,
    state: Option<String>,
    postcode: Option<String>,
    ssn: Option<String>,
    multiple_birth: Option<u32>,
    /// Rendered as a JP Core Patient (kana name, country JP) even without a name.
    japanese: bool,
}

fn strip_digits(s: &str) -> String {
    s.chars().filter(|c| !c.is_ascii_digit()).collect()
}

fn seed_person(p: &Value) -> Option<Person> {
    let name = p.get("name")?.as_array()?.first()?;
    let family = strip_digits(name.get("family")?.as_str()?);
    let given: Vec<String> = name
        .get("given")?
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .map(strip_digits)
        .collect();
    let birth = crate::normalize::Date::parse(p.get("birthDate")?.as_str()?)?;
    let gender = match p.get("gender").and_then(Value::as_str) {
        Some("female") => "female",
        _ => "male",
    };
    let address = p.get("address").and_then(|a| a.get(0));
    let get = |k: &str| {
        address
            .and_then(|a| a.get(k))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let line = address
        .and_then(|a| a.get("line"))
        .and_then(|l| l.get(0))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let phone = p
        .get("telecom")
        .and_then(|t| t.get(0))
        .and_then(|t| t.get("value"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let ssn = p
        .get("identifier")
        .and_then(Value::as_array)
        .and_then(|ids| {
            ids.iter()
                .find(|i| i.get("system").and_then(Value::as_str) == Some(SSN))
        })
        .and_then(|i| i.get("value"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    Some(Person {
        given,
        family,
        gender,
        birth: (birth.year, birth.month.max(1), birth.day.max(1)),
        phone,
        line,
        city: get("city"),
        state: get("state"),
        postcode: get("postalCode"),
        ssn,
        kana: None,
    })
}

fn days_in(month: u8) -> u8 {
    match month {
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn unique_digits(index: u64, modulus: u64, salt: u64) -> u64 {
    // A bijection on 0..modulus for odd multipliers coprime to 10: unique per person.
    (index.wrapping_mul(7919).wrapping_add(salt)) % modulus
}

struct Generator<'a> {
    rng: Rng,
    seeds: &'a [Person],
    next_id: u64,
}

impl Generator<'_> {
    fn id(&mut self) -> String {
        self.next_id += 1;
        let r = self.rng.next_u64();
        format!("{:08x}-{:04x}-{:012x}", self.next_id, r & 0xffff, r >> 16)
    }

    /// A new person recombined from the seeds.
    fn recombined(&mut self, index: u64) -> Person {
        let base = self.rng.pick(self.seeds).clone();
        let gender = base.gender;
        let given_from = loop {
            let p = self.rng.pick(self.seeds);
            if p.gender == gender {
                break p;
            }
        };
        let family = self.rng.pick(self.seeds).family.clone();
        let place = self.rng.pick(self.seeds).clone();
        let year = 1920 + self.rng.below(100) as u16;
        let month = 1 + self.rng.below(12) as u8;
        let day = 1 + self.rng.below(days_in(month) as usize) as u8;
        let number = 1 + self.rng.below(9999);
        let street = place
            .line
            .split_once(' ')
            .map_or(place.line.as_str(), |(_, s)| s)
            .to_owned();
        let phone = unique_digits(index, 10_000_000, 1_234_567);
        let ssn = unique_digits(index, 1_000_000_000, 98_765);
        Person {
            given: given_from.given.clone(),
            family,
            gender,
            birth: (year, month, day),
            phone: format!("555-{:03}-{:04}", phone / 10_000, phone % 10_000),
            line: format!("{number} {street}"),
            city: place.city,
            state: place.state,
            postcode: place.postcode,
            ssn: Some(format!(
                "{:03}-{:02}-{:04}",
                ssn / 1_000_000,
                (ssn / 10_000) % 100,
                ssn % 10_000
            )),
            kana: None,
        }
    }

    /// Re-renders a person as Japanese (names, phone, address; no US SSN).
    fn japanese(&mut self, mut p: Person, index: u64) -> Person {
        let (fk, fkana) = *self.rng.pick(JP_FAMILY);
        let (gk, gkana) = if p.gender == "female" {
            *self.rng.pick(JP_FEMALE)
        } else {
            *self.rng.pick(JP_MALE)
        };
        p.family = fk.to_owned();
        p.given = vec![gk.to_owned()];
        p.kana = Some((fkana.to_owned(), gkana.to_owned()));
        let phone = unique_digits(index, 100_000_000, 4_242_421);
        p.phone = format!(
            "0{}-{:04}-{:04}",
            3 + index % 7,
            phone / 10_000 % 10_000,
            phone % 10_000
        );
        p.postcode = format!(
            "{:03}-{:04}",
            100 + self.rng.below(800),
            self.rng.below(10_000)
        );
        p.line = format!(
            "{}{}-{}-{}",
            self.rng.pick(JP_PLACES),
            1 + self.rng.below(5),
            1 + self.rng.below(30),
            1 + self.rng.below(20)
        );
        p.city = String::new();
        p.state = String::new();
        p.ssn = None;
        p
    }

    fn view(p: &Person) -> View {
        let (y, m, d) = p.birth;
        View {
            family: Some(p.family.clone()),
            given: p.given.clone(),
            maiden: None,
            family_kana: p.kana.as_ref().map(|k| k.0.clone()),
            given_kana: p.kana.as_ref().map(|k| k.1.clone()),
            birth: Some(format!("{y:04}-{m:02}-{d:02}")),
            gender: Some(p.gender),
            phone: (!p.phone.is_empty()).then(|| p.phone.clone()),
            line: (!p.line.is_empty()).then(|| p.line.clone()),
            city: (!p.city.is_empty()).then(|| p.city.clone()),
            state: (!p.state.is_empty()).then(|| p.state.clone()),
            postcode: (!p.postcode.is_empty()).then(|| p.postcode.clone()),
            ssn: p.ssn.clone(),
            multiple_birth: None,
            japanese: p.kana.is_some(),
        }
    }

    fn typo(&mut self, s: &str) -> String {
        let mut chars: Vec<char> = s.chars().collect();
        if chars.len() < 3 {
            return s.to_owned();
        }
        let kana = chars.iter().any(|c| ('\u{30A0}'..='\u{30FF}').contains(c));
        let letters: Vec<char> = if kana {
            "アイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤユヨラリルレロワン"
                .chars()
                .collect()
        } else {
            "abcdefghijklmnopqrstuvwxyz".chars().collect()
        };
        // Keep the first character: registries rarely get the initial wrong, and it keeps the
        // error a typo rather than a different name.
        let i = 1 + self.rng.below(chars.len() - 1);
        let letter = *self.rng.pick(&letters);
        match self.rng.below(4) {
            0 => {
                chars.remove(i);
            }
            1 => chars.insert(i, letter),
            2 => chars[i] = letter,
            _ => {
                if i + 1 < chars.len() {
                    chars.swap(i, i + 1);
                } else {
                    chars.swap(i - 1, i);
                }
            }
        }
        chars.into_iter().collect()
    }

    fn ocr(&mut self, s: &str) -> String {
        let lower = s.to_lowercase();
        let options: Vec<&(&str, &str)> = OCR_LETTERS
            .iter()
            .filter(|(from, _)| lower[1.min(lower.len())..].contains(from))
            .collect();
        if options.is_empty() {
            return self.typo(s);
        }
        let (from, to) = **self.rng.pick(&options);
        let at = 1 + lower[1..].find(from).unwrap_or(0);
        let mut out = String::new();
        out.push_str(&s[..at]);
        out.push_str(to);
        out.push_str(&s[at + from.len()..]);
        out
    }

    fn digit_error(&mut self, s: &str) -> String {
        let positions: Vec<usize> = s
            .char_indices()
            .filter(|(_, c)| OCR_DIGITS.iter().any(|(f, _)| f == c))
            .map(|(i, _)| i)
            .collect();
        if positions.is_empty() {
            return s.to_owned();
        }
        let at = *self.rng.pick(&positions);
        let c = s[at..].chars().next().unwrap_or('0');
        let to = OCR_DIGITS
            .iter()
            .find(|(f, _)| *f == c)
            .map_or(c, |(_, t)| *t);
        format!("{}{}{}", &s[..at], to, &s[at + 1..])
    }

    fn new_address(&mut self, v: &mut View, jp: bool, index: u64) {
        let other = self.rng.pick(self.seeds).clone();
        if jp {
            let moved = self.japanese(other, index + 7_000_000);
            v.line = Some(moved.line);
            v.postcode = Some(moved.postcode);
            v.phone = Some(moved.phone);
        } else {
            let n = 1 + self.rng.below(9999);
            let street = other
                .line
                .split_once(' ')
                .map_or(other.line.as_str(), |(_, s)| s);
            v.line = Some(format!("{n} {street}"));
            v.city = Some(other.city);
            v.postcode = Some(other.postcode);
            let phone = unique_digits(index + 5_000_000, 10_000_000, 7_654_321);
            v.phone = Some(format!("555-{:03}-{:04}", phone / 10_000, phone % 10_000));
        }
    }

    /// Applies `kind` to a copy of the original view; returns the kind actually applied
    /// (a kind that does not apply to this person falls back to a typo).
    fn apply(&mut self, p: &Person, mut v: View, kind: ErrorKind, index: u64) -> (View, ErrorKind) {
        let jp = p.kana.is_some();
        match kind {
            ErrorKind::Typo => {
                if jp {
                    if self.rng.chance(0.5) {
                        v.given_kana = v.given_kana.map(|g| self.typo(&g));
                    } else {
                        v.family_kana = v.family_kana.map(|f| self.typo(&f));
                    }
                } else {
                    match self.rng.below(12) {
                        0..=3 => v.given[0] = self.typo(&v.given[0]),
                        4..=8 => v.family = v.family.map(|f| self.typo(&f)),
                        9 | 10 => v.phone = v.phone.map(|ph| self.digit_error(&ph)),
                        _ => {
                            // A birth date keyed wrong: day off by one, or year digits transposed.
                            let (y, m, d) = p.birth;
                            v.birth = Some(if self.rng.chance(0.5) {
                                let d = if d > 1 { d - 1 } else { d + 1 };
                                format!("{y:04}-{m:02}-{d:02}")
                            } else {
                                let y = (y / 100) * 100 + (y % 10) * 10 + (y / 10) % 10;
                                format!("{y:04}-{m:02}-{d:02}")
                            });
                        }
                    }
                }
            }
            ErrorKind::Ocr => {
                if jp {
                    return self.apply(p, v, ErrorKind::Japanese, index);
                }
                if self.rng.chance(0.5) {
                    v.family = v.family.map(|f| self.ocr(&f));
                } else {
                    v.given[0] = self.ocr(&v.given[0]);
                }
                if self.rng.chance(0.5) {
                    v.phone = v.phone.map(|ph| self.digit_error(&ph));
                }
            }
            ErrorKind::Nickname => {
                let given = v.given[0].to_lowercase();
                let nicks: Vec<&str> = NICKNAMES
                    .iter()
                    .filter(|(_, full)| *full == given)
                    .map(|(nick, _)| *nick)
                    .collect();
                if jp || nicks.is_empty() {
                    return self.apply(p, v, ErrorKind::Typo, index);
                }
                let nick = *self.rng.pick(&nicks);
                let mut c = nick.chars();
                v.given[0] = c
                    .next()
                    .map(|f| f.to_uppercase().chain(c).collect())
                    .unwrap_or_default();
            }
            ErrorKind::Swap => {
                let (y, m, d) = p.birth;
                if self.rng.chance(0.5) && d <= 12 && d != m {
                    v.birth = Some(format!("{y:04}-{d:02}-{m:02}"));
                } else if let Some(f) = v.family.take() {
                    v.family = Some(v.given[0].clone());
                    v.given[0] = f;
                    if jp {
                        std::mem::swap(&mut v.family_kana, &mut v.given_kana);
                    }
                }
            }
            ErrorKind::Missing => {
                let n = 1 + self.rng.below(2);
                for _ in 0..n {
                    match self.rng.below(6) {
                        0 => v.phone = None,
                        1 => {
                            v.line = None;
                            v.postcode = None;
                            v.city = None;
                        }
                        2 => v.birth = None,
                        3 => v.gender = None,
                        4 => v.given.truncate(1),
                        _ => v.ssn = None,
                    }
                }
            }
            ErrorKind::Married => {
                if p.gender != "female" || p.birth.0 > 2000 {
                    return self.apply(p, v, ErrorKind::Moved, index);
                }
                let old = v.family.clone();
                if jp {
                    let (fk, fkana) = *self.rng.pick(JP_FAMILY);
                    v.family = Some(fk.to_owned());
                    v.family_kana = Some(fkana.to_owned());
                } else {
                    v.family = Some(self.rng.pick(self.seeds).family.clone());
                }
                if self.rng.chance(0.5) {
                    v.maiden = old;
                }
                if self.rng.chance(0.3) {
                    self.new_address(&mut v, jp, index);
                }
            }
            ErrorKind::Moved => self.new_address(&mut v, jp, index),
            ErrorKind::Japanese => {
                if !jp {
                    return self.apply(p, v, ErrorKind::Typo, index);
                }
                match self.rng.below(5) {
                    0 => {
                        // Kanji variant where the name has one; otherwise hiragana.
                        let varied = |s: &str| -> String {
                            s.chars()
                                .map(|c| {
                                    KANJI_TO_VARIANT
                                        .iter()
                                        .find(|(std, _)| *std == c)
                                        .map_or(c, |(_, var)| *var)
                                })
                                .collect()
                        };
                        let f = v.family.as_deref().map(varied);
                        let g = v.given.first().map(|g| varied(g));
                        if f != v.family || g.as_ref() != v.given.first() {
                            v.family = f;
                            if let Some(g) = g {
                                v.given[0] = g;
                            }
                        } else {
                            v.family_kana = v.family_kana.map(|k| to_hiragana(&k));
                            v.given_kana = v.given_kana.map(|k| to_hiragana(&k));
                        }
                    }
                    1 => {
                        v.family_kana = v.family_kana.map(|k| to_hiragana(&k));
                        v.given_kana = v.given_kana.map(|k| to_hiragana(&k));
                    }
                    2 => {
                        v.family_kana = v.family_kana.map(|k| to_halfwidth(&k));
                        v.given_kana = v.given_kana.map(|k| to_halfwidth(&k));
                    }
                    3 => {
                        // Kana only: the registering clinic could not enter the kanji.
                        v.family = None;
                        v.given.clear();
                    }
                    _ => {
                        v.phone = v.phone.map(|ph| to_fullwidth_digits(&ph));
                        v.postcode = v
                            .postcode
                            .map(|pc| to_fullwidth_digits(&pc.replace('-', "")));
                    }
                }
            }
            ErrorKind::GivenReplaced => {
                if v.ssn.is_none() {
                    return self.apply(p, v, ErrorKind::Typo, index);
                }
                let first = p.given.first().cloned().unwrap_or_default();
                let other = loop {
                    let name = self.rng.pick(self.seeds).given.first().cloned();
                    if let Some(name) = name
                        && !name.is_empty()
                        && name.chars().next() != first.chars().next()
                    {
                        break name;
                    }
                };
                v.given = vec![other];
            }
            ErrorKind::BirthReplaced => {
                if v.ssn.is_none() {
                    return self.apply(p, v, ErrorKind::Typo, index);
                }
                let (y, _, _) = p.birth;
                let year = if y > 1930 {
                    y - 3 - self.rng.below(20) as u16
                } else {
                    y + 11
                };
                let (m, d) = (1 + self.rng.below(12), 1 + self.rng.below(28));
                v.birth = Some(format!("{year:04}-{m:02}-{d:02}"));
            }
            ErrorKind::IdentifierSwapped => {
                let Some(ssn) = v.ssn.clone() else {
                    return self.apply(p, v, ErrorKind::Typo, index);
                };
                let chars: Vec<char> = ssn.chars().collect();
                let spots: Vec<usize> = (0..chars.len().saturating_sub(1))
                    .filter(|&i| {
                        chars[i].is_ascii_digit()
                            && chars[i + 1].is_ascii_digit()
                            && chars[i] != chars[i + 1]
                    })
                    .collect();
                if spots.is_empty() {
                    return self.apply(p, v, ErrorKind::Typo, index);
                }
                let at = *self.rng.pick(&spots);
                let mut chars = chars;
                chars.swap(at, at + 1);
                v.ssn = Some(chars.into_iter().collect());
                v.birth = None;
            }
            ErrorKind::KanjiConversion => {
                let reading = p.kana.as_ref().map(|k| k.1.as_str());
                let Some((_, spellings)) = JP_HOMOPHONES
                    .iter()
                    .find(|(kana, _)| Some(*kana) == reading)
                else {
                    return self.apply(p, v, ErrorKind::Japanese, index);
                };
                let own = p.given.first().map(String::as_str);
                let others: Vec<&str> = spellings
                    .iter()
                    .copied()
                    .filter(|k| Some(*k) != own)
                    .collect();
                v.given = vec![(*self.rng.pick(&others)).to_owned()];
            }
            ErrorKind::LongVowel => {
                let long = |s: &str| -> Option<String> {
                    let mut previous = None;
                    let mut changed = false;
                    let mut out = String::new();
                    for c in s.chars() {
                        if c == 'ウ' && matches!(previous, Some('o' | 'u')) {
                            out.push('ー');
                            changed = true;
                        } else {
                            out.push(c);
                            previous = crate::normalize::kana_vowel(c);
                        }
                    }
                    changed.then_some(out)
                };
                let given = v.given_kana.as_deref().and_then(long);
                let family = v.family_kana.as_deref().and_then(long);
                if given.is_none() && family.is_none() {
                    return self.apply(p, v, ErrorKind::Japanese, index);
                }
                // Sometimes in hiragana too, as an intake form would have it.
                let hira = self.rng.chance(0.3);
                let write = |k: String| if hira { to_hiragana(&k) } else { k };
                if let Some(g) = given {
                    v.given_kana = Some(write(g));
                }
                if let Some(f) = family {
                    v.family_kana = Some(write(f));
                }
            }
            ErrorKind::NamesReplaced => {
                if v.ssn.is_none() || v.family.is_none() || v.given.is_empty() {
                    return self.apply(p, v, ErrorKind::Typo, index);
                }
                if self.rng.chance(0.5) {
                    // Swapped: given in the family field and the family name as given name.
                    let family = v.family.take().unwrap_or_default();
                    v.family = Some(v.given[0].clone());
                    v.given = vec![family];
                } else {
                    let first = p.given.first().cloned().unwrap_or_default();
                    let given = loop {
                        let name = self.rng.pick(self.seeds).given.first().cloned();
                        if let Some(name) = name
                            && !name.is_empty()
                            && name.chars().next() != first.chars().next()
                        {
                            break name;
                        }
                    };
                    let family = loop {
                        let name = self.rng.pick(self.seeds).family.clone();
                        if !name.is_empty() && name.chars().next() != p.family.chars().next() {
                            break name;
                        }
                    };
                    v.given = vec![given];
                    v.family = Some(family);
                }
            }
            ErrorKind::AddressSplit => {
                let line = v.line.clone().unwrap_or_default();
                match self.split_or_join(&line) {
                    Some(changed) if !jp => v.line = Some(changed),
                    _ => return self.apply(p, v, ErrorKind::Typo, index),
                }
            }
            // The record number is the renderer's: a new one at the original facility.
            ErrorKind::SecondMrn | ErrorKind::Original | ErrorKind::Twin | ErrorKind::Household => {
            }
        }
        (v, kind)
    }

    /// An address line with two neighbouring words joined ("Lubuma Place" -> "Lubumaplace")
    /// or one word split ("Tremblay" -> "Trem blay"); `None` when the line has neither.
    fn split_or_join(&mut self, line: &str) -> Option<String> {
        let words: Vec<&str> = line.split(' ').filter(|w| !w.is_empty()).collect();
        let alphabetic = |w: &str| w.chars().all(|c| c.is_alphabetic());
        let joins: Vec<usize> = (0..words.len().saturating_sub(1))
            .filter(|&i| alphabetic(words[i]) && alphabetic(words[i + 1]))
            .collect();
        let splits: Vec<usize> = (0..words.len())
            .filter(|&i| alphabetic(words[i]) && words[i].chars().count() >= 6)
            .collect();
        let mut out: Vec<String> = words.iter().map(|w| (*w).to_owned()).collect();
        if !joins.is_empty() && (splits.is_empty() || self.rng.chance(0.5)) {
            let i = *self.rng.pick(&joins);
            let next = out.remove(i + 1).to_lowercase();
            out[i].push_str(&next);
        } else if !splits.is_empty() {
            let i = *self.rng.pick(&splits);
            let chars: Vec<char> = out[i].chars().collect();
            let at = 3 + self.rng.below(chars.len() - 5);
            let (head, tail): (String, String) =
                (chars[..at].iter().collect(), chars[at..].iter().collect());
            out.splice(i..=i, [head, tail]);
        } else {
            return None;
        }
        Some(out.join(" "))
    }

    /// A member of `p`'s household, a different person: of the other sex with another given
    /// name and a birth date days apart, or (half the time) a record without any name born
    /// the same day. Same address and landline; no national number of the person's.
    fn household_member(&mut self, p: &Person) -> View {
        let mut v = Generator::view(p);
        v.ssn = None;
        if self.rng.chance(0.5) {
            v.family = None;
            v.given.clear();
            v.family_kana = None;
            v.given_kana = None;
            v.gender = Some(if self.rng.chance(0.5) {
                "female"
            } else {
                "male"
            });
            return v;
        }
        let gender = if p.gender == "female" {
            "male"
        } else {
            "female"
        };
        v.gender = Some(gender);
        if p.kana.is_some() {
            let names = if gender == "female" {
                JP_FEMALE
            } else {
                JP_MALE
            };
            let (given, kana) = *self.rng.pick(names);
            v.given = vec![given.to_owned()];
            v.given_kana = Some(kana.to_owned());
        } else {
            let first = p.given.first().cloned().unwrap_or_default();
            let given = loop {
                let other = self.rng.pick(self.seeds);
                if other.gender == gender
                    && let Some(name) = other.given.first()
                    && !name.is_empty()
                    && !name.eq_ignore_ascii_case(&first)
                {
                    break name.clone();
                }
            };
            v.given = vec![given];
        }
        let (y, m, d) = p.birth;
        let apart = 1 + self.rng.below(6) as u8;
        let d = if d + apart <= days_in(m) {
            d + apart
        } else {
            d - apart
        };
        v.birth = Some(format!("{y:04}-{m:02}-{d:02}"));
        v
    }

    fn render(&mut self, v: &View, id: &str, facility: Option<usize>, updated: &str) -> Value {
        let mut names = Vec::new();
        let jp = v.japanese;
        let rep =
            |code: &str| json!([{"url": crate::record::EN_REPRESENTATION, "valueCode": code}]);
        if v.family.is_some() || !v.given.is_empty() {
            let mut n = json!({"use": "official"});
            if jp {
                n["extension"] = rep("IDE");
            }
            if let Some(f) = &v.family {
                n["family"] = json!(f);
            }
            if !v.given.is_empty() {
                n["given"] = json!(v.given);
            }
            names.push(n);
        }
        if v.family_kana.is_some() || v.given_kana.is_some() {
            let mut n = json!({"use": "official", "extension": rep("SYL")});
            if let Some(f) = &v.family_kana {
                n["family"] = json!(f);
            }
            if let Some(g) = &v.given_kana {
                n["given"] = json!([g]);
            }
            names.push(n);
        }
        if let Some(m) = &v.maiden {
            names.push(json!({"use": "maiden", "family": m, "given": v.given}));
        }
        let (system, mrn) = match facility {
            None => (ORIGINAL_MRN.to_owned(), id.to_owned()),
            Some(f) => (
                FACILITIES[f % FACILITIES.len()].to_owned(),
                format!("{:08}", self.rng.below(100_000_000)),
            ),
        };
        let mut identifiers = vec![json!({
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
            "system": system, "value": mrn
        })];
        if let Some(ssn) = &v.ssn {
            identifiers.push(json!({"system": SSN, "value": ssn}));
        }
        let mut p = json!({
            "resourceType": "Patient",
            "id": id,
            "meta": {"lastUpdated": updated, "source": system},
            "identifier": identifiers,
        });
        // A record with no name leaves the element out: FHIR allows no empty arrays, and
        // `renkei import` refuses them.
        if !names.is_empty() {
            p["name"] = json!(names);
        }
        if let Some(ph) = &v.phone {
            p["telecom"] = json!([{"system": "phone", "value": ph, "use": "home"}]);
        }
        if let Some(g) = v.gender {
            p["gender"] = json!(g);
        }
        if let Some(b) = &v.birth {
            p["birthDate"] = json!(b);
        }
        if v.line.is_some() || v.postcode.is_some() {
            let mut a = json!({"use": "home"});
            if let Some(l) = &v.line {
                a["line"] = json!([l]);
            }
            if let Some(c) = &v.city {
                a["city"] = json!(c);
            }
            if let Some(s) = &v.state {
                a["state"] = json!(s);
            }
            if let Some(pc) = &v.postcode {
                a["postalCode"] = json!(pc);
            }
            a["country"] = json!(if jp { "JP" } else { "US" });
            p["address"] = json!([a]);
        }
        if let Some(n) = v.multiple_birth {
            p["multipleBirthInteger"] = json!(n);
        }
        p
    }
}

fn to_hiragana(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\u{30A1}'..='\u{30F6}' => char::from_u32(c as u32 - 0x60).unwrap_or(c),
            _ => c,
        })
        .collect()
}

fn to_halfwidth(s: &str) -> String {
    const FULL: &str = "アイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤユヨラリルレロワヲンァィゥェォッャュョー";
    const HALF: &str = "ｱｲｳｴｵｶｷｸｹｺｻｼｽｾｿﾀﾁﾂﾃﾄﾅﾆﾇﾈﾉﾊﾋﾌﾍﾎﾏﾐﾑﾒﾓﾔﾕﾖﾗﾘﾙﾚﾛﾜｦﾝｧｨｩｪｫｯｬｭｮｰ";
    use unicode_normalization::UnicodeNormalization;
    let full: Vec<char> = FULL.chars().collect();
    let half: Vec<char> = HALF.chars().collect();
    let mut out = String::new();
    for c in s.nfd() {
        match c {
            '\u{3099}' => out.push('ﾞ'),
            '\u{309A}' => out.push('ﾟ'),
            _ => out.push(full.iter().position(|f| *f == c).map_or(c, |i| half[i])),
        }
    }
    out
}

fn to_fullwidth_digits(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '0'..='9' => char::from_u32(c as u32 - '0' as u32 + 0xFF10).unwrap_or(c),
            '-' => '－',
            _ => c,
        })
        .collect()
}

/// Generates labelled Patients from seed Patients into memory.
pub fn generate(seeds: &[Value], config: &GenConfig) -> Generated {
    let mut out = Generated {
        patients: Vec::new(),
        labels: Vec::new(),
    };
    generate_each(seeds, config, |p, l| {
        out.patients.push(p);
        out.labels.push(l);
    });
    out
}

/// Generates labelled Patients from seed Patients, handing each to `sink` as it is made
/// (large populations are written out without being held in memory). Returns the count.
pub fn generate_each(
    seeds: &[Value],
    config: &GenConfig,
    mut sink: impl FnMut(Value, Label),
) -> usize {
    let persons: Vec<Person> = seeds.iter().filter_map(seed_person).collect();
    let mut g = Generator {
        rng: Rng::new(config.seed),
        seeds: &persons,
        next_id: 0,
    };
    let mut emitted = 0usize;
    if persons.is_empty() {
        return 0;
    }
    let target = config.count.unwrap_or(usize::MAX);
    let mut index: u64 = 0;
    loop {
        if emitted >= target || (config.count.is_none() && index as usize >= persons.len()) {
            break;
        }
        let mut person = match config.count {
            None => persons[index as usize].clone(),
            Some(_) => g.recombined(index),
        };
        if g.rng.chance(config.japanese_rate) {
            person = g.japanese(person, index);
        }
        let jp = person.kana.is_some();
        let cluster = format!("P{index}");
        let original = Generator::view(&person);
        let id = g.id();
        let updated = format!(
            "20{:02}-{:02}-01T00:00:00Z",
            10 + g.rng.below(10),
            1 + g.rng.below(12)
        );
        let patient = g.render(&original, &id, None, &updated);
        if emitted < target {
            emitted += 1;
            sink(
                patient,
                Label {
                    id,
                    cluster: cluster.clone(),
                    error: ErrorKind::Original,
                },
            );
        }
        if g.rng.chance(config.duplicate_rate) {
            let n = match g.rng.unit() {
                x if x < 0.6 => 1,
                x if x < 0.9 => 2,
                _ => 3,
            };
            for d in 0..n {
                let kinds: &[ErrorKind] = if jp {
                    &[
                        ErrorKind::Japanese,
                        ErrorKind::Japanese,
                        ErrorKind::Japanese,
                        ErrorKind::Typo,
                        ErrorKind::Swap,
                        ErrorKind::Missing,
                        ErrorKind::Married,
                        ErrorKind::Moved,
                    ]
                } else {
                    &[
                        ErrorKind::Typo,
                        ErrorKind::Typo,
                        ErrorKind::Ocr,
                        ErrorKind::Nickname,
                        ErrorKind::Nickname,
                        ErrorKind::Swap,
                        ErrorKind::Missing,
                        ErrorKind::Missing,
                        ErrorKind::Married,
                        ErrorKind::Moved,
                        ErrorKind::Moved,
                    ]
                };
                let replaced = config.replaced_rate > 0.0 && g.rng.chance(config.replaced_rate);
                let kind = if replaced {
                    let kinds: &[ErrorKind] = if jp {
                        &[
                            ErrorKind::KanjiConversion,
                            ErrorKind::LongVowel,
                            ErrorKind::SecondMrn,
                        ]
                    } else {
                        &[
                            ErrorKind::GivenReplaced,
                            ErrorKind::BirthReplaced,
                            ErrorKind::IdentifierSwapped,
                            ErrorKind::SecondMrn,
                            ErrorKind::NamesReplaced,
                            ErrorKind::AddressSplit,
                        ]
                    };
                    *g.rng.pick(kinds)
                } else {
                    *g.rng.pick(kinds)
                };
                let mut base = original.clone();
                // Another facility: its own record number; the SSN only sometimes (always
                // for the classes that are about it).
                let about_ssn = matches!(
                    kind,
                    ErrorKind::GivenReplaced
                        | ErrorKind::BirthReplaced
                        | ErrorKind::IdentifierSwapped
                        | ErrorKind::NamesReplaced
                );
                if !g.rng.chance(0.3) && !about_ssn {
                    base.ssn = None;
                }
                let (view, applied) = g.apply(&person, base, kind, index);
                let id = g.id();
                let updated = format!(
                    "2024-{:02}-{:02}T00:00:00Z",
                    1 + g.rng.below(12),
                    1 + g.rng.below(28)
                );
                // A second registration at the original facility: its system, a new number.
                let facility = (applied != ErrorKind::SecondMrn).then_some(d);
                let patient = g.render(&view, &id, facility, &updated);
                if emitted < target {
                    emitted += 1;
                    sink(
                        patient,
                        Label {
                            id,
                            cluster: cluster.clone(),
                            error: applied,
                        },
                    );
                }
            }
        }
        if g.rng.chance(config.twin_rate) {
            let mut twin = person.clone();
            if let Some((f, own)) = &person.kana {
                let (gk, gkana) = loop {
                    let (gk, gkana) = *g.rng.pick(JP_MALE);
                    if gkana != own {
                        break (gk, gkana);
                    }
                };
                twin.given = vec![gk.to_owned()];
                twin.kana = Some((f.clone(), gkana.to_owned()));
            } else {
                twin.given = vec![loop {
                    let name = g
                        .rng
                        .pick(&persons)
                        .given
                        .first()
                        .cloned()
                        .unwrap_or_default();
                    if !name.is_empty() && !name.eq_ignore_ascii_case(&person.given[0]) {
                        break name;
                    }
                }];
            }
            twin.ssn = twin
                .ssn
                .as_ref()
                .map(|s| g.digit_error(&s.replace('9', "4")));
            let mut v = Generator::view(&twin);
            v.multiple_birth = Some(2);
            let id = g.id();
            let patient = g.render(&v, &id, None, &updated);
            if emitted < target {
                emitted += 1;
                sink(
                    patient,
                    Label {
                        id,
                        cluster: format!("P{index}-twin"),
                        error: ErrorKind::Twin,
                    },
                );
            }
        }
        // Household members only with issue 19's classes, so the classic sets stay as they were.
        if config.replaced_rate > 0.0 && g.rng.chance(config.twin_rate) {
            let v = g.household_member(&person);
            let id = g.id();
            let facility = g.rng.below(FACILITIES.len());
            let patient = g.render(&v, &id, Some(facility), &updated);
            if emitted < target {
                emitted += 1;
                sink(
                    patient,
                    Label {
                        id,
                        cluster: format!("P{index}-household"),
                        error: ErrorKind::Household,
                    },
                );
            }
        }
        index += 1;
    }
    emitted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed() -> Vec<Value> {
        vec![
            json!({"resourceType": "Patient", "id": "s1", "gender": "male", "birthDate": "1943-03-17",
                "name": [{"family": "Goldner995", "given": ["Robert29"]}],
                "telecom": [{"system": "phone", "value": "555-806-9773"}],
                "address": [{"line": ["847 Tremblay Crossroad"], "city": "Bloom", "state": "KS", "postalCode": "67880"}],
                "identifier": [{"system": SSN, "value": "999-53-8547"}]}),
            json!({"resourceType": "Patient", "id": "s2", "gender": "female", "birthDate": "1983-08-10",
                "name": [{"family": "Koch169", "given": ["Margaret75"]}],
                "telecom": [{"system": "phone", "value": "555-162-4456"}],
                "address": [{"line": ["987 Skiles Union"], "city": "Walnut", "state": "KS", "postalCode": "66780"}]}),
        ]
    }

    #[test]
    fn issue_19_classes_are_generated_only_when_asked() {
        let seeds: Vec<Value> = (0..200).map(|i| seed()[i % 2].clone()).collect();
        let config = GenConfig {
            duplicate_rate: 1.0,
            replaced_rate: 1.0,
            japanese_rate: 0.4,
            ..GenConfig::default()
        };
        let data = generate(&seeds, &config);
        let kinds: std::collections::HashSet<ErrorKind> =
            data.labels.iter().map(|l| l.error).collect();
        for kind in [
            ErrorKind::GivenReplaced,
            ErrorKind::BirthReplaced,
            ErrorKind::IdentifierSwapped,
            ErrorKind::KanjiConversion,
            ErrorKind::LongVowel,
            ErrorKind::SecondMrn,
            ErrorKind::NamesReplaced,
            ErrorKind::AddressSplit,
            ErrorKind::Household,
        ] {
            assert!(kinds.contains(&kind), "{kind:?} missing");
        }
        // Valid FHIR, as `renkei import` checks it: a record without a name leaves the
        // element out rather than writing an empty array.
        for p in &data.patients {
            for (element, value) in p.as_object().unwrap() {
                assert!(
                    value.as_array().is_none_or(|a| !a.is_empty()),
                    "empty {element}: {p}"
                );
            }
        }
        assert!(data.patients.iter().any(|p| p.get("name").is_none()));
        let records: Vec<crate::record::Record> = data
            .patients
            .iter()
            .map(|p| crate::record::Record::from_patient(p).unwrap())
            .collect();
        let original_of = |cluster: &str| {
            data.labels
                .iter()
                .position(|l| l.cluster == cluster && l.error == ErrorKind::Original)
                .unwrap()
        };
        let kinds_model = crate::identifier::IdentifierKinds::default();
        let original_ssn = "999-53-8547";
        for (p, l) in data.patients.iter().zip(&data.labels) {
            let ssn = p["identifier"]
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["system"] == SSN)
                .and_then(|i| i["value"].as_str());
            match l.error {
                ErrorKind::IdentifierSwapped => {
                    assert!(p.get("birthDate").is_none());
                    let ssn = ssn.unwrap();
                    assert_ne!(ssn, original_ssn);
                    assert!(crate::identifier::keying_error(ssn, original_ssn).is_some());
                }
                ErrorKind::GivenReplaced | ErrorKind::BirthReplaced => {
                    assert_eq!(ssn, Some(original_ssn));
                }
                ErrorKind::SecondMrn => {
                    assert_eq!(p["identifier"][0]["system"], ORIGINAL_MRN);
                }
                ErrorKind::NamesReplaced => {
                    assert_eq!(ssn, Some(original_ssn));
                }
                ErrorKind::AddressSplit => {
                    let i = data.patients.iter().position(|q| q == p).unwrap();
                    let o = original_of(&l.cluster);
                    assert_ne!(p["address"], data.patients[o]["address"]);
                    let c = crate::compare::compare(&records[i], &records[o], &kinds_model);
                    assert_eq!(c.levels[crate::compare::Field::Address.index()], 1, "{p}");
                }
                ErrorKind::Household => {
                    // Another person of the household: own cluster, no national number.
                    assert!(l.cluster.ends_with("-household"));
                    assert!(ssn.is_none());
                    let o = original_of(l.cluster.trim_end_matches("-household"));
                    assert_eq!(p["address"], data.patients[o]["address"]);
                    assert_eq!(p["telecom"], data.patients[o]["telecom"]);
                    if p.get("name")
                        .and_then(Value::as_array)
                        .is_some_and(|n| !n.is_empty())
                    {
                        assert_ne!(p["gender"], data.patients[o]["gender"]);
                        assert_ne!(p["birthDate"], data.patients[o]["birthDate"]);
                    } else {
                        assert_eq!(p["birthDate"], data.patients[o]["birthDate"]);
                    }
                }
                _ => {}
            }
        }
        // The default draws none of them, and leaves the sets exactly as they were.
        let plain = generate(&seeds, &GenConfig::default());
        assert!(plain.labels.iter().all(|l| l.error <= ErrorKind::Twin));
    }

    #[test]
    fn generation_is_deterministic_and_labelled() {
        let config = GenConfig {
            count: Some(300),
            ..GenConfig::default()
        };
        let a = generate(&seed(), &config);
        let b = generate(&seed(), &config);
        assert_eq!(a.patients, b.patients);
        assert_eq!(a.patients.len(), 300);
        assert_eq!(a.labels.len(), 300);
        for (p, l) in a.patients.iter().zip(&a.labels) {
            assert_eq!(p["id"].as_str(), Some(l.id.as_str()));
            crate::record::Record::from_patient(p).unwrap();
        }
        let kinds: std::collections::HashSet<_> = a.labels.iter().map(|l| l.error).collect();
        assert!(kinds.contains(&ErrorKind::Japanese));
        assert!(kinds.contains(&ErrorKind::Nickname));
    }

    #[test]
    fn kana_helpers() {
        assert_eq!(to_hiragana("タナカ"), "たなか");
        assert_eq!(to_halfwidth("ガッコウ"), "ｶﾞｯｺｳ");
        assert_eq!(to_fullwidth_digits("03-1"), "０３－１");
        assert_eq!(
            crate::normalize::name(&to_halfwidth("ヤマザキ")),
            "ヤマザキ"
        );
    }
}
