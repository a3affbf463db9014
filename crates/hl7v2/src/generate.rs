//! A deterministic generator of test messages: JAHIS-style (SS-MIX2: HL7 v2.5, ISO IR87 /
//! ISO-2022-JP, Japanese names in kanji and kana, JLAC10 lab panels, HOT-coded
//! prescriptions, MEDIS disease names) and US-style (LOINC, CVX, RxNorm-free text drugs).
//!
//! Used by the tests and benchmarks of this crate, `ssmix2` (to write a storage tree),
//! `ingest` and `renkei bench`. Same seed, same messages: no clock, no global RNG. Test data,
//! not product: behind the `generate` feature, off by default.

use crate::charset::Charset;

/// Message flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// JAHIS / SS-MIX2: v2.5, `~ISO IR87`, MSH-9 with three components, PID-3 `ID^^^^PI`.
    Jahis,
    /// US: v2.5.1, ASCII, assigning authority in PID-3.
    Us,
}

/// A generated person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    pub id: String,
    /// (family, given) in the native script.
    pub name: (String, String),
    /// (family, given) in katakana (JAHIS only).
    pub kana: Option<(String, String)>,
    pub birth_date: String,
    pub sex: &'static str,
    /// Home address as PID-11 (one XAD), in the style's script.
    pub address: String,
    /// Home phone as PID-13 (one XTN).
    pub phone: String,
}

/// A generated message with what SS-MIX2 needs to file it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// The wire bytes (ISO-2022-JP for JAHIS).
    pub bytes: Vec<u8>,
    /// `ADT^A08`, `OUL^R22`, ...
    pub message_type: String,
    pub patient_id: String,
    /// Care date `YYYYMMDD` when the message has one.
    pub care_date: Option<String>,
    /// Order number when the message is an order or result.
    pub order_number: Option<String>,
    pub control_id: String,
}

/// A small deterministic PRNG (SplitMix64).
#[derive(Debug, Clone)]
pub struct Generator {
    seed: u64,
    state: u64,
    counter: u64,
    pub style: Style,
}

const JP_FAMILY: [(&str, &str); 20] = [
    ("山田", "ヤマダ"),
    ("佐藤", "サトウ"),
    ("鈴木", "スズキ"),
    ("高橋", "タカハシ"),
    ("田中", "タナカ"),
    ("伊藤", "イトウ"),
    ("渡辺", "ワタナベ"),
    ("中村", "ナカムラ"),
    ("小林", "コバヤシ"),
    ("加藤", "カトウ"),
    ("吉田", "ヨシダ"),
    ("山本", "ヤマモト"),
    ("松本", "マツモト"),
    ("井上", "イノウエ"),
    ("木村", "キムラ"),
    ("林", "ハヤシ"),
    ("斎藤", "サイトウ"),
    ("清水", "シミズ"),
    ("山口", "ヤマグチ"),
    ("森", "モリ"),
];
const JP_GIVEN: [(&str, &str, &str); 16] = [
    ("太郎", "タロウ", "M"),
    ("花子", "ハナコ", "F"),
    ("一郎", "イチロウ", "M"),
    ("美咲", "ミサキ", "F"),
    ("健太", "ケンタ", "M"),
    ("陽子", "ヨウコ", "F"),
    ("翔", "ショウ", "M"),
    ("さくら", "サクラ", "F"),
    ("大輔", "ダイスケ", "M"),
    ("恵子", "ケイコ", "F"),
    ("誠", "マコト", "M"),
    ("由美", "ユミ", "F"),
    ("拓也", "タクヤ", "M"),
    ("直美", "ナオミ", "F"),
    ("浩", "ヒロシ", "M"),
    ("愛", "アイ", "F"),
];
/// (prefecture and municipality, town, postal code prefix, phone area code)
const JP_PLACES: [(&str, &str, &str, &str); 6] = [
    ("東京都千代田区", "丸の内", "100", "03"),
    ("東京都世田谷区", "北沢", "155", "03"),
    ("神奈川県横浜市中区", "山下町", "231", "045"),
    ("大阪府大阪市北区", "梅田", "530", "06"),
    ("愛知県名古屋市中区", "栄", "460", "052"),
    ("福岡県福岡市博多区", "博多駅前", "812", "092"),
];
const US_FAMILY: [&str; 24] = [
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Thompson",
    "White",
    "Harris",
    "Clark",
];
const US_GIVEN: [(&str, &str); 20] = [
    ("James", "M"),
    ("Mary", "F"),
    ("Robert", "M"),
    ("Patricia", "F"),
    ("John", "M"),
    ("Jennifer", "F"),
    ("Michael", "M"),
    ("Linda", "F"),
    ("David", "M"),
    ("Elizabeth", "F"),
    ("William", "M"),
    ("Barbara", "F"),
    ("Richard", "M"),
    ("Susan", "F"),
    ("Joseph", "M"),
    ("Jessica", "F"),
    ("Thomas", "M"),
    ("Karen", "F"),
    ("Daniel", "M"),
    ("Nancy", "F"),
];
/// (street, city, state, ZIP, phone area code)
const US_PLACES: [(&str, &str, &str, &str, &str); 6] = [
    ("Main St", "Springfield", "IL", "62701", "217"),
    ("Oak Ave", "Peoria", "IL", "61602", "309"),
    ("Maple Dr", "Chicago", "IL", "60614", "312"),
    ("Cedar Ln", "Madison", "WI", "53703", "608"),
    ("Elm St", "Indianapolis", "IN", "46204", "317"),
    ("Lake Rd", "Milwaukee", "WI", "53202", "414"),
];

