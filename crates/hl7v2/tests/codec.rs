//! Codec tests: round trips over generated and hand-written messages, typed errors for bad
//! input, and property tests that arbitrary bytes never panic the parser or the MLLP decoder.

use hl7v2::generate::{Generator, Style};
use hl7v2::mllp::{self, FrameError};
use hl7v2::{Charset, Component, Field, Message, ParseError, Repetition, Segment, parse};
use proptest::prelude::*;

/// Round trip: bytes -> message -> bytes is the identity, and message -> bytes -> message too.
fn check_round_trip(bytes: &[u8]) {
    let m = parse(bytes).unwrap();
    let encoded = m.encode().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&encoded),
        String::from_utf8_lossy(bytes)
    );
    assert_eq!(parse(&encoded).unwrap(), m);
}

#[test]
fn generated_messages_round_trip() {
    for style in [Style::Jahis, Style::Us] {
        let mut g = Generator::new(42, style);
        for _ in 0..5 {
            let p = g.person();
            for generated in g.record(&p) {
                check_round_trip(&generated.bytes);
            }
            check_round_trip(&g.immunization(&p).bytes);
            check_round_trip(&g.dispense(&p).bytes);
        }
    }
}

#[test]
fn jahis_message_is_7_bit_iso_2022_jp() {
    let mut g = Generator::new(1, Style::Jahis);
    let p = g.person();
    let generated = g.adt(&p, "A08");
    assert!(generated.bytes.iter().all(u8::is_ascii));
    assert!(generated.bytes.windows(3).any(|w| w == b"\x1b$B"));
    let m = parse(&generated.bytes).unwrap();
    assert_eq!(m.charset, Charset::Iso2022Jp);
    let pid = m.segment("PID").unwrap();
    assert_eq!(pid.reps(5)[0].get(1), p.name.0);
    assert_eq!(pid.reps(5)[1].get(2), p.kana.unwrap().1);
}

#[test]
fn escapes_survive_a_round_trip() {
    let text = "MSH|^~\\&|A|B|C|D|20260101||ORU^R01|1|P|2.5\rOBX|1|TX|X||a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f\\.br\\g\\X0D\\h\r";
    let m = parse(text.as_bytes()).unwrap();
    assert_eq!(m.segment("OBX").unwrap().get(5), "a|b^c&d~e\\f\ng\rh");
    check_round_trip(text.as_bytes());
}

#[test]
fn utf8_and_latin1_messages() {
    let utf8 = "MSH|^~\\&|A|B|C|D|20260101||ADT^A08|1|P|2.5||||||UNICODE UTF-8\rEVN|A08\rPID|1||1^^^H^MR||Müller^Zoë\r";
    check_round_trip(utf8.as_bytes());
    let latin1 = Charset::Latin1
        .encode(&utf8.replace("UNICODE UTF-8", "8859/1"))
        .unwrap();
    let m = parse(&latin1).unwrap();
    assert_eq!(m.segment("PID").unwrap().comp(5, 2), "Zoë");
    check_round_trip(&latin1);
}

