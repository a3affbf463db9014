//! Labels of a labelled population: which person (true cluster) each record belongs to and
//! which error it carries relative to the person's original record. Written by the generator
//! (`synth`, feature `synth`), read by the evaluation (`eval`) from `id,cluster,error` files.

/// The error a generated record carries relative to its person's original record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    /// The person's first (reference) record.
    Original,
    /// One character inserted, deleted, substituted or transposed in a name or phone.
    Typo,
    /// Optical character recognition confusions (rn/m, cl/d, 0/8, ...).
    Ocr,
    /// A nickname instead of the given name (Bob for Robert).
    Nickname,
    /// Given and family names swapped, or day and month of birth swapped.
    Swap,
    /// Some values left out (phone, address, birth date, sex, identifiers).
    Missing,
    /// Family name changed by marriage (sometimes with the maiden name recorded).
    Married,
    /// New address and phone number.
    Moved,
    /// Japanese variants: kanji variants, hiragana / half-width kana, kana only, full-width digits.
    Japanese,
    /// A twin: a different person sharing surname, birth date, address and phone.
    Twin,
    /// The given name replaced by another name (not misspelt); the national number kept.
    GivenReplaced,
    /// The birth date replaced by another date (not one keying error off); the national
    /// number kept.
    BirthReplaced,
    /// Two neighbouring digits of the national number swapped and the birth date missing.
    IdentifierSwapped,
    /// The given name in other kanji of the same kana reading (an input method's conversion
    /// error: 翔太 / 将太, both ショウタ).
    KanjiConversion,
    /// A long vowel of the kana reading spelt another way (ショウタ / ショータ).
    LongVowel,
    /// A second registration at the original facility under a new record number.
    SecondMrn,
    /// Family and given names swapped or both replaced by other names, everything else
    /// (the national number included) as in the original.
    NamesReplaced,
    /// Address words split or joined ("lubuma place" / "lubumaplace").
    AddressSplit,
    /// A member of the person's household: a different person (like [`ErrorKind::Twin`])
    /// sharing address and landline, either of the other sex with another given name and a
    /// birth date days apart, or recorded without any name and with the same birth date.
    Household,
}

impl ErrorKind {
    /// Every kind, for reports.
    pub const ALL: [ErrorKind; 19] = [
        ErrorKind::Original,
        ErrorKind::Typo,
        ErrorKind::Ocr,
        ErrorKind::Nickname,
        ErrorKind::Swap,
        ErrorKind::Missing,
        ErrorKind::Married,
        ErrorKind::Moved,
        ErrorKind::Japanese,
        ErrorKind::Twin,
        ErrorKind::GivenReplaced,
        ErrorKind::BirthReplaced,
        ErrorKind::IdentifierSwapped,
        ErrorKind::KanjiConversion,
        ErrorKind::LongVowel,
        ErrorKind::SecondMrn,
        ErrorKind::NamesReplaced,
        ErrorKind::AddressSplit,
        ErrorKind::Household,
    ];

    /// Lower-case name used in label files.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Original => "original",
            ErrorKind::Typo => "typo",
            ErrorKind::Ocr => "ocr",
            ErrorKind::Nickname => "nickname",
            ErrorKind::Swap => "swap",
            ErrorKind::Missing => "missing",
            ErrorKind::Married => "married",
            ErrorKind::Moved => "moved",
            ErrorKind::Japanese => "japanese",
            ErrorKind::Twin => "twin",
            ErrorKind::GivenReplaced => "given_replaced",
            ErrorKind::BirthReplaced => "birth_replaced",
            ErrorKind::IdentifierSwapped => "identifier_swapped",
            ErrorKind::KanjiConversion => "kanji_conversion",
            ErrorKind::LongVowel => "long_vowel",
            ErrorKind::SecondMrn => "second_mrn",
            ErrorKind::NamesReplaced => "names_replaced",
            ErrorKind::AddressSplit => "address_split",
            ErrorKind::Household => "household",
        }
    }

    /// Parses [`ErrorKind::as_str`].
    pub fn parse(s: &str) -> Option<ErrorKind> {
        ErrorKind::ALL.iter().copied().find(|k| k.as_str() == s)
    }
}

/// One generated record's label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    /// `Patient.id`.
    pub id: String,
    /// The true person (cluster) id.
    pub cluster: String,
    /// The error this record carries.
    pub error: ErrorKind,
}