/// Full-width digits, as Japanese addresses are written.
fn full_width(n: u64) -> String {
    n.to_string()
        .chars()
        .map(|c| char::from_u32(c as u32 - '0' as u32 + '０' as u32).unwrap_or(c))
        .collect()
}

/// (JLAC10 code, name, unit, low, high, typical)
const JP_PANEL: [(&str, &str, &str, f64, f64, f64); 5] = [
    ("3A010000002327101", "総蛋白", "g/dL", 6.5, 8.2, 7.1),
    ("3C025000002327101", "クレアチニン", "mg/dL", 0.6, 1.1, 0.9),
    (
        "3D010000001926101",
        "グルコース",
        "mg/dL",
        70.0,
        109.0,
        98.0,
    ),
    ("2A990000001930952", "白血球数", "10*3/uL", 3.3, 8.6, 6.0),
    (
        "2A020000001930101",
        "ヘモグロビン",
        "g/dL",
        13.7,
        16.8,
        14.5,
    ),
];
/// (LOINC, name, unit, low, high, typical)
const US_PANEL: [(&str, &str, &str, f64, f64, f64); 4] = [
    (
        "718-7",
        "Hemoglobin [Mass/volume] in Blood",
        "g/dL",
        13.5,
        17.5,
        15.0,
    ),
    (
        "6690-2",
        "Leukocytes [#/volume] in Blood",
        "10*3/uL",
        4.5,
        11.0,
        7.0,
    ),
    (
        "777-3",
        "Platelets [#/volume] in Blood",
        "10*3/uL",
        150.0,
        400.0,
        250.0,
    ),
    (
        "2345-7",
        "Glucose [Mass/volume] in Serum or Plasma",
        "mg/dL",
        70.0,
        99.0,
        90.0,
    ),
];
/// (HOT9 code, name, amount, unit code, unit name)
const JP_DRUGS: [(&str, &str, &str); 3] = [
    ("100795402", "ロキソニン錠６０ｍｇ", "1"),
    ("103835401", "ムコダイン錠２５０ｍｇ", "1"),
    ("105271807", "アムロジピン錠５ｍｇ", "1"),
];