#[test]
fn bad_input_gives_typed_errors() {
    let cases: &[(&[u8], &str)] = &[
        (b"", "Empty"),
        (b"PID|1||123", "MissingMsh"),
        (b"\x0bMSH|^~\\&|", "MissingMsh"),
        (b"MSH|^~|A|B\r", "BadDelimiters"),
        (b"MSH|^~\\^|A|B\r", "BadDelimiters"),
        (b"MSHA^~\\&|A|B\r", "BadDelimiters"),
        // Regression (mutation fuzzer): an MSH line shorter than four bytes panicked.
        (b"MSH\rPID|1||123456", "BadDelimiters"),
        (b"MSH|^~\\&|A|B\rP1|x\r", "BadSegmentId"),
        (b"MSH|^~\\&|A|B\rPID|1\rMSH|^~\\&|A|B\r", "BadSegmentId"),
        (b"MSH|^~\\&|A|B|C|D|2026||ADT^A01|1|P|2.5\rPID|1||\\Q\\\r", "InvalidEscape"),
        (b"MSH|^~\\&|A|B|C|D|2026||ADT^A01|1|P|2.5||||||EBCDIC\r", "UnsupportedCharset"),
        (b"MSH|^~\\&|A|B|C|D|2026||ADT^A01|1|P|2.5||||||~ISO IR87\rPID|1||\x1b$B\x7f\x21\x1b(B\r", "InvalidBytes"),
        (b"MSH|^~\\&|A|B|C|D|2026||ADT^A01|1|P|2.5\rPID|1||caf\xe9\r", "InvalidBytes"),
    ];
    for (bytes, kind) in cases {
        let err = parse(bytes).expect_err(kind);
        let debug = format!("{err:?}");
        assert!(debug.starts_with(kind), "{kind}: got {debug}");
        // Every error can become an ERR segment.
        let detail = err.detail();
        assert!(!detail.message.is_empty());
    }
    let err = parse(b"MSH|^~\\&|A|B|C|D|2026||ADT^A01|1|P|2.5\rPID|1||12^^^\\Q\\\r").unwrap_err();
    assert_eq!(
        err.detail().location.unwrap().to_string(),
        "PID[1]-3[1].4.1"
    );
    assert!(matches!(err, ParseError::InvalidEscape { .. }));
}

#[test]
fn unknown_segments_are_a_structure_error_but_z_segments_are_kept() {
    let m =
        parse(b"MSH|^~\\&|A|B|C|D|2026||ADT^A08|1|P|2.5\rEVN|A08\rPID|1||1^^^^PI\rZPI|x\rXYZ|1\r")
            .unwrap();
    let err = hl7v2::structure::structure(&m).unwrap_err();
    assert_eq!(err.detail().location.unwrap().to_string(), "XYZ[1]");
    let m = parse(b"MSH|^~\\&|A|B|C|D|2026||ADT^A08|1|P|2.5\rEVN|A08\rPID|1||1^^^^PI\rZPI|x\r")
        .unwrap();
    hl7v2::structure::structure(&m).unwrap();
}

#[test]
fn mllp_framing_errors() {
    let big = [vec![mllp::START], vec![b'x'; 2000]].concat();
    assert!(matches!(
        mllp::parse_frame(&big, 1024),
        Err(FrameError::Oversized { .. })
    ));
    assert!(matches!(
        mllp::finish(b"\x0bMSH|half"),
        Some(FrameError::Truncated { .. })
    ));
}

fn arb_text() -> impl Strategy<Value = String> {
    // Any text, including delimiters, escapes, line breaks and non-ASCII.
    proptest::string::string_regex("[a-zA-Z0-9 |^~&\\\\\n\r#éあ山-]{0,12}").unwrap()
}

fn arb_segment() -> impl Strategy<Value = Segment> {
    let comp = prop::collection::vec(arb_text(), 1..3).prop_map(Component);
    let rep = prop::collection::vec(comp, 1..3).prop_map(Repetition);
    let field = prop::collection::vec(rep, 0..3).prop_map(Field);
    (
        prop::sample::select(vec!["PID", "OBX", "ZZ1", "NTE"]),
        prop::collection::vec(field, 0..6),
    )
        .prop_map(|(id, fields)| Segment {
            id: id.to_owned(),
            fields,
        })
}

/// Normalise a tree the way the wire does: an empty field has no repetitions, and a field
/// whose only repetition is empty reads back as empty; trailing empties are kept.
fn normalise(m: &Message) -> Message {
    let mut m = m.clone();
    for seg in m.segments.iter_mut() {
        for f in &mut seg.fields {
            for rep in &mut f.0 {
                if rep.0.is_empty() {
                    rep.0.push(Component(vec![String::new()]));
                }
                for comp in &mut rep.0 {
                    if comp.0.is_empty() {
                        comp.0.push(String::new());
                    }
                }
            }
            if f.0.len() == 1
                && f.0[0].0.len() == 1
                && f.0[0].0[0].0.len() == 1
                && f.0[0].0[0].0[0].is_empty()
            {
                f.0.clear();
            }
        }
    }
    m
}

