//! Normalisation of the demographic values the matcher compares: names (Latin and Japanese),
//! nicknames, phone numbers, postcodes, address lines and dates.
//!
//! Every function here is pure and total: bad input gives `None` or an empty string, never an
//! error, because a patient with an odd phone number must still be matched on everything else.

use std::collections::HashMap;
use std::sync::LazyLock;

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// Kanji written in an old, variant or "itaiji" form, mapped to the form used for comparison.
/// Registries write the same family name either way (髙橋 / 高橋), so they must compare equal.
const KANJI_VARIANTS: &[(char, char)] = &[
    ('髙', '高'),
    ('﨑', '崎'),
    ('嵜', '崎'),
    ('齋', '斎'),
    ('齊', '斎'),
    ('斉', '斎'),
    ('邊', '辺'),
    ('邉', '辺'),
    ('澤', '沢'),
    ('濱', '浜'),
    ('濵', '浜'),
    ('櫻', '桜'),
    ('廣', '広'),
    ('國', '国'),
    ('藝', '芸'),
    ('德', '徳'),
    ('惠', '恵'),
    ('學', '学'),
    ('冨', '富'),
    ('峯', '峰'),
    ('嶋', '島'),
    ('嶌', '島'),
    ('龍', '竜'),
    ('實', '実'),
    ('眞', '真'),
    ('槇', '槙'),
    ('𠮷', '吉'),
    ('禮', '礼'),
    ('壽', '寿'),
    ('榮', '栄'),
    ('驒', '騨'),
    ('舘', '館'),
    ('凜', '凛'),
    ('曾', '曽'),
    ('條', '条'),
    ('彌', '弥'),
    ('萬', '万'),
    ('與', '与'),
];

/// Nicknames and short forms mapped to the given name they stand for (English usage).
/// Shared with the duplicate generator only because both describe the same real-world habit.
pub const NICKNAMES: &[(&str, &str)] = &[
    ("bob", "robert"),
    ("bobby", "robert"),
    ("rob", "robert"),
    ("robbie", "robert"),
    ("bert", "robert"),
    ("bill", "william"),
    ("billy", "william"),
    ("will", "william"),
    ("willy", "william"),
    ("liam", "william"),
    ("jim", "james"),
    ("jimmy", "james"),
    ("jamie", "james"),
    ("mike", "michael"),
    ("mikey", "michael"),
    ("mick", "michael"),
    ("micheal", "michael"),
    ("dick", "richard"),
    ("rick", "richard"),
    ("rich", "richard"),
    ("richie", "richard"),
    ("tom", "thomas"),
    ("tommy", "thomas"),
    ("joe", "joseph"),
    ("joey", "joseph"),
    ("chuck", "charles"),
    ("charlie", "charles"),
    ("dave", "david"),
    ("davy", "david"),
    ("dan", "daniel"),
    ("danny", "daniel"),
    ("matt", "matthew"),
    ("tony", "anthony"),
    ("andy", "andrew"),
    ("drew", "andrew"),
    ("steve", "steven"),
    ("stephen", "steven"),
    ("chris", "christopher"),
    ("kit", "christopher"),
    ("ed", "edward"),
    ("eddie", "edward"),
    ("ted", "edward"),
    ("ken", "kenneth"),
    ("kenny", "kenneth"),
    ("ron", "ronald"),
    ("ronnie", "ronald"),
    ("don", "donald"),
    ("donnie", "donald"),
    ("greg", "gregory"),
    ("jeff", "jeffrey"),
    ("geoff", "jeffrey"),
    ("larry", "lawrence"),
    ("jerry", "gerald"),
    ("gerry", "gerald"),
    ("sam", "samuel"),
    ("ben", "benjamin"),
    ("benny", "benjamin"),
    ("nick", "nicholas"),
    ("nicky", "nicholas"),
    ("alex", "alexander"),
    ("al", "albert"),
    ("fred", "frederick"),
    ("freddie", "frederick"),
    ("hank", "henry"),
    ("harry", "henry"),
    ("jack", "john"),
    ("johnny", "john"),
    ("jon", "john"),
    ("pat", "patrick"),
    ("pete", "peter"),
    ("phil", "phillip"),
    ("philip", "phillip"),
    ("ray", "raymond"),
    ("walt", "walter"),
    ("wally", "walter"),
    ("frank", "francis"),
    ("frankie", "francis"),
    ("gene", "eugene"),
    ("vince", "vincent"),
    ("zach", "zachary"),
    ("josh", "joshua"),
    ("nate", "nathan"),
    ("tim", "timothy"),
    ("timmy", "timothy"),
    ("doug", "douglas"),
    ("abe", "abraham"),
    ("liz", "elizabeth"),
    ("beth", "elizabeth"),
    ("betty", "elizabeth"),
    ("betsy", "elizabeth"),
    ("eliza", "elizabeth"),
    ("lizzie", "elizabeth"),
    ("peggy", "margaret"),
    ("maggie", "margaret"),
    ("meg", "margaret"),
    ("marge", "margaret"),
    ("kate", "katherine"),
    ("katie", "katherine"),
    ("kathy", "katherine"),
    ("kathryn", "katherine"),
    ("catherine", "katherine"),
    ("kitty", "katherine"),
    ("sue", "susan"),
    ("suzy", "susan"),
    ("jenny", "jennifer"),
    ("jen", "jennifer"),
    ("patty", "patricia"),
    ("trish", "patricia"),
    ("tricia", "patricia"),
    ("debbie", "deborah"),
    ("deb", "deborah"),
    ("becky", "rebecca"),
    ("becca", "rebecca"),
    ("cindy", "cynthia"),
    ("sandy", "sandra"),
    ("mandy", "amanda"),
    ("abby", "abigail"),
    ("vicky", "victoria"),
    ("tori", "victoria"),
    ("chrissy", "christine"),
    ("tina", "christina"),
    ("pam", "pamela"),
    ("barb", "barbara"),
    ("dot", "dorothy"),
    ("dottie", "dorothy"),
    ("annie", "ann"),
    ("anne", "ann"),
    ("nancy", "ann"),
    ("molly", "mary"),
    ("polly", "mary"),
    ("mae", "mary"),
    ("sally", "sarah"),
    ("sara", "sarah"),
    ("jess", "jessica"),
    ("jessie", "jessica"),
    ("val", "valerie"),
    ("ginny", "virginia"),
    ("fran", "frances"),
    ("connie", "constance"),
    ("louie", "louis"),
    ("lou", "louise"),
    ("theo", "theodore"),
    ("teddy", "theodore"),
];