impl Generator {
    pub fn new(seed: u64, style: Style) -> Self {
        Generator {
            seed,
            state: seed ^ 0x9E37_79B9_7F4A_7C15,
            counter: 0,
            style,
        }
    }

    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn pick(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn control_id(&mut self) -> String {
        self.counter += 1;
        // Unique per generator seed: senders must not reuse control ids.
        format!("M{:05}{:010}", self.seed % 100_000, self.counter)
    }

    /// A new person.
    pub fn person(&mut self) -> Person {
        let number = self.next() % 10_000_000_000;
        let year = 1930 + self.pick(90);
        let birth_date = format!("{year}{:02}{:02}", 1 + self.pick(12), 1 + self.pick(28));
        // Every person has a home of their own: people who share a name, an address and a
        // phone are, to a patient index, one person.
        let line = self.next();
        match self.style {
            Style::Jahis => {
                let (f, fk) = JP_FAMILY[self.pick(JP_FAMILY.len())];
                let (g, gk, sex) = JP_GIVEN[self.pick(JP_GIVEN.len())];
                let (city, town, zip, area) = JP_PLACES[self.pick(JP_PLACES.len())];
                let (chome, ban, go) = (1 + line % 5, 1 + line / 5 % 30, 1 + line / 150 % 20);
                Person {
                    id: format!("{number:010}"),
                    name: (f.into(), g.into()),
                    kana: Some((fk.into(), gk.into())),
                    birth_date,
                    sex,
                    address: format!(
                        "^^{city}{town}{}－{}－{}^^{zip}{:04}^JPN^H",
                        full_width(chome),
                        full_width(ban),
                        full_width(go),
                        line / 3000 % 10_000,
                    ),
                    phone: format!(
                        "^PRN^PH^^^^^^^^^{area}-{:04}-{:04}",
                        line / 7 % 10_000,
                        line / 70_000 % 10_000
                    ),
                }
            }
            Style::Us => {
                let f = US_FAMILY[self.pick(US_FAMILY.len())];
                let (g, sex) = US_GIVEN[self.pick(US_GIVEN.len())];
                let (street, city, state, zip, area) = US_PLACES[self.pick(US_PLACES.len())];
                Person {
                    id: format!("MRN{number:08}"),
                    name: (f.into(), g.into()),
                    kana: None,
                    birth_date,
                    sex,
                    address: format!(
                        "{} {street}^^{city}^{state}^{zip}^USA^H",
                        100 + line % 9_900
                    ),
                    phone: format!(
                        "^PRN^PH^^1^{area}^{}{:06}",
                        2 + line / 9_900 % 8,
                        line / 79_200 % 1_000_000
                    ),
                }
            }
        }
    }

    /// A care date `YYYYMMDD` in 2026 and a time `HHMMSS`.
    fn moment(&mut self) -> (String, String) {
        (
            format!("2026{:02}{:02}", 1 + self.pick(12), 1 + self.pick(28)),
            format!(
                "{:02}{:02}{:02}",
                8 + self.pick(10),
                self.pick(60),
                self.pick(60)
            ),
        )
    }

    fn msh(&mut self, message_type: &str, structure: &str, when: &str) -> (String, String) {
        let control = self.control_id();
        let seg = match self.style {
            Style::Jahis => format!(
                "MSH|^~\\&|HIS|1310000001|SSMIX2|RENKEI|{when}||{message_type}^{structure}|{control}|P|2.5||||||~ISO IR87||ISO 2022-1994"
            ),
            Style::Us => format!(
                "MSH|^~\\&|EPIC|GENHOSP|RENKEI|HIE|{when}-0500||{message_type}^{structure}|{control}|P|2.5.1"
            ),
        };
        (seg, control)
    }

    fn pid(&self, p: &Person) -> String {
        match self.style {
            Style::Jahis => {
                let (fk, gk) = p.kana.clone().unwrap_or_default();
                format!(
                    "PID|0001||{}^^^^PI||{}^{}^^^^^L^I~{}^{}^^^^^L^P||{}|{}|||{}||{}",
                    p.id, p.name.0, p.name.1, fk, gk, p.birth_date, p.sex, p.address, p.phone
                )
            }
            Style::Us => format!(
                "PID|1||{}^^^GENHOSP^MR||{}^{}^^^^^L||{}|{}|||{}||{}",
                p.id, p.name.0, p.name.1, p.birth_date, p.sex, p.address, p.phone
            ),
        }
    }

    fn finish(
        &self,
        segments: Vec<String>,
        message_type: &str,
        p: &Person,
        care_date: Option<String>,
        order_number: Option<String>,
        control_id: String,
    ) -> Generated {
        let text = segments.join("\r") + "\r";
        let charset = match self.style {
            Style::Jahis => Charset::Iso2022Jp,
            Style::Us => Charset::Ascii,
        };
        Generated {
            bytes: charset
                .encode(&text)
                .expect("generated text is representable"),
            message_type: message_type.to_owned(),
            patient_id: p.id.clone(),
            care_date,
            order_number,
            control_id,
        }
    }

    fn doctor(&self) -> &'static str {
        match self.style {
            Style::Jahis => "D001^医師^一郎",
            Style::Us => "1234^Welby^Marcus",
        }
    }

