//! The search-index extractor for every FHIR R4 search parameter.
//!
//! Each parameter's FHIRPath expression (from the generated R4 definitions) is compiled once
//! per resource type; on every write it is evaluated over the resource, and each resulting
//! element becomes index rows in the shape of its parameter type:
//!
//! | type | from | row |
//! | --- | --- | --- |
//! | string | string-like primitives, `HumanName` and `Address` parts | normalised + exact text |
//! | token | `Coding`, `CodeableConcept`, `Identifier`, `ContactPoint`, `code`, `boolean`, ... | system, code, display |
//! | reference | `Reference` (and its `identifier`), `canonical`, `uri` | target type/id or URL |
//! | date | `date`, `dateTime`, `instant`, `Period`, `Timing` | `[lo, hi)` in µs |
//! | number | `integer`, `decimal` | value and its precision interval |
//! | quantity | `Quantity` and profiles, `Money`, `Range` | as written, plus the canonical UCUM row |
//! | uri | `uri`, `url`, `canonical` | the URI |
//! | composite | the components, evaluated on each item of the base expression | one group per combination |
//!
//! Naming conventions the search engine relies on: component `i` of a composite parameter `p`
//! is stored under `p$i` with one `group` per combination; a reference's `identifier` is
//! stored as a token under `p:identifier` (for the `:identifier` modifier); a quantity whose
//! unit UCUM knows is also stored in canonical base units under `p:canonical` (and `p$i:canonical`
//! for a composite's component), so that a unit-aware search compares `5 g` with `5000 mg`
//! while a search without a unit still compares the numbers as written.
//! `_id` and `_lastUpdated` are columns of the resource table, and `special` parameters are
//! not indexed here. A parameter whose expression is the union of other parameters' (R4:
//! Observation's `combo-*`) has no rows of its own: [`ParamDef::stored_as`] names the
//! parameters whose rows a search on it reads (see `derivations`). One whose values other
//! parameters partly store (`name`: `family`, `given`) keeps rows only of the rest, and names
//! itself among them (see `parts_stored_elsewhere`).

use std::collections::{BTreeSet, HashMap};

use fhir::{Definitions, SearchParamType};
use fhirpath::quantity::Quantity;
use fhirpath::{Environment, Expression, Node, ReferenceResolver, Value};
use serde_json::Value as Json;
use unicode_normalization::UnicodeNormalization;

use crate::error::StoreError;
use crate::index::{FullUrlTypes, IndexExtractor, IndexRow, IndexValue, ParamDef, ParamType};
use crate::time::parse_range;

/// The UCUM system URL.
pub const UCUM: &str = "http://unitsofmeasure.org";

/// Most component combinations one composite item may produce (a guard against blow-up).
const MAX_COMBINATIONS: usize = 64;

/// One compiled search parameter of one resource type.
#[derive(Debug)]
struct CompiledParam {
    code: String,
    kind: ParamType,
    expression: Expression,
    /// For composites: each component's type and expression (relative to an item).
    components: Vec<(ParamType, Expression)>,
    documentation: String,
    /// The parameters whose rows are this one's (see [`derivations`]); empty: its own rows.
    /// When it names the parameter itself, its own rows hold only the parts of its values
    /// that the others do not ([`CompiledParam::stored_elsewhere`]).
    stored_as: Vec<String>,
    /// What of its values other parameters store, left out of its own rows (see
    /// [`parts_stored_elsewhere`]): for a string parameter, fields of a `HumanName` or
    /// `Address` (`family` and `given` of a `name`); for a token parameter, the systems of
    /// `ContactPoint`s (`phone` and `email` of a `telecom`).
    stored_elsewhere: Vec<String>,
}

impl CompiledParam {
    /// Whether the parameter has rows of its own.
    fn has_rows(&self) -> bool {
        self.stored_as.is_empty() || self.stored_as.contains(&self.code)
    }

    fn def(&self) -> ParamDef {
        ParamDef {
            name: self.code.clone(),
            kind: self.kind,
            documentation: self.documentation.clone(),
            stored_as: self.stored_as.clone(),
        }
    }
}

/// The source text of one parameter, as [`derivations`] compares it.
struct ParamSource {
    code: String,
    kind: ParamType,
    /// The alternatives of its expression (the operands of top-level `|`).
    parts: BTreeSet<String>,
    /// For composites: each component's type and expression text.
    components: Vec<(ParamType, String)>,
}

/// Extracts index rows for every R4 search parameter of every resource type.
#[derive(Debug)]
pub struct FhirIndexExtractor {
    defs: &'static Definitions,
    by_type: HashMap<String, Vec<CompiledParam>>,
}

impl Default for FhirIndexExtractor {
    fn default() -> Self {
        Self::new()
    }
}

pub(crate) fn param_type(kind: SearchParamType) -> ParamType {
    match kind {
        SearchParamType::Number => ParamType::Number,
        SearchParamType::Date => ParamType::Date,
        SearchParamType::String => ParamType::String,
        SearchParamType::Token => ParamType::Token,
        SearchParamType::Reference => ParamType::Reference,
        SearchParamType::Composite => ParamType::Composite,
        SearchParamType::Quantity => ParamType::Quantity,
        SearchParamType::Uri => ParamType::Uri,
        SearchParamType::Special => ParamType::Special,
    }
}