/// Maps a (normalised) given name to its canonical form: `bob` -> `robert`.
pub fn canonical_given(name: &str) -> &str {
    // Looked up for both sides of most comparisons: a table, not a scan of the list.
    static CANONICAL: LazyLock<HashMap<&'static str, &'static str>> = LazyLock::new(|| {
        let mut map = HashMap::with_capacity(NICKNAMES.len());
        for (nick, full) in NICKNAMES {
            // The first entry of a nickname wins, as a scan of the list would find it.
            map.entry(*nick).or_insert(*full);
        }
        map
    });
    CANONICAL.get(name).copied().unwrap_or(name)
}

/// Folds Unicode variation that never distinguishes two people: NFKC (full/half width, ligatures),
/// case, Latin diacritics, hiragana -> katakana, kanji variants.
/// Keeps letters only when `letters_only` (names); otherwise keeps digits and collapses
/// punctuation and space runs into one space.
fn fold(input: &str, letters_only: bool) -> String {
    let mut out = String::with_capacity(input.len());
    // NFKC first (half-width katakana become full-width, full-width ASCII becomes ASCII, ...),
    // then NFD so Latin accents become separate combining marks we can drop.
    for c in input.nfkc().flat_map(char::to_lowercase).nfd() {
        // Only Latin/Greek/Cyrillic combining diacritics are dropped: the kana voicing marks
        // (U+3099/U+309A) change the name (カ vs ガ) and must survive.
        if ('\u{3099}'..='\u{309A}').contains(&c) {
            out.push(c);
            continue;
        }
        if is_combining_mark(c) {
            continue;
        }
        let c = match c {
            // Hiragana -> katakana (same syllables, two scripts).
            '\u{3041}'..='\u{3096}' => char::from_u32(c as u32 + 0x60).unwrap_or(c),
            'ß' => {
                out.push_str("ss");
                continue;
            }
            'ø' => 'o',
            'æ' => {
                out.push_str("ae");
                continue;
            }
            'ł' => 'l',
            'đ' => 'd',
            _ => KANJI_VARIANTS
                .iter()
                .find(|(v, _)| *v == c)
                .map(|(_, std)| *std)
                .unwrap_or(c),
        };
        if c.is_alphabetic() || (!letters_only && c.is_numeric()) {
            out.push(c);
        } else if !letters_only && !out.is_empty() && !out.ends_with(' ') {
            out.push(' ');
        }
    }
    if !letters_only && out.ends_with(' ') {
        out.pop();
    }
    // Recompose kana voicing marks (カ + ゛ -> ガ) so equal names are equal strings.
    out.nfc().collect()
}