    /// ADT for an event: A01 A02 A03 A04 A05 A08 A11 A13 A28 A31.
    pub fn adt(&mut self, p: &Person, event: &str) -> Generated {
        let (date, time) = self.moment();
        let when = format!("{date}{time}");
        let structure = match event {
            "A02" => "ADT_A02",
            "A03" => "ADT_A03",
            "A05" | "A28" | "A31" => "ADT_A05",
            "A11" => "ADT_A09",
            _ => "ADT_A01",
        };
        let (msh, control) = self.msh(&format!("ADT^{event}"), structure, &when);
        let class = match event {
            "A04" => "O",
            "A08" if self.style == Style::Jahis => "N",
            _ => "I",
        };
        let visit = format!("V{}{}", &p.id[p.id.len() - 4..], &date[4..]);
        let discharge = if event == "A03" {
            when.clone()
        } else {
            String::new()
        };
        let doctor = self.doctor();
        let mut segs = vec![msh, format!("EVN|{event}|{when}"), self.pid(p)];
        segs.push(format!(
            "PV1|1|{class}|W3^301^2^GENHOSP|||W2^201^1^GENHOSP|{doctor}||||||||||{doctor}||{visit}^^^GENHOSP^VN|||||||||||||||||||||||||{when}|{discharge}"
        ));
        if event == "A01" {
            let al1 = match self.style {
                Style::Jahis => "AL1|1|DA|1100024^ペニシリン^99XYZ|SV|発疹".to_owned(),
                Style::Us => "AL1|1|DA|70618^Penicillin^RXNORM|MO|Hives".to_owned(),
            };
            segs.push(al1);
        }
        let care =
            matches!(event, "A01" | "A04" | "A03" | "A02" | "A11" | "A13").then(|| date.clone());
        self.finish(segs, &format!("ADT^{event}"), p, care, None, control)
    }

    /// ADT^A40: `p` survives, `old_id` is merged into it.
    pub fn merge(&mut self, p: &Person, old_id: &str) -> Generated {
        let (date, time) = self.moment();
        let when = format!("{date}{time}");
        let (msh, control) = self.msh("ADT^A40", "ADT_A39", &when);
        let mrg = match self.style {
            Style::Jahis => format!("MRG|{old_id}^^^^PI"),
            Style::Us => format!("MRG|{old_id}^^^GENHOSP^MR"),
        };
        let segs = vec![msh, format!("EVN|A40|{when}"), self.pid(p), mrg];
        self.finish(segs, "ADT^A40", p, None, None, control)
    }

