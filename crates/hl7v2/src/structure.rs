//! Message structures and segment groups: which segments a message type may hold, in which
//! order, and how they nest (`ORU_R01` -> `PATIENT_RESULT` -> `ORDER_OBSERVATION` ->
//! `OBSERVATION`).
//!
//! Structures are written in a small grammar close to the HL7 abstract message syntax:
//! `[X]` optional, `{X}` repeating, `<NAME ...>` a named group. Matching is greedy with
//! backtracking per group (a PEG), which is what HL7 structures need since every group is
//! recognised by its first segment. Z-segments (site extensions, such as JAHIS `ZPR`) are
//! accepted anywhere and kept in the enclosing group. Only the structures Renkei maps are
//! defined; the matcher is written leniently (segments that senders commonly omit are
//! optional), because rejecting a real admission over a missing `PV2` helps nobody.

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::error::{Location, StructureError};
use crate::message::{Message, Segment};

const PATIENT: &str = "[<PATIENT PID [PD1] [{NTE}] [{NK1}] [<PATIENT_VISIT PV1 [PV2]>] [{<INSURANCE IN1 [IN2] [{IN3}]>}] [GT1] [{AL1}]>]";

/// Structure id -> grammar. The ADT structures of v2.3–v2.8 require EVN; it is written
/// optional here because feeds that leave it out still say the event in MSH-9 and the time in
/// MSH-7: such a message is accepted, and the mapping warns (`ERR` severity W in the `AA`).
fn grammars() -> Vec<(&'static str, String)> {
    let adt_a01 = "MSH [{SFT}] [UAC] [EVN] PID [PD1] [{ARV}] [{ROL}] [{NK1}] [PV1 [PV2]] [{ARV}] [{ROL}] [{DB1}] [{OBX}] [{AL1}] [{IAM}] [{DG1}] [DRG] [{<PROCEDURE PR1 [{ROL}]>}] [{GT1}] [{<INSURANCE IN1 [IN2] [{IN3}] [{ROL}]>}] [ACC] [UB1] [UB2] [PDA]";
    vec![
        ("ADT_A01", adt_a01.to_owned()),
        ("ADT_A05", adt_a01.to_owned()),
        ("ADT_A02", "MSH [{SFT}] [UAC] [EVN] PID [PD1] [{ROL}] PV1 [PV2] [{ROL}] [{DB1}] [{OBX}] [PDA]".to_owned()),
        ("ADT_A03", "MSH [{SFT}] [UAC] [EVN] PID [PD1] [{ROL}] [{NK1}] PV1 [PV2] [{ROL}] [{DB1}] [{AL1}] [{DG1}] [DRG] [{<PROCEDURE PR1 [{ROL}]>}] [{OBX}] [{GT1}] [{<INSURANCE IN1 [IN2] [{IN3}] [{ROL}]>}] [ACC] [PDA]".to_owned()),
        ("ADT_A09", "MSH [{SFT}] [UAC] [EVN] PID [PD1] [PV1 [PV2]] [{DB1}] [{OBX}] [{DG1}]".to_owned()),
        ("ADT_A39", "MSH [{SFT}] [UAC] [EVN] {<PATIENT PID [PD1] MRG [PV1]>}".to_owned()),
        ("ADT_A60", "MSH [{SFT}] [UAC] [EVN] PID [<VISIT PV1 [PV2]>] [{<ADVERSE_REACTION IAM [{NTE}]>}] [{AL1}]".to_owned()),
        ("ORU_R01", "MSH [{SFT}] [UAC] {<PATIENT_RESULT [<PATIENT PID [PD1] [{NTE}] [{NK1}] [<VISIT PV1 [PV2]>]>] {<ORDER_OBSERVATION [ORC] OBR [{NTE}] [{<TIMING_QTY TQ1 [{TQ2}]>}] [CTD] [{<OBSERVATION OBX [{NTE}]>}] [{FT1}] [{CTI}] [{<SPECIMEN SPM [{OBX}]>}]>}>} [DSC]".to_owned()),
        ("OUL_R22", "MSH [{SFT}] [UAC] [NTE] [<PATIENT PID [PD1] [{NTE}]>] [<VISIT PV1 [PV2]>] {<SPECIMEN SPM [{OBX}] [{<CONTAINER SAC [INV]>}] {<ORDER OBR [ORC] [{NTE}] [{<TIMING_QTY TQ1 [{TQ2}]>}] [{<RESULT OBX [TCD] [{SID}] [{NTE}]>}] [{CTI}]>}>} [DSC]".to_owned()),
        ("ORM_O01", format!("MSH [{{NTE}}] {PATIENT} {{<ORDER ORC [<ORDER_DETAIL OBR [{{NTE}}] [CTD] [{{DG1}}] [{{<OBSERVATION OBX [{{NTE}}]>}}]>] [{{FT1}}] [{{CTI}}] [BLG]>}}")),
        ("OML_O21", format!("MSH [{{SFT}}] [UAC] [{{NTE}}] {PATIENT} {{<ORDER ORC [{{<TIMING TQ1 [{{TQ2}}]>}}] [<OBSERVATION_REQUEST OBR [{{TCD}}] [{{NTE}}] [CTD] [{{DG1}}] [{{<OBSERVATION OBX [TCD] [{{NTE}}]>}}] [{{<SPECIMEN SPM [{{OBX}}] [{{SAC}}]>}}]>] [{{FT1}}] [{{CTI}}] [BLG]>}}")),
        ("OML_O33", format!("MSH [{{SFT}}] [UAC] [{{NTE}}] {PATIENT} {{<SPECIMEN SPM [{{OBX}}] [{{SAC}}] {{<ORDER ORC [{{<TIMING TQ1 [{{TQ2}}]>}}] [<OBSERVATION_REQUEST OBR [{{TCD}}] [{{NTE}}] [CTD] [{{DG1}}] [{{<OBSERVATION OBX [TCD] [{{NTE}}]>}}]>] [{{FT1}}] [{{CTI}}] [BLG]>}}>}}")),
        ("RDE_O11", format!("MSH [{{SFT}}] [UAC] [{{NTE}}] {PATIENT} {{<ORDER ORC [{{<TIMING TQ1 [{{TQ2}}]>}}] [<ORDER_DETAIL RXO [{{NTE}}] [{{RXR}}] [{{RXC}}]>] RXE [{{NTE}}] [{{<TIMING_ENCODED TQ1 [{{TQ2}}]>}}] [{{RXR}}] [{{RXC}}] [{{<OBSERVATION OBX [{{NTE}}]>}}] [{{FT1}}] [BLG] [{{CTI}}]>}}")),
        ("RDS_O13", format!("MSH [{{SFT}}] [UAC] [{{NTE}}] {PATIENT} {{<ORDER ORC [{{<TIMING TQ1 [{{TQ2}}]>}}] [<ORDER_DETAIL RXO [{{NTE}}] [{{RXR}}] [{{RXC}}]>] [<ENCODING RXE [{{NTE}}] [{{<TIMING_ENCODED TQ1 [{{TQ2}}]>}}] [{{RXR}}] [{{RXC}}]>] RXD [{{NTE}}] [{{RXR}}] [{{RXC}}] [{{<OBSERVATION OBX [{{NTE}}]>}}] [{{FT1}}]>}}")),
        ("OMP_O09", format!("MSH [{{SFT}}] [UAC] [{{NTE}}] {PATIENT} {{<ORDER ORC [{{<TIMING TQ1 [{{TQ2}}]>}}] RXO [{{NTE}}] [{{RXR}}] [{{<COMPONENT RXC [{{NTE}}]>}}] [{{<OBSERVATION OBX [{{NTE}}]>}}] [{{FT1}}] [BLG]>}}")),
        ("VXU_V04", "MSH [{SFT}] [UAC] PID [PD1] [{NK1}] [<PATIENT_VISIT PV1 [PV2]>] [{GT1}] [{<INSURANCE IN1 [IN2] [IN3]>}] [{<ORDER [ORC] [{<TIMING TQ1 [{TQ2}]>}] RXA [RXR] [{<OBSERVATION OBX [{NTE}]>}]>}]".to_owned()),
        ("PPR_PC1", "MSH [{SFT}] [UAC] [EVN] PID [<PATIENT_VISIT PV1 [PV2]>] {<PROBLEM PRB [{NTE}] [{VAR}] [{<PROBLEM_ROLE ROL [{VAR}]>}] [{<PATHWAY PTH [{VAR}]>}] [{<GOAL GOL [{NTE}] [{VAR}]>}] [{<PROBLEM_OBSERVATION OBX [{NTE}]>}] [{<ORDER ORC [<ORDER_DETAIL OBR [{NTE}] [{VAR}] [{<ORDER_OBSERVATION OBX [{NTE}] [{VAR}]>}]>]>}]>}".to_owned()),
        ("ACK", "MSH [{SFT}] [UAC] MSA [{ERR}]".to_owned()),
    ]
}