impl FhirIndexExtractor {
    /// Compiles the expressions of every search parameter of every R4 resource type.
    pub fn new() -> Self {
        let defs = fhir::r4();
        let mut by_type = HashMap::new();
        for resource_type in defs
            .resource_types()
            .filter(|t| defs.is_concrete_resource(t))
        {
            let mut params = Vec::new();
            let mut sources = Vec::new();
            for param in defs.search_params(resource_type) {
                let kind = param_type(param.kind);
                if matches!(param.code.as_str(), "_id" | "_lastUpdated")
                    || kind == ParamType::Special
                {
                    continue;
                }
                let Some(source) = param.expression_for(resource_type) else {
                    continue;
                };
                // The definitions are tested to parse; one that did not would only lose its index.
                let Ok(expression) = Expression::parse(source) else {
                    tracing::warn!(param = %param.code, resource_type, "search parameter expression does not parse");
                    continue;
                };
                let components = param
                    .components
                    .iter()
                    .filter_map(|c| {
                        let kind = defs
                            .search_param_by_url(&c.definition)
                            .map(|p| param_type(p.kind))?;
                        let expression = Expression::parse(&c.expression).ok()?;
                        Some((kind, expression, c.expression.clone()))
                    })
                    .collect::<Vec<_>>();
                if kind == ParamType::Composite && components.len() != param.components.len() {
                    continue;
                }
                sources.push(ParamSource {
                    code: param.code.clone(),
                    kind,
                    parts: alternatives(source),
                    components: components.iter().map(|(k, _, t)| (*k, t.clone())).collect(),
                });
                params.push(CompiledParam {
                    code: param.code.clone(),
                    kind,
                    documentation: format!("{} ({}): {source}", param.code, param.kind),
                    expression,
                    components: components.into_iter().map(|(k, e, _)| (k, e)).collect(),
                    stored_as: Vec::new(),
                    stored_elsewhere: Vec::new(),
                });
            }
            let owners = parts_stored_elsewhere(&sources);
            for ((param, stored_as), owners) in
                params.iter_mut().zip(derivations(&sources)).zip(owners)
            {
                if stored_as.is_empty() && !owners.is_empty() {
                    param.stored_elsewhere = owners.iter().map(|(part, _)| part.clone()).collect();
                    param.stored_as = std::iter::once(param.code.clone())
                        .chain(owners.into_iter().map(|(_, code)| code))
                        .collect();
                } else {
                    param.stored_as = stored_as;
                }
            }
            // A parameter stored as one whose rows are partly elsewhere (`phonetic` as `name`)
            // reads where that one's are.
            let partial: HashMap<String, Vec<String>> = params
                .iter()
                .filter(|p| !p.stored_elsewhere.is_empty())
                .map(|p| (p.code.clone(), p.stored_as.clone()))
                .collect();
            for param in &mut params {
                if param.stored_elsewhere.is_empty()
                    && param.stored_as.iter().any(|c| partial.contains_key(c))
                {
                    let mut expanded: Vec<String> = param
                        .stored_as
                        .iter()
                        .flat_map(|c| partial.get(c).cloned().unwrap_or_else(|| vec![c.clone()]))
                        .collect();
                    expanded.sort();
                    expanded.dedup();
                    param.stored_as = expanded;
                }
            }
            by_type.insert(resource_type.to_string(), params);
        }
        FhirIndexExtractor { defs, by_type }
    }