    /// A lab result: JAHIS OUL^R22 (SS-MIX2 OML-11) or US ORU^R01, with a panel of numeric
    /// results, an SN, a coded and a text result.
    pub fn lab_result(&mut self, p: &Person) -> Generated {
        let (date, time) = self.moment();
        let when = format!("{date}{time}");
        let order = format!("{:015}", self.next() % 1_000_000_000_000_000);
        let mut segs = Vec::new();
        let control;
        match self.style {
            Style::Jahis => {
                let (msh, c) = self.msh("OUL^R22", "OUL_R22", &when);
                control = c;
                segs.push(msh);
                segs.push(self.pid(p));
                segs.push("PV1|1|O|01^^^^^C||||D001^医師^一郎".to_owned());
                segs.push(format!(
                    "SPM|1|{order}_01||023^血清^JC10|||||||||||||{when}|{when}"
                ));
                segs.push(format!("OBR|1|{order}|{order}|B001^生化学検査^99XYZ|||{when}|||||||||{}||||||{when}|||F", self.doctor()));
                for (i, (code, name, unit, lo, hi, typical)) in JP_PANEL.iter().enumerate() {
                    let v = typical * (0.7 + (self.next() % 600) as f64 / 1000.0);
                    let flag = if v < *lo {
                        "L"
                    } else if v > *hi {
                        "H"
                    } else {
                        "N"
                    };
                    segs.push(format!("OBX|{}|NM|{code}^{name}^JC10||{v:.1}|{unit}^{unit}^UCUM|{lo}-{hi}|{flag}|||F|||{when}", i + 1));
                }
                segs.push(format!(
                    "OBX|{}|ST|9Z999^コメント^99XYZ||溶血（＋）||||||F",
                    JP_PANEL.len() + 1
                ));
            }
            Style::Us => {
                let (msh, c) = self.msh("ORU^R01", "ORU_R01", &when);
                control = c;
                segs.push(msh);
                segs.push(self.pid(p));
                segs.push(format!("PV1|1|O|CLINIC^^^GENHOSP||||{}", self.doctor()));
                segs.push(format!("ORC|RE|P{order}|F{order}"));
                segs.push(format!("OBR|1|P{order}|F{order}|58410-2^CBC panel - Blood by Automated count^LN|||{when}-0500|||||||||{}||||||{when}-0500|||F", self.doctor()));
                for (i, (code, name, unit, lo, hi, typical)) in US_PANEL.iter().enumerate() {
                    let v = typical * (0.7 + (self.next() % 600) as f64 / 1000.0);
                    let flag = if v < *lo {
                        "L"
                    } else if v > *hi {
                        "H"
                    } else {
                        "N"
                    };
                    segs.push(format!("OBX|{}|NM|{code}^{name}^LN||{v:.1}|{unit}^{unit}^UCUM|{lo}-{hi}|{flag}|||F|||{when}-0500", i + 1));
                    if i == 0 {
                        segs.push("NTE|1|L|Repeat testing advised".to_owned());
                    }
                }
                let n = US_PANEL.len();
                segs.push(format!("OBX|{}|SN|1988-5^C reactive protein [Mass/volume] in Serum or Plasma^LN||<^0.5|mg/L^mg/L^UCUM|<5|N|||F", n + 1));
                segs.push(format!(
                    "OBX|{}|CWE|5778-6^Color of Urine^LN||LA16218-8^Yellow^LN||||||F",
                    n + 2
                ));
                segs.push(format!("OBX|{}|TX|8251-1^Service comment^LN||Specimen received\\.br\\slightly hemolyzed||||||F", n + 3));
                segs.push(format!(
                    "SPM|1|S{order}||119297000^Blood specimen^SCT|||||||||||||{when}-0500"
                ));
            }
        }
        self.finish(
            segs,
            if self.style == Style::Jahis {
                "OUL^R22"
            } else {
                "ORU^R01"
            },
            p,
            Some(date),
            Some(order),
            control,
        )
    }