/// The structure id for a message code and trigger event when MSH-9.3 is absent.
pub fn structure_for(code: &str, event: &str) -> Option<&'static str> {
    Some(match (code, event) {
        ("ADT", "A01" | "A04" | "A08" | "A13") => "ADT_A01",
        ("ADT", "A02") => "ADT_A02",
        ("ADT", "A03") => "ADT_A03",
        ("ADT", "A05" | "A14" | "A28" | "A31") => "ADT_A05",
        ("ADT", "A11" | "A12") => "ADT_A09",
        ("ADT", "A40" | "A39" | "A41" | "A42") => "ADT_A39",
        ("ADT", "A60") => "ADT_A60",
        ("ORU", "R01") => "ORU_R01",
        ("OUL", "R22") => "OUL_R22",
        ("ORM", "O01") => "ORM_O01",
        ("OML", "O21") => "OML_O21",
        ("OML", "O33") => "OML_O33",
        ("RDE", "O11" | "O01") => "RDE_O11",
        ("RDS", "O13" | "O01") => "RDS_O13",
        ("OMP", "O09") => "OMP_O09",
        ("VXU", "V04") => "VXU_V04",
        ("PPR", "PC1" | "PC2" | "PC3" | "ZD1") => "PPR_PC1",
        ("ACK", _) => "ACK",
        _ => return None,
    })
}

