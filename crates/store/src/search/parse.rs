//! Search parameters -> [`SearchQuery`]: result parameters (`_count`, `_sort`, `_include`,
//! ...), `_id` / `_lastUpdated`, and every indexed parameter with its modifiers, chains
//! (`subject:Patient.name=...`, any depth) and reverse chains (`_has:Type:param:...`).
//!
//! Which parameters exist comes from the store's [`IndexExtractor`] (what is indexed); their
//! reference targets and composite components come from the R4 definitions.

use std::cell::RefCell;
use std::collections::BTreeMap;

use crate::error::StoreError;
use crate::extract::normalize;
use crate::index::{IndexExtractor, ParamType};

use super::values::{
    invalid, parse_date, parse_number, parse_quantity, parse_token, split_unescaped, unescape,
};
use super::{
    Cursor, Filter, Include, MAX_COUNT, SearchQuery, SortKey, StringMode, Summary, TotalMode,
    UriMode, ValueMatch,
};

/// Why a parameter was not turned into a filter.
enum Problem {
    /// Unknown or unsupported: an error, unless the client asked for lenient handling.
    Unsupported(String),
    /// Malformed: always an error.
    Invalid(StoreError),
}

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Self {
        Problem::Invalid(e)
    }
}

/// What the parser needs to know about one parameter.
struct ParamInfo {
    kind: ParamType,
    /// Reference target types (empty: any).
    targets: Vec<String>,
    /// Composite component types.
    components: Vec<ParamType>,
}

struct Parser<'a> {
    extractor: &'a dyn IndexExtractor,
    /// The derived parameters met so far (moved into the query at the end).
    stored_as: RefCell<BTreeMap<(String, String), Vec<String>>>,
}

pub(super) fn parse(
    resource_type: Option<&str>,
    params: &[(String, String)],
    extractor: &dyn IndexExtractor,
    lenient: bool,
) -> Result<SearchQuery, StoreError> {
    let parser = Parser {
        extractor,
        stored_as: RefCell::default(),
    };
    let mut q = SearchQuery::all(resource_type);
    for (name, value) in params {
        match parser.one(&mut q, resource_type, name, value) {
            Ok(()) => {}
            Err(Problem::Invalid(e)) => return Err(e),
            Err(Problem::Unsupported(_)) if lenient => q.ignored.push(name.clone()),
            Err(Problem::Unsupported(why)) => return Err(StoreError::Invalid(why)),
        }
    }
    q.stored_as = parser.stored_as.into_inner();
    Ok(q)
}

fn unsupported(name: &str, resource_type: Option<&str>) -> Problem {
    Problem::Unsupported(format!(
        "unknown or unsupported search parameter '{name}'{}",
        resource_type
            .map(|t| format!(" for {t}"))
            .unwrap_or_default()
    ))
}

fn is_resource_type(t: &str) -> bool {
    fhir::r4().is_concrete_resource(t)
}