    /// A prescription order: RDE^O11 (JAHIS OMP-01), one ORC/RXE/TQ1/RXR per drug.
    pub fn prescription(&mut self, p: &Person) -> Generated {
        let (date, time) = self.moment();
        let when = format!("{date}{time}");
        let order = format!("{:015}", self.next() % 1_000_000_000_000_000);
        let (msh, control) = self.msh("RDE^O11", "RDE_O11", &when);
        let mut segs = vec![msh, self.pid(p), "PV1|1|O|01^^^^^C".to_owned()];
        let n = 1 + self.pick(JP_DRUGS.len());
        let doctor = self.doctor();
        for (code, name, amount) in JP_DRUGS.iter().take(n) {
            match self.style {
                Style::Jahis => {
                    segs.push(format!("ORC|NW|{order}|||||||{when}|||{doctor}"));
                    segs.push(format!(
                        "RXE||{code}^{name}^HOT|{amount}||TAB^錠^MR9P|TAB^錠^MR9P||||21|TAB^錠^MR9P"
                    ));
                    segs.push(
                        "TQ1|||1013044400000000&内服・経口・１日３回朝昼夕食後&JAMISDP01|||7^d"
                            .to_owned(),
                    );
                    segs.push("RXR|PO^口^HL70162".to_owned());
                }
                Style::Us => {
                    segs.push(format!("ORC|NW|{order}|||||||{when}-0500|||{doctor}"));
                    segs.push(format!("RXE||{code}^Generic drug {code}^NDC|{amount}||TAB^tablet^UCUM|TAB^tablet^UCUM||||21|TAB^tablet^UCUM"));
                    segs.push("TQ1|||TID^three times a day^HL70335|||7^d".to_owned());
                    segs.push("RXR|PO^Oral^HL70162".to_owned());
                }
            }
        }
        self.finish(segs, "RDE^O11", p, Some(date), Some(order), control)
    }

    /// A dispense: RDS^O13 with its RXE and RXD.
    pub fn dispense(&mut self, p: &Person) -> Generated {
        let (date, time) = self.moment();
        let when = format!("{date}{time}");
        let order = format!("{:015}", self.next() % 1_000_000_000_000_000);
        let (msh, control) = self.msh("RDS^O13", "RDS_O13", &when);
        let (code, name, _) = JP_DRUGS[self.pick(JP_DRUGS.len())];
        let (drug, unit) = match self.style {
            Style::Jahis => (format!("{code}^{name}^HOT"), "TAB^錠^MR9P"),
            Style::Us => (format!("{code}^Generic drug {code}^NDC"), "TAB^tablet^UCUM"),
        };
        let segs = vec![
            msh,
            self.pid(p),
            format!("ORC|RE|{order}|D{order}||||||{when}"),
            format!("RXE||{drug}|1||{unit}|||||21|{unit}"),
            format!("RXD|1|{drug}|{when}|21|{unit}|||RX{order}"),
        ];
        self.finish(segs, "RDS^O13", p, Some(date), Some(order), control)
    }

    /// A lab order: OML^O33 (JAHIS OML-01) or ORM^O01 (US).
    pub fn lab_order(&mut self, p: &Person) -> Generated {
        let (date, time) = self.moment();
        let when = format!("{date}{time}");
        let order = format!("{:015}", self.next() % 1_000_000_000_000_000);
        let doctor = self.doctor();
        let (segs, control, kind) = match self.style {
            Style::Jahis => {
                let (msh, control) = self.msh("OML^O33", "OML_O33", &when);
                (
                    vec![
                        msh,
                        self.pid(p),
                        "PV1|1|O|01^^^^^C".to_owned(),
                        format!("SPM|1|{order}_01||023^血清^JC10"),
                        format!("ORC|NW|{order}|||||||{when}|||{doctor}"),
                        format!("OBR|1|{order}||B001^生化学検査^99XYZ|||{when}"),
                    ],
                    control,
                    "OML^O33",
                )
            }
            Style::Us => {
                let (msh, control) = self.msh("ORM^O01", "ORM_O01", &when);
                (
                    vec![
                        msh,
                        self.pid(p),
                        "PV1|1|O|CLINIC^^^GENHOSP".to_owned(),
                        format!("ORC|NW|P{order}|||||||{when}-0500|||{doctor}"),
                        format!(
                            "OBR|1|P{order}||24323-8^Comprehensive metabolic panel^LN|||{when}-0500||||||||||||||||||||^^^^^R"
                        ),
                    ],
                    control,
                    "ORM^O01",
                )
            }
        };
        self.finish(segs, kind, p, Some(date), Some(order), control)
    }

