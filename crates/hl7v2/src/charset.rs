//! Character sets named in MSH-18 and the byte <-> text conversion for each.
//!
//! The whole message is decoded to UTF-8 *before* it is split on delimiters: in ISO-2022-JP
//! (`ISO IR87`, used by SS-MIX2 and JAHIS) the two bytes of a JIS X 0208 character may be
//! `|`, `^`, `~`, `\` or `&`, so splitting the raw bytes would cut characters in half.
//! Invalid bytes are an error, never a replacement character: a clinical name silently
//! turned into `\u{FFFD}` is worse than a rejected message.

use encoding_rs::{EncoderResult, ISO_2022_JP};

use crate::error::{EncodeError, ParseError};

/// The character sets Renkei reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Charset {
    /// 7-bit ASCII (`ASCII`, `ISO IR6`, or MSH-18 empty): the HL7 default.
    #[default]
    Ascii,
    /// ISO 8859-1 (`8859/1`, `ISO IR100`).
    Latin1,
    /// UTF-8 (`UNICODE UTF-8`).
    Utf8,
    /// ISO-2022-JP: ASCII plus JIS X 0208 (`ISO IR87`) and JIS X 0201 (`ISO IR13`,
    /// `ISO IR14`) switched with escape sequences (`ESC $ B`, `ESC ( B`).
    Iso2022Jp,
}

impl Charset {
    /// The charset named by one repetition of MSH-18 (`None` for an unknown name).
    pub fn from_hl7_name(name: &str) -> Option<Charset> {
        match name.trim() {
            "" | "ASCII" | "ISO IR6" => Some(Charset::Ascii),
            "8859/1" | "ISO IR100" => Some(Charset::Latin1),
            "UNICODE UTF-8" | "UTF-8" => Some(Charset::Utf8),
            "ISO IR87" | "ISO IR13" | "ISO IR14" | "ISO 2022-1994" | "ISO-2022-JP" => {
                Some(Charset::Iso2022Jp)
            }
            _ => None,
        }
    }