/// A name normalised for comparison: letters only, folded as described in [`fold`].
/// `"Goldner995"` -> `"goldner"`, `"José-María"` -> `"josemaria"`, `"ﾀﾅｶ"` / `"たなか"` -> `"タナカ"`,
/// `"髙橋"` -> `"高橋"`.
pub fn name(input: &str) -> String {
    fold(input, true)
}

/// Street words and the abbreviation address lines are normalised to.
const STREET_WORDS: &[(&str, &str)] = &[
    ("street", "st"),
    ("avenue", "ave"),
    ("road", "rd"),
    ("drive", "dr"),
    ("lane", "ln"),
    ("boulevard", "blvd"),
    ("court", "ct"),
    ("place", "pl"),
    ("apartment", "#"),
    ("apt", "#"),
    ("unit", "#"),
    ("suite", "#"),
    ("ste", "#"),
    ("north", "n"),
    ("south", "s"),
    ("east", "e"),
    ("west", "w"),
];

/// Free text (address lines, cities) folded, punctuation collapsed, common street words abbreviated.
pub fn text(input: &str) -> String {
    fold(input, false)
        .split(' ')
        .map(|w| {
            STREET_WORDS
                .iter()
                .find(|(long, _)| *long == w)
                .map_or(w, |(_, short)| short)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether two [`text`]-normalised address lines are the same words split or joined
/// differently ("lubuma pl" / "lubumaplace", "trem blay rd" / "tremblay rd"): equal once the
/// spaces are dropped, with the street abbreviations written out again (a joined word keeps
/// its long form). Allocates nothing.
pub fn same_words_joined(a: &str, b: &str) -> bool {
    fn long(word: &str) -> &str {
        STREET_WORDS
            .iter()
            .find(|(_, short)| *short == word && *short != "#")
            .map_or(word, |(long, _)| long)
    }
    fn short(s: &str) -> impl Iterator<Item = char> + '_ {
        s.split(' ').flat_map(str::chars)
    }
    fn written_out(s: &str) -> impl Iterator<Item = char> + '_ {
        s.split(' ').flat_map(|w| long(w).chars())
    }
    short(a).eq(short(b)) || written_out(a).eq(written_out(b))
}

/// The vowel a katakana syllable ends in (small ャュョ and ァィゥェォ included), if any.
pub(crate) fn kana_vowel(c: char) -> Option<char> {
    const ROWS: [(char, &str); 5] = [
        ('a', "アカガサザタダナハバパマヤラワァャヮ"),
        ('i', "イキギシジチヂニヒビピミリィヰ"),
        ('u', "ウクグスズツヅヌフブプムユルゥュヴ"),
        ('e', "エケゲセゼテデネヘベペメレェヱ"),
        ('o', "オコゴソゾトドノホボポモヨロヲォョ"),
    ];
    ROWS.iter()
        .find(|(_, row)| row.contains(c))
        .map(|(vowel, _)| *vowel)
}

/// A katakana reading with its long vowels written one way: the long-vowel mark ー, and ウ
/// after an o- or u-syllable, オ after an o-syllable, イ after an e- or i-syllable, all become
/// ー (ショーヘイ, ショウヘイ and しょうへい all give ショーヘイ; リュータ and リュウタ both give
/// リュータ). Input is a [`name`]-normalised reading (hiragana already folded to katakana).
pub fn long_vowels(reading: &str) -> String {
    let mut out = String::with_capacity(reading.len());
    let mut previous: Option<char> = None;
    for c in reading.chars() {
        let lengthens = matches!(
            (previous, c),
            (Some(_), 'ー') | (Some('o' | 'u'), 'ウ') | (Some('o'), 'オ') | (Some('e' | 'i'), 'イ')
        );
        if lengthens {
            out.push('ー');
            // `previous` keeps the lengthened vowel, so a doubled mark folds too.
        } else {
            out.push(c);
            previous = kana_vowel(c);
        }
    }
    out
}

/// True when the name is written in Japanese script (kana or kanji) after normalisation.
pub fn is_japanese(name: &str) -> bool {
    name.chars().any(|c| {
        matches!(c, '\u{3040}'..='\u{30FF}' | '\u{3400}'..='\u{4DBF}' | '\u{4E00}'..='\u{9FFF}' | '\u{F900}'..='\u{FAFF}' | '\u{20000}'..='\u{2FFFF}')
    })
}

/// A phone number as its national significant digits: punctuation and full-width digits folded,
/// a US `+1` / `1` trunk prefix and a Japanese `+81` prefix (-> leading `0`) removed.
/// Fewer than 6 digits is not a phone number.
pub fn phone(input: &str) -> Option<String> {
    let digits: String = input
        .nfkc()
        .filter(char::is_ascii_digit)
        .collect::<String>();
    let trimmed_plus = input.nfkc().find(|c| !c.is_whitespace()) == Some('+');
    let national = if digits.len() == 11 && digits.starts_with('1') {
        digits[1..].to_owned()
    } else if (trimmed_plus || digits.starts_with("0081") || digits.len() >= 11)
        && digits.trim_start_matches("00").starts_with("81")
        && digits.trim_start_matches("00").len() >= 11
    {
        format!("0{}", &digits.trim_start_matches("00")[2..])
    } else {
        digits
    };
    (national.len() >= 6).then_some(national)
}

/// A postcode without spaces or hyphens, upper-case; a US ZIP+4 is cut to its five digits.
/// Placeholder codes made only of zeros are treated as missing.
pub fn postcode(input: &str) -> Option<String> {
    let code: String = input
        .nfkc()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let code = if code.len() == 9 && code.bytes().all(|b| b.is_ascii_digit()) && input.contains('-')
    {
        // 12345-6789 (US ZIP+4); a Japanese 123-4567 has 7 digits and is kept whole.
        code[..5].to_owned()
    } else {
        code
    };
    (!code.is_empty() && !code.bytes().all(|b| b == b'0')).then_some(code)
}

/// A calendar date as written in FHIR (`YYYY`, `YYYY-MM`, `YYYY-MM-DD`, optionally with a time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Date {
    /// Year.
    pub year: u16,
    /// Month 1-12, 0 when unknown.
    pub month: u8,
    /// Day 1-31, 0 when unknown.
    pub day: u8,
}