/// Versions Renkei accepts (MSH-12.1).
const VERSIONS: [&str; 11] = [
    "2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8", "2.8.1", "2.8.2",
];

/// Whether Renkei accepts this version (MSH-12.1).
pub fn is_supported_version(version: &str) -> bool {
    VERSIONS.contains(&version)
}

#[derive(Debug)]
enum Node {
    Segment(String),
    Group {
        name: Option<String>,
        items: Vec<Elem>,
    },
}

#[derive(Debug)]
struct Elem {
    node: Node,
    optional: bool,
    repeating: bool,
}

fn compiled() -> &'static HashMap<&'static str, Vec<Elem>> {
    static CELL: OnceLock<HashMap<&'static str, Vec<Elem>>> = OnceLock::new();
    CELL.get_or_init(|| {
        grammars()
            .into_iter()
            .map(|(id, g)| {
                let tokens = tokenize(&g);
                let mut pos = 0;
                let items = parse_seq(&tokens, &mut pos);
                assert_eq!(pos, tokens.len(), "grammar {id} has unbalanced brackets");
                (id, items)
            })
            .collect()
    })
}

fn tokenize(g: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in g.chars() {
        match c {
            '[' | ']' | '{' | '}' | '>' => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                out.push(c.to_string());
            }
            ' ' => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn parse_seq(tokens: &[String], pos: &mut usize) -> Vec<Elem> {
    let mut items = Vec::new();
    while *pos < tokens.len() {
        let t = tokens[*pos].as_str();
        match t {
            "]" | "}" | ">" => break,
            "[" | "{" => {
                *pos += 1;
                let inner = parse_seq(tokens, pos);
                *pos += 1; // the closing bracket
                let mut elem = if inner.len() == 1 {
                    inner.into_iter().next().expect("one element")
                } else {
                    Elem {
                        node: Node::Group {
                            name: None,
                            items: inner,
                        },
                        optional: false,
                        repeating: false,
                    }
                };
                if t == "[" {
                    elem.optional = true;
                } else {
                    elem.repeating = true;
                }
                items.push(elem);
            }
            _ if t.starts_with('<') => {
                *pos += 1;
                let inner = parse_seq(tokens, pos);
                *pos += 1; // '>'
                items.push(Elem {
                    node: Node::Group {
                        name: Some(t[1..].to_owned()),
                        items: inner,
                    },
                    optional: false,
                    repeating: false,
                });
            }
            _ => {
                *pos += 1;
                items.push(Elem {
                    node: Node::Segment(t.to_owned()),
                    optional: false,
                    repeating: false,
                });
            }
        }
    }
    items
}

/// A matched group: its name and its segments (indexes into the message) and sub-groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub items: Vec<Item>,
}

/// A member of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Segment(usize),
    Group(Group),
}