    /// The composite rows of one parameter: components evaluated on each item of its expression.
    fn composite_rows<'a>(
        &self,
        env: &Environment<'a>,
        resource: &'a Json,
        param: &'a CompiledParam,
        items: Vec<Value<'a>>,
        group: &mut u32,
        rows: &mut Vec<IndexRow>,
    ) -> Result<(), fhirpath::EvalError> {
        let root = Value::Node(Node::new(resource, None));
        for item in items {
            // Each component's values on this item.
            let mut per_component: Vec<Vec<IndexValue>> =
                Vec::with_capacity(param.components.len());
            for (kind, expression) in &param.components {
                let found = expression.evaluate_on(env, root.clone(), vec![item.clone()])?;
                let mut values = Vec::new();
                for value in &found {
                    index_values(*kind, value, &mut values);
                }
                if values.is_empty() {
                    break;
                }
                per_component.push(values);
            }
            if per_component.len() != param.components.len() {
                continue;
            }
            for combination in combinations(&per_component)
                .into_iter()
                .take(MAX_COMBINATIONS)
            {
                *group += 1;
                for (i, value) in combination.into_iter().enumerate() {
                    if let Some(canonical) = canonical_quantity(value) {
                        rows.push(IndexRow {
                            param: format!("{}${i}:canonical", param.code),
                            group: Some(*group),
                            value: canonical,
                        });
                    }
                    rows.push(IndexRow {
                        param: format!("{}${i}", param.code),
                        group: Some(*group),
                        value: value.clone(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Every way of picking one value per component.
fn combinations(per_component: &[Vec<IndexValue>]) -> Vec<Vec<&IndexValue>> {
    let mut out: Vec<Vec<&IndexValue>> = vec![Vec::new()];
    for values in per_component {
        let mut next = Vec::with_capacity(out.len() * values.len());
        for prefix in &out {
            for value in values {
                let mut row = prefix.clone();
                row.push(value);
                next.push(row);
            }
            if next.len() >= MAX_COMBINATIONS {
                break;
            }
        }
        out = next;
    }
    out
}

/// The operands of the top-level `|` of a FHIRPath expression, as written (trimmed); `|`
/// inside parentheses, brackets or string literals does not split.
fn alternatives(expression: &str) -> BTreeSet<String> {
    let mut parts = BTreeSet::new();
    let (mut depth, mut quoted, mut start) = (0i32, false, 0);
    let mut chars = expression.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' if quoted => {
                chars.next();
            }
            '\'' => quoted = !quoted,
            '(' | '[' | '{' if !quoted => depth += 1,
            ')' | ']' | '}' if !quoted => depth -= 1,
            '|' if !quoted && depth == 0 => {
                parts.insert(expression[start..i].trim().to_owned());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.insert(expression[start..].trim().to_owned());
    parts.retain(|p| !p.is_empty());
    parts
}

/// The fields of a `HumanName` a string parameter on it indexes.
const HUMAN_NAME_STRINGS: &[&str] = &["text", "family", "given", "prefix", "suffix"];

/// The fields of an `Address` a string parameter on it indexes.
const ADDRESS_STRINGS: &[&str] = &[
    "text",
    "line",
    "city",
    "district",
    "state",
    "postalCode",
    "country",
];

/// For each parameter, the parts of its values that other parameters of the type store, with
/// the parameter storing each:
/// - for a string parameter with one expression `E` (`Patient.name`), the fields `f` of a
///   `HumanName` or `Address` for which a string parameter's one expression is `E.f`
///   (`family` is `Patient.name.family`, `given` `Patient.name.given`; `address-city` is
///   `Patient.address.city`, and so on);
/// - for a token parameter with one expression `E` (`Patient.telecom`), the systems `s` for
///   which a token parameter's one expression is `E.where(system='s')` (`phone`, `email`).
///
/// A `name` stored all its parts, `address` all of its and `telecom` every phone number and
/// e-mail address, so each of those values of a Patient was stored twice: about a quarter of
/// a Patient's index rows. Instead, the parameter's own rows leave those parts out, and a
/// search on it reads its own rows and those of the others.
fn parts_stored_elsewhere(params: &[ParamSource]) -> Vec<Vec<(String, String)>> {
    fn only_part(p: &ParamSource, kind: ParamType) -> Option<&str> {
        match p.parts.len() {
            1 if p.kind == kind => p.parts.first().map(String::as_str),
            _ => None,
        }
    }
    let stored_at = |p: &ParamSource, path: &str| -> Option<String> {
        params
            .iter()
            .filter(|q| q.code != p.code && only_part(q, p.kind) == Some(path))
            .map(|q| q.code.clone())
            .min()
    };
    params
        .iter()
        .map(|p| {
            let mut owners = Vec::new();
            if let Some(base) = only_part(p, ParamType::String) {
                for field in HUMAN_NAME_STRINGS.iter().chain(ADDRESS_STRINGS) {
                    if let Some(q) = stored_at(p, &format!("{base}.{field}"))
                        && !owners.iter().any(|(f, _)| f == field)
                    {
                        owners.push((field.to_string(), q));
                    }
                }
            }
            if let Some(base) = only_part(p, ParamType::Token) {
                let filter = format!("{base}.where(system='");
                for q in params.iter().filter(|q| q.code != p.code) {
                    if let Some(system) = only_part(q, ParamType::Token)
                        .and_then(|part| part.strip_prefix(filter.as_str()))
                        .and_then(|rest| rest.strip_suffix("')"))
                        .filter(|s| s.chars().all(|c| c.is_ascii_alphanumeric()))
                        && !owners.iter().any(|(s, _)| s == system)
                    {
                        owners.push((system.to_owned(), q.code.clone()));
                    }
                }
            }
            owners
        })
        .collect()
}

/// For each parameter, the parameters whose rows are exactly its own rows, or nothing.
///
/// A parameter is derived when its expression is the union (`|`) of the whole expressions of
/// other parameters of the same type (for composites: with the same components), none of which
/// is derived itself, or when its expression is exactly that of another string, token or date
/// parameter of the type whose code sorts first (R4's `phonetic` of Patient, Practitioner,
/// RelatedPerson and Person is `name`'s expression, so a person's name parts were stored
/// twice, about one index row in six of a Patient; CapabilityStatement's `version` is
/// `fhirversion`). R4 has union parameters on Observation only: `combo-code` is
/// `Observation.code | Observation.component.code`, the expressions of `code` and
/// `component-code`; `combo-code-value-quantity` is `code-value-quantity` (on `Observation`)
/// together with `component-code-value-quantity` (on `Observation.component`). Their rows
/// would repeat those of their parts, about one index row in seven of a lab result; instead
/// they are not stored, and a search on one reads the rows of its parts. Composite rows stay
/// correlated: group numbers are unique within a resource, across parameters.
fn derivations(params: &[ParamSource]) -> Vec<Vec<String>> {
    let covering = |p: &ParamSource, allowed: &dyn Fn(usize) -> bool| -> Vec<usize> {
        if p.parts.len() < 2 || matches!(p.kind, ParamType::Reference | ParamType::Special) {
            return Vec::new();
        }
        let parts: Vec<usize> = params
            .iter()
            .enumerate()
            .filter(|&(j, q)| {
                allowed(j)
                    && q.code != p.code
                    && q.kind == p.kind
                    && q.components == p.components
                    && q.parts.len() < p.parts.len()
                    && q.parts.is_subset(&p.parts)
            })
            .map(|(j, _)| j)
            .collect();
        let covered: BTreeSet<&String> = parts.iter().flat_map(|&j| &params[j].parts).collect();
        if covered.len() == p.parts.len() {
            parts
        } else {
            Vec::new()
        }
    };
    let first: Vec<bool> = params
        .iter()
        .map(|p| !covering(p, &|_| true).is_empty())
        .collect();
    // Of parameters with one expression (kind and components), none a union of others, the
    // one whose code sorts first keeps the rows.
    let twin = |i: usize| -> Option<usize> {
        let p = &params[i];
        if first[i]
            || !matches!(
                p.kind,
                ParamType::String | ParamType::Token | ParamType::Date
            )
        {
            return None;
        }
        (0..params.len())
            .filter(|&j| {
                let q = &params[j];
                !first[j]
                    && q.code < p.code
                    && q.kind == p.kind
                    && q.components == p.components
                    && q.parts == p.parts
            })
            .min_by(|&a, &b| params[a].code.cmp(&params[b].code))
    };
    params
        .iter()
        .enumerate()
        .map(|(i, p)| match twin(i) {
            Some(j) => vec![params[j].code.clone()],
            None => covering(p, &|j| !first[j])
                .into_iter()
                .map(|j| params[j].code.clone())
                .collect(),
        })
        .collect()
}

impl FhirIndexExtractor {
    /// The rows of `resource`; `resolver` lets `resolve()` see the types of other entries of
    /// its transaction.
    fn extract_with(
        &self,
        resource_type: &str,
        resource: &Json,
        resolver: Option<&dyn ReferenceResolver>,
    ) -> Result<Vec<IndexRow>, StoreError> {
        let Some(params) = self.by_type.get(resource_type) else {
            return Ok(Vec::new());
        };
        let mut env = Environment::new(self.defs).with_filtering_as();
        if let Some(resolver) = resolver {
            env = env.with_resolver(resolver);
        }
        let mut rows = Vec::with_capacity(params.len() * 2);
        let mut group = 0u32;
        let mut values = Vec::new();
        for param in params.iter().filter(|p| p.has_rows()) {
            let found = param.expression.evaluate(&env, resource).map_err(|e| {
                StoreError::Invalid(format!(
                    "search parameter {} cannot be evaluated: {e}",
                    param.code
                ))
            })?;
            if found.is_empty() {
                continue;
            }
            if param.kind == ParamType::Composite {
                self.composite_rows(&env, resource, param, found, &mut group, &mut rows)
                    .map_err(|e| {
                        StoreError::Invalid(format!(
                            "search parameter {} cannot be evaluated: {e}",
                            param.code
                        ))
                    })?;
                continue;
            }
            for value in &found {
                values.clear();
                index_values_except(param.kind, value, &param.stored_elsewhere, &mut values);
                for value in values.drain(..) {
                    if let Some(canonical) = canonical_quantity(&value) {
                        rows.push(IndexRow {
                            param: format!("{}:canonical", param.code),
                            group: None,
                            value: canonical,
                        });
                    }
                    rows.push(IndexRow {
                        param: param.code.clone(),
                        group: None,
                        value,
                    });
                }
                if param.kind == ParamType::Reference
                    && let Some(identifier) = node_json(value).and_then(|r| r.get("identifier"))
                {
                    let mut tokens = Vec::new();
                    token_values(identifier, Some("Identifier"), &mut tokens);
                    rows.extend(tokens.into_iter().map(|value| IndexRow {
                        param: format!("{}:identifier", param.code),
                        group: None,
                        value,
                    }));
                }
            }
        }
        crate::index::dedup(&mut rows);
        Ok(rows)
    }
}

/// `resolve()` of a transaction's `fullUrl`s: a stub of the entry's type.
struct FullUrlResolver<'a>(&'a FullUrlTypes);

impl ReferenceResolver for FullUrlResolver<'_> {
    fn resolve(&self, reference: &str) -> Option<&Json> {
        self.0.stub(reference)
    }
}

impl IndexExtractor for FhirIndexExtractor {
    fn extract(&self, resource_type: &str, resource: &Json) -> Result<Vec<IndexRow>, StoreError> {
        self.extract_with(resource_type, resource, None)
    }

    fn extract_in_transaction(
        &self,
        resource_type: &str,
        resource: &Json,
        full_urls: &FullUrlTypes,
    ) -> Result<Vec<IndexRow>, StoreError> {
        let resolver = FullUrlResolver(full_urls);
        let resolver: Option<&dyn ReferenceResolver> =
            (!full_urls.is_empty()).then_some(&resolver as &dyn ReferenceResolver);
        self.extract_with(resource_type, resource, resolver)
    }

    fn parameters(&self, resource_type: &str) -> Vec<ParamDef> {
        self.by_type
            .get(resource_type)
            .map(|params| params.iter().map(CompiledParam::def).collect())
            .unwrap_or_default()
    }

    fn parameter(&self, resource_type: &str, code: &str) -> Option<ParamDef> {
        self.by_type
            .get(resource_type)?
            .iter()
            .find(|p| p.code == code)
            .map(CompiledParam::def)
    }
}

fn node_json<'a>(value: &Value<'a>) -> Option<&'a Json> {
    match value {
        Value::Node(node) => node.json,
        _ => None,
    }
}

fn node_type<'a>(value: &Value<'a>) -> Option<&'a str> {
    match value {
        Value::Node(node) => node.type_name,
        _ => None,
    }
}

/// Lower-case, accents removed, width-folded (NFKC), whitespace collapsed: how string search
/// compares. Japanese kana keep their voicing marks (only Latin combining accents are removed).
pub fn normalize(text: &str) -> String {
    let folded: String = text
        .nfkc()
        .collect::<String>()
        .nfd()
        .filter(|c| !('\u{300}'..='\u{36f}').contains(c))
        .collect::<String>()
        .nfc()
        .flat_map(char::to_lowercase)
        .collect();
    folded.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The index values of one FHIRPath result item for a parameter of type `kind`.
pub fn index_values(kind: ParamType, value: &Value<'_>, out: &mut Vec<IndexValue>) {
    index_values_except(kind, value, &[], out)
}

/// [`index_values`] without what other parameters store (`CompiledParam::stored_elsewhere`):
/// the `skipped` fields of a `HumanName` or `Address` (string), or nothing of a
/// `ContactPoint` of a `skipped` system (token).
fn index_values_except(
    kind: ParamType,
    value: &Value<'_>,
    skipped: &[String],
    out: &mut Vec<IndexValue>,
) {
    let type_name = node_type(value);
    let json = node_json(value);
    match kind {
        ParamType::String => match (json, value) {
            (Some(Json::Object(_)), _) => {
                let parts: &[&str] = match type_name {
                    Some("HumanName") => HUMAN_NAME_STRINGS,
                    Some("Address") => ADDRESS_STRINGS,
                    _ => &[],
                };
                for part in parts.iter().filter(|p| !skipped.iter().any(|s| s == *p)) {
                    for text in strings_at(json, part) {
                        push_string(text, out);
                    }
                }
            }
            _ => {
                if let Some(text) = value.to_string_value() {
                    push_string(&text, out);
                }
            }
        },
        ParamType::Token => match json {
            Some(json)
                if type_name == Some("ContactPoint")
                    && json
                        .get("system")
                        .and_then(Json::as_str)
                        .is_some_and(|system| skipped.iter().any(|s| s == system)) => {}
            Some(json) => token_values(json, type_name, out),
            None => {
                if let Some(code) = value.to_string_value() {
                    out.push(IndexValue::Token {
                        system: String::new(),
                        code: code.into_owned(),
                        display: None,
                    });
                }
            }
        },
        ParamType::Reference => match json {
            Some(Json::Object(map)) => {
                if let Some(reference) = map.get("reference").and_then(Json::as_str) {
                    push_reference(reference, out);
                }
            }
            Some(Json::String(reference)) => push_reference(reference, out),
            _ => {}
        },
        ParamType::Date => match json {
            Some(Json::String(text)) => {
                if let Some((start, end)) = parse_range(text) {
                    out.push(IndexValue::Date { start, end });
                }
            }
            Some(Json::Object(map)) => match type_name {
                Some("Period") => {
                    let start = map
                        .get("start")
                        .and_then(Json::as_str)
                        .and_then(parse_range)
                        .map(|r| r.0);
                    let end = map
                        .get("end")
                        .and_then(Json::as_str)
                        .and_then(parse_range)
                        .map(|r| r.1);
                    if start.is_some() || end.is_some() {
                        out.push(IndexValue::Date {
                            start: start.unwrap_or(i64::MIN),
                            end: end.unwrap_or(i64::MAX),
                        });
                    }
                }
                Some("Timing") => {
                    let events: Vec<(i64, i64)> =
                        strings_at(json, "event").filter_map(parse_range).collect();
                    let bounds = map
                        .get("repeat")
                        .and_then(|r| r.get("boundsPeriod"))
                        .map(|p| {
                            (
                                p.get("start")
                                    .and_then(Json::as_str)
                                    .and_then(parse_range)
                                    .map_or(i64::MIN, |r| r.0),
                                p.get("end")
                                    .and_then(Json::as_str)
                                    .and_then(parse_range)
                                    .map_or(i64::MAX, |r| r.1),
                            )
                        });
                    let lo = events.iter().map(|e| e.0).chain(bounds.map(|b| b.0)).min();
                    let hi = events.iter().map(|e| e.1).chain(bounds.map(|b| b.1)).max();
                    if let (Some(start), Some(end)) = (lo, hi) {
                        out.push(IndexValue::Date { start, end });
                    }
                }
                _ => {}
            },
            _ => {
                if let Some(text) = value.to_string_value()
                    && let Some((start, end)) = parse_range(&text)
                {
                    out.push(IndexValue::Date { start, end });
                }
            }
        },
        ParamType::Number => {
            if let Some(text) = match json {
                Some(Json::Number(n)) => Some(n.to_string()),
                _ => value.to_system().and_then(|v| match v {
                    Value::Integer(i) => Some(i.to_string()),
                    Value::Decimal(d) => Some(d.to_string()),
                    _ => None,
                }),
            } && let Some((value, low, high)) = decimal_interval(&text)
            {
                out.push(IndexValue::Number { value, low, high });
            }
        }
        ParamType::Quantity => quantity_values(value, type_name, json, out),
        ParamType::Uri => {
            if let Some(uri) = value.to_string_value() {
                out.push(IndexValue::Uri {
                    uri: uri.into_owned(),
                });
            }
        }
        ParamType::Composite | ParamType::Special => {}
    }
}

fn push_string(text: &str, out: &mut Vec<IndexValue>) {
    if text.trim().is_empty() {
        return;
    }
    out.push(IndexValue::String {
        normalized: normalize(text),
        exact: text.to_string(),
    });
}

/// The strings of a property that may be single or repeated.
fn strings_at<'a>(json: Option<&'a Json>, key: &str) -> impl Iterator<Item = &'a str> {
    let value = json.and_then(|j| j.get(key));
    let items: Box<dyn Iterator<Item = &'a Json>> = match value {
        Some(Json::Array(items)) => Box::new(items.iter()),
        Some(other) => Box::new(std::iter::once(other)),
        None => Box::new(std::iter::empty()),
    };
    items.filter_map(Json::as_str)
}