impl Date {
    /// Parses a FHIR date or dateTime prefix; `None` when it is not one.
    pub fn parse(input: &str) -> Option<Date> {
        let s = input.trim();
        let mut parts = s.get(..s.len().min(10))?.split('-');
        let year: u16 = parts.next()?.parse().ok()?;
        let month: u8 = parts.next().map_or(Some(0), |m| m.parse().ok())?;
        let day: u8 = parts.next().map_or(Some(0), |d| d.parse().ok())?;
        (year > 0 && month <= 12 && day <= 31).then_some(Date { year, month, day })
    }

    /// The blocking form that is the same for a date and its day/month swap.
    pub fn unordered_key(&self) -> (u16, u8, u8) {
        (
            self.year,
            self.month.min(self.day),
            self.month.max(self.day),
        )
    }
}

impl std::fmt::Display for Date {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_words_split_or_joined_are_the_same_words() {
        let (joined, split) = (text("12 Lubumaplace"), text("12 Lubuma Place"));
        assert_eq!(split, "12 lubuma pl");
        assert!(same_words_joined(&joined, &split));
        assert!(same_words_joined(
            &text("847 Trem blay Crossroad"),
            &text("847 Tremblay Crossroad")
        ));
        assert!(!same_words_joined(
            &text("847 Tremblay Rd"),
            &text("848 Tremblay Rd")
        ));
    }