/// A message matched against its structure.
#[derive(Debug, Clone)]
pub struct Structured<'m> {
    pub message: &'m Message,
    pub structure: &'static str,
    pub root: Group,
}

/// A view of one group of a [`Structured`] message.
#[derive(Debug, Clone, Copy)]
pub struct GroupView<'a> {
    message: &'a Message,
    group: &'a Group,
}

impl<'m> Structured<'m> {
    pub fn root(&self) -> GroupView<'_> {
        GroupView {
            message: self.message,
            group: &self.root,
        }
    }
}

impl<'a> GroupView<'a> {
    pub fn name(&self) -> &'a str {
        &self.group.name
    }

    /// The direct segments with this id.
    pub fn segments(&self, id: &'a str) -> impl Iterator<Item = &'a Segment> + 'a {
        let message = self.message;
        self.group.items.iter().filter_map(move |i| match i {
            Item::Segment(n) if message.segments[*n].id == id => Some(&message.segments[*n]),
            _ => None,
        })
    }

    /// The first direct segment with this id.
    pub fn segment(&self, id: &'a str) -> Option<&'a Segment> {
        self.segments(id).next()
    }

    /// The direct sub-groups with this name.
    pub fn groups(&self, name: &'a str) -> impl Iterator<Item = GroupView<'a>> + 'a {
        let message = self.message;
        self.group.items.iter().filter_map(move |i| match i {
            Item::Group(g) if g.name == name => Some(GroupView { message, group: g }),
            _ => None,
        })
    }

    /// The first direct sub-group with this name.
    pub fn group(&self, name: &'a str) -> Option<GroupView<'a>> {
        self.groups(name).next()
    }

    /// The first segment with this id in this group or any group below it.
    pub fn find(&self, id: &str) -> Option<&'a Segment> {
        for item in &self.group.items {
            match item {
                Item::Segment(n) if self.message.segments[*n].id == id => {
                    return Some(&self.message.segments[*n]);
                }
                Item::Group(g) => {
                    let view = GroupView {
                        message: self.message,
                        group: g,
                    };
                    if let Some(s) = view.find(id) {
                        return Some(s);
                    }
                }
                Item::Segment(_) => {}
            }
        }
        None
    }
}

/// Check MSH-12 and MSH-9 and match the message against its structure.
pub fn structure(message: &Message) -> Result<Structured<'_>, StructureError> {
    let Some(version) = VERSIONS.iter().copied().find(|v| *v == message.version()) else {
        return Err(StructureError::UnsupportedVersion {
            version: message.version().to_owned(),
        });
    };
    // MSH-11 (table 0103): production, debugging, training. Empty is read as production.
    let processing_id = message.msh().comp(11, 1);
    if !matches!(processing_id, "" | "P" | "D" | "T") {
        return Err(StructureError::UnsupportedProcessingId {
            processing_id: processing_id.to_owned(),
        });
    }
    let declared = message.msh().comp(9, 3);
    let by_event = structure_for(message.message_code(), message.trigger_event());
    let grammars = compiled();
    let id = match grammars.get_key_value(declared) {
        // JAHIS writes ADT^A08^ADT_A01; trust a structure we know when MSH-9.3 names one.
        Some((id, _)) if by_event.is_some() || declared == "ACK" => *id,
        _ => by_event.ok_or_else(|| StructureError::UnsupportedMessageType {
            message_type: format!("{}^{}", message.message_code(), message.trigger_event()),
            structure: declared.to_owned(),
        })?,
    };
    let grammar = &grammars[id];
    let mut m = Matcher {
        segs: &message.segments,
        furthest: 0,
        expected: Vec::new(),
        required: Vec::new(),
    };
    let mut items = Vec::new();
    let end = m.seq(grammar, 0, &mut items, true);
    match end {
        Some(end) if end == message.segments.len() => Ok(Structured {
            message,
            structure: id,
            root: Group {
                name: id.to_owned(),
                items,
            },
        }),
        other => {
            let at = other.unwrap_or(0).max(m.furthest);
            let mut expected = m.expected;
            expected.sort();
            expected.dedup();
            let mut required = m.required;
            required.sort();
            required.dedup();
            match message.segments.get(at) {
                Some(seg) => {
                    let sequence = message.segments[..=at]
                        .iter()
                        .filter(|s| s.id == seg.id)
                        .count();
                    Err(StructureError::UnexpectedSegment {
                        location: Box::new(Location::segment(&seg.id, sequence)),
                        found: seg.id.clone(),
                        structure: id.to_owned(),
                        version,
                        expected,
                        required,
                    })
                }
                None => Err(StructureError::MissingSegment {
                    structure: id.to_owned(),
                    version,
                    expected,
                    required,
                }),
            }
        }
    }
}