fn str_field(json: &Json, key: &str) -> String {
    json.get(key)
        .and_then(Json::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Token rows of a coded element.
fn token_values(json: &Json, type_name: Option<&str>, out: &mut Vec<IndexValue>) {
    match json {
        Json::Array(items) => {
            for item in items {
                token_values(item, type_name, out);
            }
        }
        Json::String(code) => out.push(IndexValue::Token {
            system: String::new(),
            code: code.clone(),
            display: None,
        }),
        Json::Bool(b) => out.push(IndexValue::Token {
            system: String::new(),
            code: b.to_string(),
            display: None,
        }),
        Json::Number(n) => out.push(IndexValue::Token {
            system: String::new(),
            code: n.to_string(),
            display: None,
        }),
        Json::Object(map) => match type_name {
            Some("CodeableConcept") => {
                let text = map.get("text").and_then(Json::as_str).map(str::to_string);
                let codings = map.get("coding").and_then(Json::as_array);
                for coding in codings.into_iter().flatten() {
                    out.push(IndexValue::Token {
                        system: str_field(coding, "system"),
                        code: str_field(coding, "code"),
                        display: coding
                            .get("display")
                            .and_then(Json::as_str)
                            .map(str::to_string)
                            .or(text.clone()),
                    });
                }
                if codings.is_none_or(|c| c.is_empty())
                    && let Some(text) = text
                {
                    out.push(IndexValue::Token {
                        system: String::new(),
                        code: String::new(),
                        display: Some(text),
                    });
                }
            }
            Some("Identifier") => {
                if map.contains_key("value") {
                    out.push(IndexValue::Token {
                        system: str_field(json, "system"),
                        code: str_field(json, "value"),
                        display: json
                            .pointer("/type/text")
                            .and_then(Json::as_str)
                            .map(str::to_string),
                    });
                }
            }
            Some("ContactPoint") => {
                if map.contains_key("value") {
                    out.push(IndexValue::Token {
                        system: str_field(json, "system"),
                        code: str_field(json, "value"),
                        display: None,
                    });
                }
            }
            // Coding, and any other object that looks like one.
            _ => {
                if map.contains_key("code") || map.contains_key("system") {
                    out.push(IndexValue::Token {
                        system: str_field(json, "system"),
                        code: str_field(json, "code"),
                        display: json
                            .get("display")
                            .and_then(Json::as_str)
                            .map(str::to_string),
                    });
                }
            }
        },
        Json::Null => {}
    }
}

/// A reference row (see [`IndexValue::reference`]).
fn push_reference(reference: &str, out: &mut Vec<IndexValue>) {
    out.extend(IndexValue::reference(reference));
}

fn quantity_values(
    value: &Value<'_>,
    type_name: Option<&str>,
    json: Option<&Json>,
    out: &mut Vec<IndexValue>,
) {
    let Some(json) = json.filter(|j| j.is_object()) else {
        if let Some(Value::Quantity(q)) = value.to_system() {
            push_quantity(UCUM, &q.unit, &q.unit, &q.value.to_string(), out);
        }
        return;
    };
    match type_name {
        Some("Range") => {
            for bound in ["low", "high"] {
                if let Some(q) = json.get(bound) {
                    quantity_values(value, Some("Quantity"), Some(q), out);
                }
            }
        }
        Some("Money") => {
            if let Some(number) = json.get("value") {
                let currency = str_field(json, "currency");
                push_quantity(
                    "urn:iso:std:iso:4217",
                    &currency,
                    &currency,
                    &number.to_string(),
                    out,
                );
            }
        }
        _ => {
            let Some(number) = json.get("value") else {
                return;
            };
            let system = str_field(json, "system");
            let code = str_field(json, "code");
            let unit = str_field(json, "unit");
            push_quantity(&system, &code, &unit, &number.to_string(), out);
        }
    }
}

fn push_quantity(system: &str, code: &str, unit: &str, number: &str, out: &mut Vec<IndexValue>) {
    let Some((value, low, high)) = decimal_interval(number) else {
        return;
    };
    out.push(IndexValue::Quantity {
        system: system.to_string(),
        code: code.to_string(),
        unit: unit.to_string(),
        value,
        low,
        high,
    });
}

/// The same quantity in canonical UCUM base units (`72.5 kg` -> `72500 g`), when UCUM knows
/// its unit, so that unit-aware searches compare across units. The interval's ends are
/// converted like the value (which also holds for offset scales such as Cel).
pub fn canonical_quantity(value: &IndexValue) -> Option<IndexValue> {
    let IndexValue::Quantity {
        system,
        code,
        value,
        low,
        high,
        ..
    } = value
    else {
        return None;
    };
    if !(system == UCUM || system.is_empty()) || code.is_empty() {
        return None;
    }
    let convert = |n: f64| -> Option<(f64, String)> {
        let decimal: rust_decimal::Decimal = format!("{n}").parse().ok()?;
        let canonical = Quantity::new(decimal, code.as_str()).canonical()?;
        Some((canonical.value.to_string().parse().ok()?, canonical.unit))
    };
    let ((value, unit), (low, _), (high, _)) = (convert(*value)?, convert(*low)?, convert(*high)?);
    Some(IndexValue::Quantity {
        system: UCUM.to_string(),
        code: unit.clone(),
        unit,
        value,
        low,
        high,
    })
}

/// A decimal's value and the half-open interval its written precision implies:
/// `100` is `[99.5, 100.5)`, `1.50` is `[1.495, 1.505)` (FHIR search, "number" precision).
pub fn decimal_interval(text: &str) -> Option<(f64, f64, f64)> {
    let value: f64 = text.parse().ok().filter(|v: &f64| v.is_finite())?;
    let (mantissa, exponent) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().ok()?),
        None => (text, 0),
    };
    let decimals = mantissa.split_once('.').map_or(0, |(_, f)| f.len() as i32) - exponent;
    let half = 0.5 * 10f64.powi(-decimals);
    Some((value, value - half, value + half))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rows(resource: Json) -> Vec<IndexRow> {
        let rt = resource["resourceType"].as_str().unwrap().to_string();
        FhirIndexExtractor::new().extract(&rt, &resource).unwrap()
    }

    fn values_of<'r>(rows: &'r [IndexRow], param: &str) -> Vec<&'r IndexValue> {
        rows.iter()
            .filter(|r| r.param == param)
            .map(|r| &r.value)
            .collect()
    }

    #[test]
    fn normalises_case_accents_and_width() {
        assert_eq!(normalize("  José  MARÍA "), "jose maria");
        assert_eq!(normalize("ﾔﾏﾀﾞ"), "ヤマダ");
        assert_eq!(normalize("ガ"), "ガ");
        assert_eq!(normalize("ＡＢＣ　１２３"), "abc 123");
    }

    #[test]
    fn precision_intervals() {
        assert_eq!(decimal_interval("100"), Some((100.0, 99.5, 100.5)));
        let (v, lo, hi) = decimal_interval("1.50").unwrap();
        assert!(
            (v - 1.5).abs() < 1e-12 && (lo - 1.495).abs() < 1e-12 && (hi - 1.505).abs() < 1e-12
        );
        // 1e2 has one significant digit: the spec's example range is [50, 150).
        assert_eq!(decimal_interval("1e2"), Some((100.0, 50.0, 150.0)));
    }

    /// `name`, `address` and `telecom` rows hold only what no other parameter stores.
    #[test]
    fn name_address_and_telecom_rows_leave_out_what_other_parameters_store() {
        let rows = rows(json!({
            "resourceType": "Patient",
            "name": [{"text": "Dr. Ken Tanaka", "family": "Tanaka", "given": ["Ken"], "prefix": ["Dr."], "suffix": ["PhD"]}],
            "address": [{"text": "1 Main St, Kobe", "line": ["1 Main St"], "district": "Chuo", "city": "Kobe", "state": "Hyogo", "postalCode": "650", "country": "JP"}],
            "telecom": [
                {"system": "phone", "value": "078-000-0000"},
                {"system": "email", "value": "ken@example.org"},
                {"system": "fax", "value": "078-000-0001"},
                {"value": "no system"}
            ]
        }));
        let exact = |param| -> Vec<&str> {
            let mut v: Vec<&str> = values_of(&rows, param)
                .into_iter()
                .map(|v| match v {
                    IndexValue::String { exact, .. } => exact.as_str(),
                    other => panic!("{other:?}"),
                })
                .collect();
            v.sort();
            v
        };
        assert_eq!(exact("name"), ["Dr.", "Dr. Ken Tanaka", "PhD"]);
        assert_eq!(exact("family"), ["Tanaka"]);
        assert_eq!(exact("given"), ["Ken"]);
        assert_eq!(exact("address"), ["1 Main St", "1 Main St, Kobe", "Chuo"]);
        assert_eq!(exact("address-city"), ["Kobe"]);
        assert_eq!(exact("address-state"), ["Hyogo"]);
        assert_eq!(exact("address-postalcode"), ["650"]);
        assert_eq!(exact("address-country"), ["JP"]);
        assert!(values_of(&rows, "phonetic").is_empty());
        let codes = |param| -> Vec<&str> {
            let mut v: Vec<&str> = values_of(&rows, param)
                .into_iter()
                .map(|v| match v {
                    IndexValue::Token { code, .. } => code.as_str(),
                    other => panic!("{other:?}"),
                })
                .collect();
            v.sort();
            v
        };
        // `telecom` keeps what `phone` and `email` do not hold.
        assert_eq!(codes("telecom"), ["078-000-0001", "no system"]);
        assert_eq!(codes("phone"), ["078-000-0000"]);
        assert_eq!(codes("email"), ["ken@example.org"]);
    }

    #[test]
    fn patient_parameters() {
        let rows = rows(json!({
            "resourceType": "Patient", "id": "p1",
            "identifier": [{"system": "urn:mrn", "value": "123"}],
            "name": [{"family": "Müller", "given": ["Anna", "Marie"]}],
            "telecom": [{"system": "phone", "value": "555-1234"}],
            "gender": "female", "birthDate": "1970-03",
            "address": [{"city": "Kyoto", "postalCode": "600-8216"}],
            "generalPractitioner": [{"reference": "Practitioner/dr1"}],
            "managingOrganization": {"reference": "http://example.org/fhir/Organization/o1", "identifier": {"system": "urn:org", "value": "O-1"}}
        }));
        assert!(values_of(&rows, "family").contains(&&IndexValue::String {
            normalized: "muller".into(),
            exact: "Müller".into()
        }));
        assert_eq!(values_of(&rows, "given").len(), 2);
        // `name` keeps only what `family` and `given` do not hold; `address` likewise.
        assert!(values_of(&rows, "name").is_empty(), "{rows:?}");
        assert!(values_of(&rows, "address").is_empty(), "{rows:?}");
        assert_eq!(values_of(&rows, "address-city").len(), 1);
        assert_eq!(
            values_of(&rows, "identifier"),
            vec![&IndexValue::Token {
                system: "urn:mrn".into(),
                code: "123".into(),
                display: None
            }]
        );
        assert_eq!(
            values_of(&rows, "gender"),
            vec![&IndexValue::Token {
                system: String::new(),
                code: "female".into(),
                display: None
            }]
        );
        let IndexValue::Date { start, end } = values_of(&rows, "birthdate")[0] else {
            panic!()
        };
        assert_eq!(
            (*start, *end),
            (
                parse_range("1970-03-01").unwrap().0,
                parse_range("1970-04-01").unwrap().0
            )
        );
        assert_eq!(
            values_of(&rows, "general-practitioner"),
            vec![&IndexValue::Reference {
                target_type: Some("Practitioner".into()),
                target_id: Some("dr1".into()),
                url: "Practitioner/dr1".into()
            }]
        );
        assert_eq!(
            values_of(&rows, "organization"),
            vec![&IndexValue::Reference {
                target_type: Some("Organization".into()),
                target_id: Some("o1".into()),
                url: "http://example.org/fhir/Organization/o1".into()
            }]
        );
        assert_eq!(
            values_of(&rows, "organization:identifier"),
            vec![&IndexValue::Token {
                system: "urn:org".into(),
                code: "O-1".into(),
                display: None
            }]
        );
        assert_eq!(values_of(&rows, "address-city").len(), 1);
        assert!(
            values_of(&rows, "phone")
                .iter()
                .any(|v| matches!(v, IndexValue::Token { code, .. } if code == "555-1234"))
        );
    }

    #[test]
    fn observation_quantities_and_composites() {
        let rows = rows(json!({
            "resourceType": "Observation", "id": "o1", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7", "display": "Body weight"}], "text": "Weight"},
            "subject": {"reference": "Patient/p1"},
            "effectiveDateTime": "2020-01-02T10:00:00Z",
            "valueQuantity": {"value": 72.5, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"}
        }));
        let quantities = values_of(&rows, "value-quantity");
        assert_eq!(quantities.len(), 1, "{quantities:?}");
        let canonical = values_of(&rows, "value-quantity:canonical");
        assert!(
            matches!(canonical[..], [IndexValue::Quantity { code, value, .. }] if code == "g" && (*value - 72500.0).abs() < 1e-6),
            "{canonical:?}"
        );
        assert_eq!(values_of(&rows, "subject"), values_of(&rows, "patient"));
        // code-value-quantity: component 0 is the code token, component 1 the quantity, in one group.
        let c0: Vec<_> = rows
            .iter()
            .filter(|r| r.param == "code-value-quantity$0")
            .collect();
        let c1: Vec<_> = rows
            .iter()
            .filter(|r| r.param == "code-value-quantity$1")
            .collect();
        assert!(!c0.is_empty() && !c1.is_empty());
        assert!(c0.iter().all(|r| c1.iter().any(|q| q.group == r.group)));
        assert!(!values_of(&rows, "date").is_empty());
    }

    /// The derived parameters of R4 are Observation's `combo-*` ones, each stored as the
    /// parameters it unites (the SQL migration that removed their old rows names them by that
    /// prefix), and the parameters whose expression is another's (`phonetic` is `name`); they
    /// get no rows. A `name`, `address` or `telecom` is stored partly as itself (what no other
    /// parameter holds) and partly as `family`, `given`, `address-city`, `phone`, `email`...;
    /// every other parameter keeps its own rows.
    #[test]
    fn combo_parameters_are_stored_as_their_parts() {
        let extractor = FhirIndexExtractor::new();
        let mut derived = Vec::new();
        for (resource_type, params) in &extractor.by_type {
            for p in params.iter().filter(|p| !p.stored_as.is_empty()) {
                derived.push((
                    resource_type.as_str(),
                    p.code.as_str(),
                    p.stored_as.join(","),
                ));
            }
        }
        derived.sort();
        let expected = [
            ("CapabilityStatement", "version", "fhirversion"),
            ("Observation", "combo-code", "code,component-code"),
            (
                "Observation",
                "combo-code-value-concept",
                "code-value-concept,component-code-value-concept",
            ),
            (
                "Observation",
                "combo-code-value-quantity",
                "code-value-quantity,component-code-value-quantity",
            ),
            (
                "Observation",
                "combo-data-absent-reason",
                "component-data-absent-reason,data-absent-reason",
            ),
            (
                "Observation",
                "combo-value-concept",
                "component-value-concept,value-concept",
            ),
            (
                "Observation",
                "combo-value-quantity",
                "component-value-quantity,value-quantity",
            ),
            ("Patient", "phonetic", "name"),
            ("Person", "phonetic", "name"),
            ("Practitioner", "phonetic", "name"),
            ("RelatedPerson", "phonetic", "name"),
        ];
        let address = "address,address-city,address-state,address-postalcode,address-country";
        let telecom = "telecom,email,phone";
        let partly = [
            ("InsurancePlan", "address", address),
            ("Location", "address", address),
            ("Organization", "address", address),
            ("Patient", "address", address),
            ("Patient", "name", "name,family,given"),
            ("Patient", "phonetic", "family,given,name"),
            ("Person", "address", address),
            ("Practitioner", "address", address),
            ("Practitioner", "name", "name,family,given"),
            ("Practitioner", "phonetic", "family,given,name"),
            ("RelatedPerson", "address", address),
            ("OrganizationAffiliation", "telecom", telecom),
            ("Patient", "telecom", telecom),
            ("Person", "telecom", telecom),
            ("Practitioner", "telecom", telecom),
            ("PractitionerRole", "telecom", telecom),
            ("RelatedPerson", "telecom", telecom),
        ];
        let mut expected: Vec<(&str, &str, &str)> = expected
            .into_iter()
            .filter(|(t, c, _)| !partly.iter().any(|(pt, pc, _)| (pt, pc) == (t, c)))
            .chain(partly)
            .collect();
        expected.sort();
        let derived: Vec<(&str, &str, &str)> = derived
            .iter()
            .map(|(t, c, s)| (*t, *c, s.as_str()))
            .collect();
        assert_eq!(derived, expected);
        let declared = extractor.parameters("Observation");
        let combo = declared.iter().find(|p| p.name == "combo-code").unwrap();
        assert_eq!(combo.stored_as, ["code", "component-code"]);
        assert!(
            declared
                .iter()
                .find(|p| p.name == "code")
                .unwrap()
                .stored_as
                .is_empty()
        );

        let rows = rows(json!({
            "resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
            "component": [{
                "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                "valueQuantity": {"value": 140, "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}
            }]
        }));
        assert!(
            rows.iter().all(|r| !r.param.starts_with("combo-")),
            "{rows:?}"
        );
        assert_eq!(values_of(&rows, "code").len(), 1);
        assert_eq!(values_of(&rows, "component-code").len(), 1);
        assert_eq!(values_of(&rows, "component-code-value-quantity$1").len(), 1);
    }

    #[test]
    fn alternatives_split_only_at_the_top_level() {
        let parts = |e: &str| alternatives(e).into_iter().collect::<Vec<_>>();
        assert_eq!(
            parts("(Observation.value as Quantity) | Observation.component.code"),
            [
                "(Observation.value as Quantity)",
                "Observation.component.code"
            ]
        );
        assert_eq!(
            parts("Patient.name.where(use = 'a|b' or (x | y))"),
            ["Patient.name.where(use = 'a|b' or (x | y))"]
        );
        assert_eq!(parts("a | 'it\\'s | b' | c"), ["'it\\'s | b'", "a", "c"]);
    }

    #[test]
    fn every_synthea_resource_extracts() {
        let extractor = FhirIndexExtractor::new();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/data/synthea-10");
        let mut total = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.ends_with("log.ndjson") {
                continue;
            }
            for line in std::fs::read_to_string(&path)
                .unwrap()
                .lines()
                .filter(|l| !l.is_empty())
            {
                let resource: Json = serde_json::from_str(line).unwrap();
                let rt = resource["resourceType"].as_str().unwrap();
                total += extractor.extract(rt, &resource).unwrap().len();
            }
        }
        assert!(total > 50_000, "{total} rows");
    }

    /// Replaces every `reference` with a `urn:uuid:` placeholder, recording where it pointed
    /// and the type of the target.
    fn to_placeholders(
        value: &mut Json,
        map: &mut HashMap<String, String>,
        types: &mut FullUrlTypes,
    ) {
        match value {
            Json::Object(obj) => {
                for (k, v) in obj.iter_mut() {
                    match v {
                        Json::String(s) if k == "reference" && !s.starts_with('#') => {
                            let placeholder = format!("urn:uuid:{}", uuid::Uuid::new_v4());
                            if let Some(IndexValue::Reference {
                                target_type: Some(t),
                                ..
                            }) = IndexValue::reference(s)
                            {
                                types.insert(&placeholder, &t);
                            }
                            map.insert(placeholder.clone(), std::mem::take(s));
                            *s = placeholder;
                        }
                        other => to_placeholders(other, map, types),
                    }
                }
            }
            Json::Array(items) => items
                .iter_mut()
                .for_each(|v| to_placeholders(v, map, types)),
            _ => {}
        }
    }

    /// Rows extracted in a transaction while references were still `urn:uuid:` `fullUrl`s
    /// (with the entries' types), brought up to date by `rewrite_reference_rows` when the
    /// store assigns the ids, equal the rows of the rewritten resource: for every resource
    /// of synthea-10 (what `WriteEntry::index` relies on for HL7 v2 bundles).
    #[test]
    fn rows_extracted_before_the_fullurl_rewrite_equal_extracting_after() {
        let extractor = FhirIndexExtractor::new();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/data/synthea-10");
        let mut rewritten = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.ends_with("log.ndjson") {
                continue;
            }
            for line in std::fs::read_to_string(&path)
                .unwrap()
                .lines()
                .filter(|l| !l.is_empty())
            {
                let mut resource: Json = serde_json::from_str(line).unwrap();
                let rt = resource["resourceType"].as_str().unwrap().to_owned();
                let (mut map, mut types) = (HashMap::new(), FullUrlTypes::default());
                to_placeholders(&mut resource, &mut map, &mut types);
                let mut before = extractor
                    .extract_in_transaction(&rt, &resource, &types)
                    .unwrap();
                if crate::refs::rewrite(&mut resource, &map) {
                    rewritten += 1;
                }
                crate::index::rewrite_reference_rows(&mut before, &map);
                assert_eq!(before, extractor.extract(&rt, &resource).unwrap(), "{rt}");
            }
        }
        assert!(rewritten > 5_000, "{rewritten} resources with references");
    }
}