    /// An immunization: VXU^V04.
    pub fn immunization(&mut self, p: &Person) -> Generated {
        let (date, time) = self.moment();
        let when = format!("{date}{time}");
        let (msh, control) = self.msh("VXU^V04", "VXU_V04", &when);
        let doctor = self.doctor();
        let segs = vec![
            msh,
            self.pid(p),
            format!("ORC|RE||IZ{}", self.counter),
            format!(
                "RXA|0|1|{when}||08^Hep B, adolescent or pediatric^CVX|0.5|mL^mL^UCUM||00^New immunization record^NIP001|{doctor}|||||LOT{}|20281231|MSD^Merck and Co^MVX|||CP|A",
                self.counter
            ),
            "RXR|IM^Intramuscular^HL70162|LD^Left Deltoid^HL70163".to_owned(),
        ];
        self.finish(segs, "VXU^V04", p, Some(date), None, control)
    }

    /// Problems: PPR^ZD1 (JAHIS SS-MIX2 PPR-01) or PPR^PC1 (US).
    pub fn problems(&mut self, p: &Person) -> Generated {
        let (date, time) = self.moment();
        let when = format!("{date}{time}");
        let (event, prb) = match self.style {
            Style::Jahis => (
                "ZD1",
                format!(
                    "PRB|AD|{when}|20057010^２型糖尿病^MDCDX2|{}-1|||{date}|||||||||20200101",
                    p.id
                ),
            ),
            Style::Us => (
                "PC1",
                format!(
                    "PRB|AD|{when}|44054006^Diabetes mellitus type 2^SCT|{}-1|||{date}|||||||active||20200101",
                    p.id
                ),
            ),
        };
        let (msh, control) = self.msh(&format!("PPR^{event}"), &format!("PPR_{event}"), &when);
        let segs = vec![msh, self.pid(p), prb];
        self.finish(segs, &format!("PPR^{event}"), p, None, None, control)
    }

    /// Allergies: ADT^A60 with IAM (JAHIS SS-MIX2 ADT-61).
    pub fn allergies(&mut self, p: &Person) -> Generated {
        let (date, time) = self.moment();
        let when = format!("{date}{time}");
        let (msh, control) = self.msh("ADT^A60", "ADT_A60", &when);
        let iam = match self.style {
            Style::Jahis => format!(
                "IAM|1|FA^食物アレルギー^HL70127|J001^卵^99XYZ|MO^中等症^HL70128|じんましん|A|{}-A1||||20150401",
                p.id
            ),
            Style::Us => format!(
                "IAM|1|FA^Food allergy^HL70127|102263004^Eggs^SCT|MO^Moderate^HL70128|Hives|A|{}-A1||||20150401",
                p.id
            ),
        };
        let segs = vec![msh, format!("EVN||{when}"), self.pid(p), iam];
        self.finish(segs, "ADT^A60", p, None, None, control)
    }

    /// One message of every kind for a person (used to fill SS-MIX2 trees).
    pub fn record(&mut self, p: &Person) -> Vec<Generated> {
        vec![
            self.adt(p, "A08"),
            self.adt(p, "A01"),
            self.lab_order(p),
            self.lab_result(p),
            self.prescription(p),
            self.allergies(p),
            self.problems(p),
        ]
    }
}