struct Matcher<'s> {
    segs: &'s [Segment],
    /// The furthest position where a match was attempted, what was expected there, and
    /// which of those the structure requires there (not inside an optional or an already
    /// matched repeating element).
    furthest: usize,
    expected: Vec<String>,
    required: Vec<String>,
}

impl Matcher<'_> {
    fn note(&mut self, pos: usize, id: &str, must: bool) {
        if pos > self.furthest {
            self.furthest = pos;
            self.expected.clear();
            self.required.clear();
        }
        if pos == self.furthest {
            self.expected.push(id.to_owned());
            if must {
                self.required.push(id.to_owned());
            }
        }
    }

    fn z_segments(&self, mut pos: usize, out: &mut Vec<Item>) -> usize {
        while pos < self.segs.len() && self.segs[pos].id.starts_with('Z') {
            out.push(Item::Segment(pos));
            pos += 1;
        }
        pos
    }

    /// Match `elems` from `pos`; `must`: whether the structure requires this sequence here.
    fn seq(
        &mut self,
        elems: &[Elem],
        mut pos: usize,
        out: &mut Vec<Item>,
        must: bool,
    ) -> Option<usize> {
        for elem in elems {
            pos = self.z_segments(pos, out);
            let mut count = 0;
            loop {
                let mark = out.len();
                let required = must && !elem.optional && count == 0;
                match self.node(&elem.node, pos, out, required) {
                    Some(next) if next > pos || count == 0 => {
                        count += 1;
                        let progressed = next > pos;
                        pos = next;
                        if !elem.repeating || !progressed {
                            break;
                        }
                        pos = self.z_segments(pos, out);
                    }
                    _ => {
                        out.truncate(mark);
                        break;
                    }
                }
            }
            if count == 0 && !elem.optional {
                return None;
            }
        }
        Some(self.z_segments(pos, out))
    }

    fn node(&mut self, node: &Node, pos: usize, out: &mut Vec<Item>, must: bool) -> Option<usize> {
        match node {
            Node::Segment(id) => {
                if self.segs.get(pos).is_some_and(|s| &s.id == id) {
                    out.push(Item::Segment(pos));
                    Some(pos + 1)
                } else {
                    self.note(pos, id, must);
                    None
                }
            }
            Node::Group { name, items } => {
                let mut inner = Vec::new();
                let end = self.seq(items, pos, &mut inner, must)?;
                if end == pos {
                    return None;
                }
                match name {
                    Some(name) => out.push(Item::Group(Group {
                        name: name.clone(),
                        items: inner,
                    })),
                    None => out.extend(inner),
                }
                Some(end)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::parse;

    const ORU: &str = "MSH|^~\\&|LAB|H|R|H|20260101||ORU^R01^ORU_R01|1|P|2.5.1\r\
PID|1||1^^^H^MR\rPV1|1|O\r\
OBR|1||F1|CBC\rOBX|1|NM|HGB||13\rNTE|1||note\rOBX|2|NM|WBC||6\rSPM|1|S1\r\
OBR|2||F2|LYTES\rZXT|1\rOBX|1|NM|NA||140\r";

    #[test]
    fn groups_oru() {
        let m = parse(ORU.as_bytes()).unwrap();
        let s = structure(&m).unwrap();
        let result = s.root().group("PATIENT_RESULT").unwrap();
        assert_eq!(
            result
                .group("PATIENT")
                .unwrap()
                .segment("PID")
                .unwrap()
                .get(1),
            "1"
        );
        let orders: Vec<_> = result.groups("ORDER_OBSERVATION").collect();
        assert_eq!(orders.len(), 2);
        let obs: Vec<_> = orders[0].groups("OBSERVATION").collect();
        assert_eq!(obs.len(), 2);
        assert_eq!(obs[0].segment("NTE").unwrap().get(3), "note");
        assert_eq!(
            orders[0]
                .group("SPECIMEN")
                .unwrap()
                .segment("SPM")
                .unwrap()
                .get(2),
            "S1"
        );
        assert_eq!(orders[1].segment("ZXT").unwrap().get(1), "1");
        assert_eq!(orders[1].groups("OBSERVATION").count(), 1);
    }

    #[test]
    fn sequence_errors_name_the_segment() {
        let m = parse(b"MSH|^~\\&|A|B|C|D|1||ADT^A01|1|P|2.5\rEVN|A01\rPID|1\rOBR|1\r").unwrap();
        let err = structure(&m).unwrap_err();
        assert!(
            matches!(&err, StructureError::UnexpectedSegment { found, .. } if found == "OBR"),
            "{err}"
        );
        assert_eq!(err.detail().location.unwrap().to_string(), "OBR[1]");

        let m = parse(b"MSH|^~\\&|A|B|C|D|1||ADT^A01|1|P|2.5\rEVN|A01\r").unwrap();
        assert!(matches!(
            structure(&m),
            Err(StructureError::MissingSegment { .. })
        ));

        let m = parse(b"MSH|^~\\&|A|B|C|D|1||QBP^Q11|1|P|2.5\r").unwrap();
        assert!(matches!(
            structure(&m),
            Err(StructureError::UnsupportedMessageType { .. })
        ));
        let m = parse(b"MSH|^~\\&|A|B|C|D|1||ADT^A01|1|P|2.1\r").unwrap();
        assert!(matches!(
            structure(&m),
            Err(StructureError::UnsupportedVersion { .. })
        ));
        let m = parse(b"MSH|^~\\&|A|B|C|D|1||ADT^A01|1|X|2.5\r").unwrap();
        assert_eq!(
            structure(&m).unwrap_err().detail().code,
            crate::ErrorCode::UnsupportedProcessingId
        );
    }

    /// EVN (the segment) is required by every ADT event structure from v2.3 to v2.8.2 (what
    /// became optional in v2.4 is its EVN-1, since MSH-9.2 carries the event), but feeds leave
    /// it out: the structure accepts its absence (the mapping warns). A segment that is
    /// required and missing is still refused, naming it and the version's structure.
    #[test]
    fn a_missing_evn_is_tolerated_and_other_required_segments_are_not() {
        for version in ["2.3", "2.5", "2.5.1", "2.8.2"] {
            let without = format!(
                "MSH|^~\\&|A|B|C|D|20260101||ADT^A01^ADT_A01|1|P|{version}\rPID|1||9^^^H^MR\rPV1|1|I\r"
            );
            assert!(
                structure(&parse(without.as_bytes()).unwrap()).is_ok(),
                "{version}"
            );
            let with_empty_evn_1 = without.replace("\rPID|", "\rEVN||20260101\rPID|");
            assert!(
                structure(&parse(with_empty_evn_1.as_bytes()).unwrap()).is_ok(),
                "{version}"
            );
            // ADT_A02 requires PV1 after PID: a DB1 in its place is refused, naming PV1.
            let no_pv1 = format!(
                "MSH|^~\\&|A|B|C|D|20260101||ADT^A02^ADT_A02|1|P|{version}\rEVN||20260101\rPID|1||9^^^H^MR\rDB1|1\r"
            );
            let err = structure(&parse(no_pv1.as_bytes()).unwrap()).unwrap_err();
            match &err {
                StructureError::UnexpectedSegment {
                    found, required, ..
                } => assert_eq!(
                    (found.as_str(), required.as_slice()),
                    ("DB1", &["PV1".to_owned()][..])
                ),
                other => panic!("{other}"),
            }
            assert!(
                err.to_string().contains(&format!(
                    "PV1 is required before it by the v{version} ADT_A02 structure"
                )),
                "{err}"
            );
            let detail = err.detail();
            assert_eq!(detail.code, crate::ErrorCode::SegmentSequenceError);
            assert_eq!(detail.location.unwrap().to_string(), "DB1[1]");
        }
        // Optional segments do not count as required: ADT_A01 ends at PV1 without PV2.
        let m = parse(b"MSH|^~\\&|A|B|C|D|1||ADT^A01|1|P|2.5\rEVN|A01\r").unwrap();
        assert_eq!(
            structure(&m).unwrap_err().to_string(),
            "ADT_A01: the message ends where PID is required"
        );
    }

    #[test]
    fn every_grammar_compiles() {
        assert!(compiled().len() >= 17);
    }
}