    #[test]
    fn long_vowel_spellings_compare_equal() {
        let read = |s: &str| long_vowels(&name(s));
        assert_eq!(read("ショーヘイ"), read("しょうへい"));
        assert_eq!(read("ショウヘイ"), "ショーヘー");
        assert_eq!(read("リュータ"), read("リュウタ"));
        assert_eq!(read("トオル"), read("トール"));
        assert_eq!(read("ケイコ"), read("ケーコ"));
        // Not a long vowel: ウ after an a-syllable, イ after an o-syllable, a leading mark.
        assert_eq!(read("カウ"), "カウ");
        assert_eq!(read("アオイ"), "アオイ");
        assert_eq!(read("ーア"), "ーア");
        assert_ne!(read("ユウコ"), read("ユキコ"));
    }

    #[test]
    fn names_fold_case_digits_diacritics_and_punctuation() {
        assert_eq!(name("Goldner995"), "goldner");
        assert_eq!(name("José-María"), "josemaria");
        assert_eq!(name("O'Brien"), "obrien");
        assert_eq!(name("ＳＭＩＴＨ"), "smith");
        assert_eq!(name("Straße"), "strasse");
    }

    #[test]
    fn japanese_scripts_and_kanji_variants_fold_together() {
        assert_eq!(name("ﾀﾅｶ"), "タナカ");
        assert_eq!(name("たなか"), "タナカ");
        assert_eq!(name("ｶﾞｯｺｳ"), "ガッコウ");
        assert_eq!(name("がっこう"), "ガッコウ");
        assert_eq!(name("髙橋"), name("高橋"));
        assert_eq!(name("山﨑"), name("山崎"));
        assert_eq!(name("齋藤"), name("斎藤"));
        assert_eq!(name("渡邊"), name("渡辺"));
        assert!(is_japanese(&name("ﾔﾏﾀﾞ")));
        assert!(!is_japanese("smith"));
    }

    #[test]
    fn nicknames_map_to_the_full_name() {
        assert_eq!(canonical_given("bob"), "robert");
        assert_eq!(canonical_given("robert"), "robert");
        assert_eq!(canonical_given("zelda"), "zelda");
    }

    #[test]
    fn phones_fold_to_national_digits() {
        assert_eq!(phone("555-806-9773").as_deref(), Some("5558069773"));
        assert_eq!(phone("+1 (555) 806 9773").as_deref(), Some("5558069773"));
        assert_eq!(phone("+81 3-1234-5678").as_deref(), Some("0312345678"));
        assert_eq!(
            phone("０３－１２３４－５６７８").as_deref(),
            Some("0312345678")
        );
        assert_eq!(phone("123"), None);
    }

    #[test]
    fn postcodes_fold() {
        assert_eq!(postcode("67880-1234").as_deref(), Some("67880"));
        assert_eq!(postcode("100-0001").as_deref(), Some("1000001"));
        assert_eq!(postcode("１００－０００１").as_deref(), Some("1000001"));
        assert_eq!(postcode("sw1a 1aa").as_deref(), Some("SW1A1AA"));
        assert_eq!(postcode("00000"), None);
    }

    #[test]
    fn text_abbreviates_street_words() {
        assert_eq!(text("847 Tremblay Street, Apt. 3"), "847 tremblay st # 3");
    }

    #[test]
    fn dates_parse_partial_forms() {
        assert_eq!(
            Date::parse("1943-03-17"),
            Some(Date {
                year: 1943,
                month: 3,
                day: 17
            })
        );
        assert_eq!(
            Date::parse("1943-03-17T10:00:00Z"),
            Some(Date {
                year: 1943,
                month: 3,
                day: 17
            })
        );
        assert_eq!(
            Date::parse("1943"),
            Some(Date {
                year: 1943,
                month: 0,
                day: 0
            })
        );
        assert_eq!(Date::parse("garbage"), None);
        let a = Date::parse("1980-04-07").unwrap();
        let b = Date::parse("1980-07-04").unwrap();
        assert_eq!(a.unordered_key(), b.unordered_key());
    }
}