    /// The MSH-18 value Renkei writes for this charset.
    pub fn hl7_name(self) -> &'static str {
        match self {
            Charset::Ascii => "ASCII",
            Charset::Latin1 => "8859/1",
            Charset::Utf8 => "UNICODE UTF-8",
            Charset::Iso2022Jp => "ISO IR87",
        }
    }

    /// A readable name, for error messages.
    pub fn label(self) -> &'static str {
        match self {
            Charset::Ascii => "ASCII",
            Charset::Latin1 => "ISO 8859-1",
            Charset::Utf8 => "UTF-8",
            Charset::Iso2022Jp => "ISO-2022-JP",
        }
    }

    /// The charset of a whole message from all repetitions of MSH-18: any ISO IR87/13/14
    /// repetition (JAHIS writes `~ISO IR87`, the first repetition being the ASCII default)
    /// selects ISO-2022-JP; otherwise the first non-empty repetition decides.
    pub fn from_msh18<'a>(
        repetitions: impl IntoIterator<Item = &'a str>,
    ) -> Result<Charset, ParseError> {
        let mut chosen = None;
        for name in repetitions {
            let charset =
                Charset::from_hl7_name(name).ok_or_else(|| ParseError::UnsupportedCharset {
                    name: name.to_owned(),
                })?;
            if charset == Charset::Iso2022Jp {
                return Ok(charset);
            }
            if chosen.is_none() && !name.trim().is_empty() {
                chosen = Some(charset);
            }
        }
        Ok(chosen.unwrap_or_default())
    }

    /// Decode bytes in this charset; invalid bytes are an error.
    pub fn decode(self, bytes: &[u8]) -> Result<String, ParseError> {
        let invalid = |offset| ParseError::InvalidBytes {
            charset: self.label(),
            offset,
        };
        match self {
            Charset::Ascii => match bytes.iter().position(|b| !b.is_ascii()) {
                Some(offset) => Err(invalid(offset)),
                None => Ok(bytes.iter().map(|&b| b as char).collect()),
            },
            Charset::Latin1 => Ok(bytes.iter().map(|&b| b as char).collect()),
            Charset::Utf8 => {
                String::from_utf8(bytes.to_vec()).map_err(|e| invalid(e.utf8_error().valid_up_to()))
            }
            Charset::Iso2022Jp => {
                match ISO_2022_JP.decode_without_bom_handling_and_without_replacement(bytes) {
                    Some(text) => Ok(text.into_owned()),
                    None => Err(invalid(first_invalid_iso2022jp(bytes))),
                }
            }
        }
    }

    /// Encode text in this charset; a character it cannot represent is an error.
    pub fn encode(self, text: &str) -> Result<Vec<u8>, EncodeError> {
        let unrepresentable = |character| EncodeError::Unrepresentable {
            character,
            charset: self.label(),
        };
        match self {
            Charset::Ascii => match text.chars().find(|c| !c.is_ascii()) {
                Some(c) => Err(unrepresentable(c)),
                None => Ok(text.as_bytes().to_vec()),
            },
            Charset::Latin1 => text
                .chars()
                .map(|c| u8::try_from(u32::from(c)).map_err(|_| unrepresentable(c)))
                .collect(),
            Charset::Utf8 => Ok(text.as_bytes().to_vec()),
            Charset::Iso2022Jp => {
                let mut encoder = ISO_2022_JP.new_encoder();
                let capacity = encoder
                    .max_buffer_length_from_utf8_without_replacement(text.len())
                    .unwrap_or(text.len() * 4 + 8);
                let mut out = vec![0; capacity];
                let (result, _read, written) =
                    encoder.encode_from_utf8_without_replacement(text, &mut out, true);
                match result {
                    EncoderResult::InputEmpty => {
                        out.truncate(written);
                        Ok(out)
                    }
                    EncoderResult::Unmappable(c) => Err(unrepresentable(c)),
                    // The buffer was sized by the encoder's own worst case.
                    EncoderResult::OutputFull => Err(unrepresentable('\u{FFFD}')),
                }
            }
        }
    }
}

/// The offset of the first byte ISO-2022-JP cannot decode (for the error message).
fn first_invalid_iso2022jp(bytes: &[u8]) -> usize {
    let mut decoder = ISO_2022_JP.new_decoder_without_bom_handling();
    let mut out = String::with_capacity(bytes.len() * 3 + 16);
    let (_result, read) = decoder.decode_to_string_without_replacement(bytes, &mut out, true);
    read.saturating_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jahis_msh18_selects_iso_2022_jp() {
        assert_eq!(
            Charset::from_msh18(["", "ISO IR87"]),
            Ok(Charset::Iso2022Jp)
        );
        assert_eq!(Charset::from_msh18(["UNICODE UTF-8"]), Ok(Charset::Utf8));
        assert_eq!(Charset::from_msh18([""]), Ok(Charset::Ascii));
        assert!(matches!(
            Charset::from_msh18(["EBCDIC"]),
            Err(ParseError::UnsupportedCharset { .. })
        ));
    }

    #[test]
    fn iso_2022_jp_round_trip_and_strictness() {
        let text = "山田^太郎~ヤマダ^タロウ";
        let bytes = Charset::Iso2022Jp.encode(text).unwrap();
        assert!(bytes.iter().all(u8::is_ascii));
        assert_eq!(Charset::Iso2022Jp.decode(&bytes).unwrap(), text);
        // ESC $ B followed by an odd byte outside the JIS X 0208 range.
        let bad = b"MSH|\x1b$B\x7f\x7f\x1b(B";
        assert!(matches!(
            Charset::Iso2022Jp.decode(bad),
            Err(ParseError::InvalidBytes { .. })
        ));
        assert!(Charset::Iso2022Jp.encode("😀").is_err());
        assert!(Charset::Ascii.decode(b"caf\xe9").is_err());
        assert_eq!(Charset::Latin1.decode(b"caf\xe9").unwrap(), "café");
    }
}