/// Generated messages of every kind, both styles: the seeds of the mutation fuzzer.
fn corpus() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for style in [Style::Jahis, Style::Us] {
        let mut g = Generator::new(77, style);
        let p = g.person();
        out.extend(g.record(&p).into_iter().map(|m| m.bytes));
        out.push(g.immunization(&p).bytes);
        out.push(g.dispense(&p).bytes);
        out.push(g.merge(&p, "OLD1").bytes);
    }
    out
}

/// Everything a receiver does with bytes: parse, structure, map, acknowledge, encode.
fn receive(bytes: &[u8]) {
    let header = hl7v2::ack::AckHeader {
        application: "R".into(),
        facility: "H".into(),
        control_id: "1".into(),
        timestamp: "20260101".into(),
    };
    match parse(bytes) {
        Ok(m) => {
            let outcome = match hl7v2::fhir::to_transaction(&m) {
                Ok(_) => hl7v2::ack::Outcome::Accepted,
                Err(e) => hl7v2::ack::Outcome::from_errors(vec![e.detail()]),
            };
            let acks = hl7v2::ack::acknowledge(&m, &outcome, &header);
            if let Some(ack) = acks.immediate {
                let _ = ack.encode();
            }
            let _ = hl7v2::ack::fingerprint(&m);
        }
        Err(e) => {
            let _ = hl7v2::ack::ack_unparseable(bytes, &e, &header).encode();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    /// Real messages with a few bytes changed, cut short or with delimiters swapped reach
    /// the mapping and the ACK builder; none of it may panic.
    #[test]
    fn mutated_messages_never_panic(
        pick in 0usize..100,
        edits in prop::collection::vec((any::<prop::sample::Index>(), prop::sample::select(vec![
            b'|', b'^', b'~', b'\\', b'&', b'\r', b'\n', 0x1b, b'$', b'B', b'(', b'0', b'9', b'-', b'+', b'.', 0xe3, 0x80, 0xff, b' ',
        ])), 1..6),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let corpus = corpus();
        let mut bytes = corpus[pick % corpus.len()].clone();
        for (at, byte) in edits {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        receive(&bytes);
    }

    #[test]
    fn parser_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = parse(&bytes);
        let mut prefixed = b"MSH|^~\\&|".to_vec();
        prefixed.extend_from_slice(&bytes);
        if let Ok(m) = parse(&prefixed) {
            let _ = hl7v2::structure::structure(&m);
            let _ = hl7v2::fhir::to_transaction(&m);
            let _ = m.encode();
        }
    }

    #[test]
    fn mllp_decoder_never_panics_and_makes_progress(bytes in prop::collection::vec(
        prop::sample::select(vec![0x0bu8, 0x1c, 0x0d, b'M', b'S', b'H', b'|', 0xff]), 0..300)) {
        let mut buf = &bytes[..];
        loop {
            match mllp::parse_frame(buf, 64) {
                Ok(Some(frame)) => { prop_assert!(frame.consumed > 0); buf = &buf[frame.consumed..]; }
                Ok(None) => break,
                Err(e) => { prop_assert!(e.consumed() > 0); buf = &buf[e.consumed()..]; }
            }
        }
    }

    #[test]
    fn encode_then_parse_is_identity(segments in prop::collection::vec(arb_segment(), 0..5), utf8 in any::<bool>()) {
        let msh = Segment::new("MSH").with(1, "|").with(2, "^~\\&").with(3, "APP").with(9, "ADT")
            .with(12, "2.5")
            .with_field(18, if utf8 {
                Field::text("UNICODE UTF-8")
            } else {
                Field(vec![Repetition::default(), Repetition::from_components(&["ISO IR87"])])
            });
        let mut all = vec![msh];
        all.extend(segments);
        let m = Message {
            delimiters: hl7v2::Delimiters::default(),
            charset: if utf8 { Charset::Utf8 } else { Charset::Iso2022Jp },
            segments: all,
        };
        let bytes = match m.encode() {
            Ok(b) => b,
            Err(_) => return Ok(()), // é is not in JIS X 0208
        };
        let back = parse(&bytes).unwrap();
        prop_assert_eq!(normalise(&back), normalise(&m));
    }
}