impl Parser<'_> {
    fn one(
        &self,
        q: &mut SearchQuery,
        resource_type: Option<&str>,
        name: &str,
        value: &str,
    ) -> Result<(), Problem> {
        let (code, modifier) = match name.split_once(':') {
            Some((c, m)) => (c, Some(m)),
            None => (name, None),
        };
        match (code, modifier) {
            ("_format" | "_pretty", _) => {}
            ("_count", None) => {
                let n: usize = value.parse().map_err(|_| {
                    invalid(format!(
                        "_count must be a non-negative integer, not '{value}'"
                    ))
                })?;
                q.count = n.min(MAX_COUNT);
            }
            ("_cursor", None) => q.after = Some(Cursor::decode(value)?),
            ("_sort", None) => {
                q.sort = value
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|key| self.sort_key(resource_type, key))
                    .collect::<Result<_, _>>()?;
            }
            ("_total", None) => {
                q.total = match value {
                    "none" => TotalMode::None,
                    "estimate" => TotalMode::Estimate,
                    "accurate" => TotalMode::Accurate,
                    _ => {
                        return Err(invalid(format!(
                            "_total must be none, estimate or accurate, not '{value}'"
                        ))
                        .into());
                    }
                }
            }
            ("_summary", None) => {
                q.summary = match value {
                    "true" => Summary::True,
                    "false" => Summary::False,
                    "text" => Summary::Text,
                    "data" => Summary::Data,
                    "count" => Summary::Count,
                    _ => {
                        return Err(invalid(format!(
                            "_summary must be true, false, text, data or count, not '{value}'"
                        ))
                        .into());
                    }
                }
            }
            ("_elements", None) => {
                q.elements.extend(
                    value
                        .split(',')
                        .map(str::trim)
                        .filter(|e| !e.is_empty())
                        .map(str::to_owned),
                );
            }
            ("_contained", None) if value == "false" => {}
            ("_contained" | "_containedType", _) => {
                return Err(Problem::Unsupported(format!(
                    "{name}={value} is not supported: contained resources are not indexed on their own"
                )));
            }
            ("_include" | "_revinclude", None | Some("iterate" | "recurse")) => {
                let include = self.include(value, modifier.is_some(), code == "_revinclude")?;
                if code == "_include" {
                    q.include.push(include);
                } else {
                    q.revinclude.push(include);
                }
            }
            ("_type", None) if resource_type.is_none() => {
                for t in value.split(',') {
                    if !is_resource_type(t) {
                        return Err(invalid(format!("_type: '{t}' is not a resource type")).into());
                    }
                    q.types.push(t.to_owned());
                }
            }
            _ => {
                let filter = self.filter(resource_type, name, value)?;
                q.filters.push(filter);
            }
        }
        Ok(())
    }

    /// The parameter's type, targets and components, if the extractor indexes it for the type
    /// (for a system-wide search: a `_` parameter every resource has).
    fn info(&self, resource_type: Option<&str>, code: &str) -> Option<ParamInfo> {
        let lookup_type = match resource_type {
            Some(t) => t,
            None if code.starts_with('_') => "Patient",
            None => return None,
        };
        let declared = self.extractor.parameter(lookup_type, code)?;
        if !declared.stored_as.is_empty() {
            self.stored_as.borrow_mut().insert(
                (lookup_type.to_owned(), code.to_owned()),
                declared.stored_as.clone(),
            );
        }
        let defs = fhir::r4();
        let def = defs.search_param(lookup_type, code);
        let targets = def.map(|d| d.targets.clone()).unwrap_or_default();
        let components = def
            .map(|d| {
                d.components
                    .iter()
                    .filter_map(|c| {
                        defs.search_param_by_url(&c.definition)
                            .map(|p| crate::extract::param_type(p.kind))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(ParamInfo {
            kind: declared.kind,
            targets,
            components,
        })
    }

    fn sort_key(&self, resource_type: Option<&str>, key: &str) -> Result<SortKey, Problem> {
        let (descending, param) = match key.strip_prefix('-') {
            Some(p) => (true, p),
            None => (false, key),
        };
        let kind = match param {
            "_id" => ParamType::Token,
            "_lastUpdated" => ParamType::Date,
            _ => match self.info(resource_type, param) {
                Some(info) if !matches!(info.kind, ParamType::Composite | ParamType::Special) => {
                    info.kind
                }
                _ => {
                    return Err(Problem::Unsupported(format!(
                        "cannot sort by '{param}': not a sortable search parameter{}",
                        resource_type
                            .map(|t| format!(" of {t}"))
                            .unwrap_or_default()
                    )));
                }
            },
        };
        Ok(SortKey {
            param: param.to_owned(),
            kind,
            descending,
        })
    }

    fn include(&self, value: &str, iterate: bool, reverse: bool) -> Result<Include, Problem> {
        let what = if reverse { "_revinclude" } else { "_include" };
        if value == "*" {
            return Ok(Include {
                source_type: None,
                param: None,
                target_type: None,
                iterate,
            });
        }
        let parts: Vec<&str> = value.split(':').collect();
        let malformed = || {
            Problem::Invalid(invalid(format!(
                "{what}={value}: expected SourceType:parameter[:TargetType]"
            )))
        };
        if !(2..=3).contains(&parts.len()) || !is_resource_type(parts[0]) {
            return Err(malformed());
        }
        if parts.get(2).is_some_and(|t| !is_resource_type(t)) {
            return Err(malformed());
        }
        let param = (parts[1] != "*").then(|| parts[1].to_owned());
        if let Some(p) = &param
            && self
                .info(Some(parts[0]), p)
                .is_none_or(|i| i.kind != ParamType::Reference)
        {
            return Err(Problem::Invalid(invalid(format!(
                "{what}={value}: '{p}' is not a reference search parameter of {}",
                parts[0]
            ))));
        }
        Ok(Include {
            source_type: Some(parts[0].to_owned()),
            param,
            target_type: parts.get(2).map(|t| (*t).to_owned()),
            iterate,
        })
    }

    /// One filter parameter `name=value` (name possibly with modifier, chain or `_has`).
    fn filter(
        &self,
        resource_type: Option<&str>,
        name: &str,
        value: &str,
    ) -> Result<Filter, Problem> {
        if let Some(rest) = name.strip_prefix("_has:") {
            return self.has(resource_type, name, rest, value);
        }
        let (head, chain) = match name.split_once('.') {
            Some((h, c)) => (h, Some(c)),
            None => (name, None),
        };
        let (code, modifier) = match head.split_once(':') {
            Some((c, m)) => (c, Some(m)),
            None => (head, None),
        };
        if let Some(chained) = chain {
            return self.chain(resource_type, name, code, modifier, chained, value);
        }
        match (code, modifier) {
            ("_id", None | Some("not")) => {
                return Ok(Filter::Id {
                    ids: value.split(',').map(unescape).collect(),
                    negate: modifier.is_some(),
                });
            }
            ("_lastUpdated", None) => {
                return Ok(Filter::LastUpdated(
                    split_unescaped(value, ',')
                        .iter()
                        .map(|v| parse_date(code, v))
                        .collect::<Result<_, _>>()?,
                ));
            }
            _ => {}
        }
        let info = self
            .info(resource_type, code)
            .ok_or_else(|| unsupported(name, resource_type))?;
        if info.kind == ParamType::Special {
            return Err(unsupported(name, resource_type));
        }
        if modifier == Some("missing") {
            let missing = match value {
                "true" => true,
                "false" => false,
                _ => {
                    return Err(
                        invalid(format!("{name} takes true or false, not '{value}'")).into(),
                    );
                }
            };
            return Ok(Filter::Missing {
                param: code.to_owned(),
                kind: info.kind,
                missing,
            });
        }
        let bad_modifier = || {
            Problem::Unsupported(format!(
                "modifier ':{}' is not supported on {} parameter '{code}'",
                modifier.unwrap_or_default(),
                info.kind.as_str()
            ))
        };
        let alternatives = split_unescaped(value, ',');
        let mut negate = false;
        let values: Vec<ValueMatch> = match info.kind {
            ParamType::String => {
                let mode = match modifier {
                    None => StringMode::StartsWith,
                    Some("exact") => StringMode::Exact,
                    Some("contains") => StringMode::Contains,
                    Some(_) => return Err(bad_modifier()),
                };
                alternatives
                    .iter()
                    .map(|v| {
                        let v = unescape(v);
                        ValueMatch::String {
                            value: if mode == StringMode::Exact {
                                v
                            } else {
                                normalize(&v)
                            },
                            mode,
                        }
                    })
                    .collect()
            }
            ParamType::Token => match modifier {
                None => alternatives
                    .iter()
                    .map(|v| ValueMatch::Token(parse_token(v)))
                    .collect(),
                Some("not") => {
                    negate = true;
                    alternatives
                        .iter()
                        .map(|v| ValueMatch::Token(parse_token(v)))
                        .collect()
                }
                Some("text") => alternatives
                    .iter()
                    .map(|v| ValueMatch::TokenText(normalize(&unescape(v))))
                    .collect(),
                Some(_) => return Err(bad_modifier()),
            },
            ParamType::Reference => match modifier {
                Some("identifier") => alternatives
                    .iter()
                    .map(|v| ValueMatch::ReferenceIdentifier(parse_token(v)))
                    .collect(),
                Some("mdm") => alternatives
                    .iter()
                    .map(|v| linked_value(code, &unescape(v)))
                    .collect::<Result<_, _>>()?,
                Some(t) if is_resource_type(t) => alternatives
                    .iter()
                    .filter_map(|v| reference_value(&unescape(v), Some(t)))
                    .collect(),
                None => alternatives
                    .iter()
                    .filter_map(|v| reference_value(&unescape(v), None))
                    .collect(),
                Some(_) => return Err(bad_modifier()),
            },
            ParamType::Date if modifier.is_none() => alternatives
                .iter()
                .map(|v| parse_date(code, v).map(ValueMatch::Date))
                .collect::<Result<_, _>>()?,
            ParamType::Number if modifier.is_none() => alternatives
                .iter()
                .map(|v| parse_number(code, v).map(ValueMatch::Number))
                .collect::<Result<_, _>>()?,
            ParamType::Quantity if modifier.is_none() => alternatives
                .iter()
                .map(|v| parse_quantity(code, v).map(ValueMatch::Quantity))
                .collect::<Result<_, _>>()?,
            ParamType::Uri => {
                let mode = match modifier {
                    None => UriMode::Exact,
                    Some("below") => UriMode::Below,
                    Some("above") => UriMode::Above,
                    Some(_) => return Err(bad_modifier()),
                };
                alternatives
                    .iter()
                    .map(|v| ValueMatch::Uri {
                        value: unescape(v),
                        mode,
                    })
                    .collect()
            }
            ParamType::Composite if modifier.is_none() => alternatives
                .iter()
                .map(|v| composite_value(code, &info.components, v))
                .collect::<Result<_, _>>()?,
            ParamType::Date | ParamType::Number | ParamType::Quantity | ParamType::Composite => {
                return Err(bad_modifier());
            }
            ParamType::Special => return Err(unsupported(name, resource_type)),
        };
        Ok(Filter::Param {
            param: code.to_owned(),
            values,
            negate,
        })
    }

    /// `code[:Type].rest=value`: `rest` is parsed on each target type that has it.
    fn chain(
        &self,
        resource_type: Option<&str>,
        name: &str,
        code: &str,
        modifier: Option<&str>,
        rest: &str,
        value: &str,
    ) -> Result<Filter, Problem> {
        let info = self
            .info(resource_type, code)
            .filter(|i| i.kind == ParamType::Reference)
            .ok_or_else(|| {
                Problem::Unsupported(format!(
                    "cannot chain '{name}': '{code}' is not a reference search parameter{}",
                    resource_type
                        .map(|t| format!(" of {t}"))
                        .unwrap_or_default()
                ))
            })?;
        let candidates: Vec<String> = match modifier {
            Some(t) if is_resource_type(t) => vec![t.to_owned()],
            Some(m) => {
                return Err(Problem::Invalid(invalid(format!(
                    "'{name}': ':{m}' is not a resource type"
                ))));
            }
            None if info.targets.is_empty() => {
                return Err(Problem::Invalid(invalid(format!(
                    "'{name}': '{code}' can refer to any type; name one with '{code}:Type.'"
                ))));
            }
            None => info.targets.clone(),
        };
        let mut targets = Vec::new();
        for target in candidates {
            match self.filter(Some(&target), rest, value) {
                Ok(inner) => targets.push((target, vec![inner])),
                Err(Problem::Unsupported(_)) => {}
                Err(e) => return Err(e),
            }
        }
        if targets.is_empty() {
            return Err(Problem::Unsupported(format!(
                "chained parameter '{name}': no target type of '{code}' has a parameter '{rest}'"
            )));
        }
        Ok(Filter::Chain {
            param: code.to_owned(),
            targets,
        })
    }

    /// `_has:Type:param:rest=value`.
    fn has(
        &self,
        resource_type: Option<&str>,
        name: &str,
        rest: &str,
        value: &str,
    ) -> Result<Filter, Problem> {
        let malformed = || {
            Problem::Invalid(invalid(format!(
                "'{name}': expected _has:Type:reference-parameter:parameter"
            )))
        };
        let mut parts = rest.splitn(3, ':');
        let (Some(source_type), Some(param), Some(inner)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed());
        };
        if !is_resource_type(source_type) || resource_type.is_none() {
            return Err(malformed());
        }
        if self
            .info(Some(source_type), param)
            .is_none_or(|i| i.kind != ParamType::Reference)
        {
            return Err(Problem::Invalid(invalid(format!(
                "'{name}': '{param}' is not a reference search parameter of {source_type}"
            ))));
        }
        let inner = self.filter(Some(source_type), inner, value)?;
        Ok(Filter::Has {
            source_type: source_type.to_owned(),
            param: param.to_owned(),
            inner: vec![inner],
        })
    }
}

/// A reference search value: `id`, `Type/id`, or an absolute / canonical URL. `None` when the
/// written type contradicts the `:Type` modifier (`subject:Patient=Group/1` matches nothing).
fn reference_value(v: &str, type_modifier: Option<&str>) -> Option<ValueMatch> {
    if v.contains("://") || v.starts_with("urn:") {
        return Some(ValueMatch::Reference {
            target_type: None,
            id: None,
            url: Some(v.to_owned()),
        });
    }
    let (written_type, id) = match v.split_once('/') {
        Some((t, id)) if is_resource_type(t) => (Some(t), id),
        _ => (None, v),
    };
    if let (Some(m), Some(t)) = (type_modifier, written_type)
        && m != t
    {
        return None;
    }
    Some(ValueMatch::Reference {
        target_type: type_modifier.or(written_type).map(str::to_owned),
        id: Some(id.to_owned()),
        url: None,
    })
}

/// A `:mdm` value: `Patient/[id]` or a bare id (a Patient's); the modifier expands Patient
/// references only.
fn linked_value(code: &str, v: &str) -> Result<ValueMatch, Problem> {
    let id = match v.split_once('/') {
        Some(("Patient", id)) => id,
        None => v,
        Some(_) => "",
    };
    if id.is_empty() || id.contains('/') {
        return Err(invalid(format!(
            "{code}:mdm takes a Patient reference (Patient/[id]), not '{v}'"
        ))
        .into());
    }
    Ok(ValueMatch::Linked { id: id.to_owned() })
}

/// `a$b$c`: one value per component, each in its component's grammar.
fn composite_value(code: &str, components: &[ParamType], v: &str) -> Result<ValueMatch, Problem> {
    let parts = split_unescaped(v, '$');
    if parts.len() != components.len() {
        return Err(invalid(format!(
            "composite parameter '{code}' takes {} values separated by '$', got '{v}'",
            components.len()
        ))
        .into());
    }
    let mut out = Vec::with_capacity(parts.len());
    for (part, kind) in parts.iter().zip(components) {
        out.push(match kind {
            ParamType::Token => ValueMatch::Token(parse_token(part)),
            ParamType::String => ValueMatch::String {
                value: normalize(&unescape(part)),
                mode: StringMode::StartsWith,
            },
            ParamType::Date => ValueMatch::Date(parse_date(code, part)?),
            ParamType::Number => ValueMatch::Number(parse_number(code, part)?),
            ParamType::Quantity => ValueMatch::Quantity(parse_quantity(code, part)?),
            ParamType::Reference => reference_value(&unescape(part), None)
                .ok_or_else(|| invalid(format!("bad reference '{part}'")))?,
            ParamType::Uri => ValueMatch::Uri {
                value: unescape(part),
                mode: UriMode::Exact,
            },
            ParamType::Composite | ParamType::Special => {
                return Err(Problem::Unsupported(format!(
                    "composite parameter '{code}' has a component of an unsearchable type"
                )));
            }
        });
    }
    Ok(ValueMatch::Composite(out))
}
