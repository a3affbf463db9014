//! Structural validation of FHIR R4 resources in JSON against the core StructureDefinitions
//! ([FHIR JSON](https://hl7.org/fhir/R4/json.html), [validation](https://hl7.org/fhir/R4/validation.html)).
//!
//! [`validate_resource`] walks the JSON once, looking each property up in the definitions
//! registry, and checks:
//!
//! - `resourceType` is present and names a concrete resource type;
//! - every property is an element of its type, at any depth (backbone elements, choice
//!   elements with a valid type suffix such as `valueQuantity`, `_name` primitive-extension
//!   siblings, content references such as `Questionnaire.item.item`);
//! - JSON shapes: primitives carried by the right JSON type (string, number, boolean), complex
//!   values are objects, repeating elements are arrays and single ones are not, no `null`
//!   except as a placeholder in a primitive array paired with its `_name` array, no empty
//!   objects, arrays or strings;
//! - cardinality (min and max) and required elements; at most one type of a choice element;
//! - primitive lexical forms by the spec's regexes ([`primitive`]), integers in 32-bit range,
//!   and that a `date`, `dateTime` or `instant` names a day of the calendar (`1999-02-30`
//!   and `2023-02-29` match the regex but are refused);
//!   the resource `id` as an `id` (the R4 snapshots type it as a plain string);
//! - `Reference.reference` formats (`Type/id[/_history/vid]`, conditional `Type?query`,
//!   absolute URL, `#contained`, `urn:uuid:`, `urn:oid:`) and, when the type is visible, that
//!   it is one of the element's target types;
//! - contained (and any other nested) resources, recursively.
//!
//! - required bindings ([terminologies](https://hl7.org/fhir/R4/terminologies.html#required)):
//!   a `code` must be in the value set its element is bound to with strength `required`, a
//!   `Coding` must be one of its (system, code) pairs, and a `CodeableConcept` must have at
//!   least one coding that is; value sets that cannot be enumerated from the definitions
//!   (UCUM, MIME types, currencies: see `generated/bindings.txt`) are not checked.
//!
//! It does **not** evaluate invariants (FHIRPath constraints such as `dom-2`), check
//! extensible or weaker bindings, resolve references, or apply profiles.
//!
//! Issues name the offending element with a FHIRPath-like expression built from the JSON
//! property names: `Patient.name[0].given[1]`, `Observation.valueQuantity.value`. The
//! extension of a primitive (`_birthDate`) is reported under the primitive's name
//! (`Patient.birthDate.extension[0].url`), as FHIRPath sees it.

pub mod primitive;

use std::fmt::{self, Write as _};

use serde_json::{Map, Value};

use crate::definitions::{Definitions, Element, ElementType, Max, NONE_INDEX, TypeKind};
use crate::terminology::ValueSet;
use primitive::{Formats, JsonKind};

/// Stop recording after this many issues (the walk itself continues cheaply).
const MAX_ISSUES: usize = 100;
/// No type chosen yet for a choice element.
const NO_CHOICE: u8 = u8::MAX;
/// Longest part of an offending value quoted in a message.
const MAX_QUOTE: usize = 64;

/// How bad an issue is (OperationOutcome `issue.severity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Severity {
    /// The content could not be processed at all.
    Fatal,
    /// The content is invalid.
    Error,
    /// Suspicious but acceptable.
    Warning,
    /// For information only.
    Information,
}

impl Severity {
    /// The FHIR code (`"error"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fatal => "fatal",
            Self::Error => "error",
            Self::Warning => "warning",
            Self::Information => "information",
        }
    }
}

/// What kind of problem an issue is: a subset of the FHIR `issue-type` codes
/// (OperationOutcome `issue.code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IssueCode {
    /// `invalid`: the content is not valid FHIR (for instance an unknown `resourceType`).
    Invalid,
    /// `structure`: wrong shape: an unknown element, a wrong JSON type, an array where a
    /// single value belongs, too many values, a reference to a type that is not allowed.
    Structure,
    /// `required`: a required element (or `resourceType`) is missing, or too few values.
    Required,
    /// `value`: a primitive value is malformed (bad date, empty string, integer out of range,
    /// bad reference format).
    Value,
    /// `code-invalid`: a code is not in the value set its element is bound to (`required`).
    CodeInvalid,
}

impl IssueCode {
    /// The FHIR code (`"structure"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Invalid => "invalid",
            Self::Structure => "structure",
            Self::Required => "required",
            Self::Value => "value",
            Self::CodeInvalid => "code-invalid",
        }
    }
}

/// One problem found in a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationIssue {
    /// How bad it is.
    pub severity: Severity,
    /// What kind of problem it is.
    pub code: IssueCode,
    /// Where: a FHIRPath-like path to the element (`Patient.name[0].given[1]`); empty when
    /// the document as a whole is wrong (not a JSON object).
    pub expression: String,
    /// What is wrong, for a human.
    pub message: String,
}

impl fmt::Display for ValidationIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.expression, self.message)
    }
}

/// A resource failed structural validation; `issues` says where and why (never empty).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid resource: {}", summary(.issues))]
pub struct ValidationErrors {
    /// The issues, in document order (at most 100).
    pub issues: Vec<ValidationIssue>,
}

fn summary(issues: &[ValidationIssue]) -> String {
    match issues {
        [] => "no issues".to_owned(),
        [only] => only.to_string(),
        [first, rest @ ..] => format!("{first} (and {} more)", rest.len()),
    }
}

/// Check a FHIR R4 resource in JSON against the core definitions (see the module docs for
/// what is and is not checked).
pub fn validate_resource(resource: &Value) -> Result<(), ValidationErrors> {
    let mut walker = Walker {
        defs: crate::r4(),
        formats: primitive::formats(),
        issues: Vec::new(),
        path: String::with_capacity(128),
        scratch: String::new(),
    };
    walker.resource(resource);
    if walker.issues.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors {
            issues: walker.issues,
        })
    }
}

/// What an object being checked is, beyond its owner's elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ObjectKind {
    /// A resource: `resourceType` is allowed, `id` is an `id`.
    Resource,
    /// A datatype or backbone element.
    Element,
    /// The `_name` object of a primitive: its id and extensions, but not its `value`.
    PrimitiveExtension,
}

/// One validation run: the definitions, the issues so far and the current path.
struct Walker {
    defs: &'static Definitions,
    formats: &'static Formats,
    issues: Vec<ValidationIssue>,
    /// The expression of the value being checked; pushed to and truncated as the walk goes.
    path: String,
    /// Reused buffer for `_name` lookups.
    scratch: String,
}

impl Walker {
    fn issue(&mut self, code: IssueCode, message: impl Into<String>) {
        if self.issues.len() < MAX_ISSUES {
            self.issues.push(ValidationIssue {
                severity: Severity::Error,
                code,
                expression: self.path.clone(),
                message: message.into(),
            });
        }
    }

    /// Append `.name` (or `name` at the root) to the path; returns the length to truncate to.
    fn push_name(&mut self, name: &str) -> usize {
        let len = self.path.len();
        if len > 0 {
            self.path.push('.');
        }
        self.path.push_str(name);
        len
    }

    fn push_index(&mut self, index: usize) -> usize {
        let len = self.path.len();
        // Writing to a String cannot fail.
        let _ = write!(self.path, "[{index}]");
        len
    }

    /// A resource at the current path (empty at the root, where the type becomes the path).
    fn resource(&mut self, value: &Value) {
        let Some(object) = value.as_object() else {
            self.issue(
                IssueCode::Structure,
                format!(
                    "a resource must be a JSON object, found {}",
                    json_type(value)
                ),
            );
            return;
        };
        match object.get("resourceType") {
            Some(Value::String(ty)) if self.defs.is_concrete_resource(ty) => {
                let Some(t) = self.defs.type_def(ty) else {
                    return;
                };
                let owner = t.owner;
                let root = self.path.is_empty();
                if root {
                    self.path.push_str(ty);
                }
                self.object(owner, object, ObjectKind::Resource);
                if root {
                    self.path.clear();
                }
            }
            found => {
                let mark = self.push_name("resourceType");
                match found {
                    None => self.issue(IssueCode::Required, "resourceType is missing"),
                    Some(Value::String(ty)) => self.issue(
                        IssueCode::Invalid,
                        format!("unknown resource type '{}'", quote(ty)),
                    ),
                    Some(other) => self.issue(
                        IssueCode::Structure,
                        format!("resourceType must be a string, found {}", json_type(other)),
                    ),
                }
                self.path.truncate(mark);
            }
        }
    }

    /// The properties of an object whose elements belong to `owner`.
    fn object(&mut self, owner: u32, object: &Map<String, Value>, kind: ObjectKind) {
        let is_resource = kind == ObjectKind::Resource;
        let defs = self.defs;
        let owner = &defs.owners[owner as usize];
        if object.is_empty() {
            self.issue(IssueCode::Structure, "an object must not be empty");
            return;
        }
        // Elements present (owners have at most 128), and the type chosen for each choice element.
        let mut seen: u128 = 0;
        let mut choices = [NO_CHOICE; 128];
        for (key, value) in object {
            if is_resource && key == "resourceType" {
                continue;
            }
            let (name, is_extension) = match key.strip_prefix('_') {
                Some(name) => (name, true),
                None => (key.as_str(), false),
            };
            let property = match kind {
                ObjectKind::PrimitiveExtension if name == "value" => None,
                _ => owner.property(name),
            };
            let Some((e, t)) = property else {
                let mark = self.push_name(key);
                self.issue(
                    IssueCode::Structure,
                    format!("unknown element '{}'", quote(key)),
                );
                self.path.truncate(mark);
                continue;
            };
            let element = &owner.elements[e as usize];
            let ty = element.types.get(t as usize);
            if element.choice {
                // `valueString` and `_valueString` are one value; `valueInteger` another.
                let chosen = &mut choices[e as usize];
                if *chosen == NO_CHOICE {
                    *chosen = t as u8;
                } else if *chosen != t as u8 {
                    let mark = self.push_name(name); // `_valueX` is reported as `valueX`
                    self.issue(
                        IssueCode::Structure,
                        format!("only one type of {}[x] may be given", element.name),
                    );
                    self.path.truncate(mark);
                }
            }
            seen |= 1u128 << e;
            if element.max == Max::Bounded(0) {
                let mark = self.push_name(key);
                self.issue(
                    IssueCode::Structure,
                    format!("{} is not allowed here", element.name),
                );
                self.path.truncate(mark);
                continue;
            }
            if is_extension {
                self.primitive_extension(element, ty, name, value, object);
            } else {
                let as_id = is_resource && key == "id";
                self.element(element, ty, key, value, object, as_id);
            }
        }
        for &r in &owner.required {
            let element = &owner.elements[r as usize];
            let value_of_primitive =
                kind == ObjectKind::PrimitiveExtension && element.name == "value";
            if seen & (1u128 << r) == 0 && !value_of_primitive {
                let name = if element.choice {
                    format!("{}[x]", element.name)
                } else {
                    element.name.clone()
                };
                let mark = self.push_name(&name);
                self.issue(
                    IssueCode::Required,
                    format!("{name} is required (min {})", element.min),
                );
                self.path.truncate(mark);
            }
        }
    }

    /// The value of property `key` (element `element`, type `ty`), in `parent`.
    fn element(
        &mut self,
        element: &Element,
        ty: Option<&ElementType>,
        key: &str,
        value: &Value,
        parent: &Map<String, Value>,
        as_id: bool,
    ) {
        let mark = self.push_name(key);
        if element.is_many() {
            match value {
                Value::Array(items) if items.is_empty() => {
                    self.issue(IssueCode::Structure, "an array must not be empty");
                }
                Value::Array(items) => {
                    if !element.max.allows(items.len()) {
                        self.issue(
                            IssueCode::Structure,
                            format!(
                                "at most {} values allowed, found {}",
                                element.max,
                                items.len()
                            ),
                        );
                    }
                    if items.len() < element.min as usize {
                        self.issue(
                            IssueCode::Required,
                            format!(
                                "at least {} values required, found {}",
                                element.min,
                                items.len()
                            ),
                        );
                    }
                    for (i, item) in items.iter().enumerate() {
                        let mark = self.push_index(i);
                        if item.is_null() {
                            if !self.has_extension_at(parent, key, i) {
                                self.issue(
                                    IssueCode::Structure,
                                    "null is only allowed where the _ array has an extension",
                                );
                            }
                        } else {
                            self.value(element, ty, item, false);
                        }
                        self.path.truncate(mark);
                    }
                }
                other => self.issue(
                    IssueCode::Structure,
                    format!(
                        "{} repeats (max {}): expected an array, found {}",
                        element.name,
                        element.max,
                        json_type(other)
                    ),
                ),
            }
        } else {
            match value {
                Value::Array(_) => self.issue(
                    IssueCode::Structure,
                    format!(
                        "{} does not repeat (max 1): expected a single value, found an array",
                        element.name
                    ),
                ),
                Value::Null => self.issue(IssueCode::Structure, "null is not allowed"),
                _ => self.value(element, ty, value, as_id),
            }
        }
        self.path.truncate(mark);
    }

    /// Whether `parent["_" + key][index]` is a non-null value.
    fn has_extension_at(&mut self, parent: &Map<String, Value>, key: &str, index: usize) -> bool {
        self.scratch.clear();
        self.scratch.push('_');
        self.scratch.push_str(key);
        parent
            .get(self.scratch.as_str())
            .and_then(|v| v.as_array())
            .and_then(|a| a.get(index))
            .is_some_and(|v| !v.is_null())
    }

    /// One (non-array, non-null) value of an element.
    fn value(&mut self, element: &Element, ty: Option<&ElementType>, value: &Value, as_id: bool) {
        let defs = self.defs;
        if element.children != NONE_INDEX {
            // Backbone element or content reference: an object of the element's own children.
            match value.as_object() {
                Some(object) => self.object(element.children, object, ObjectKind::Element),
                None => self.expected_object(value),
            }
            return;
        }
        let Some(ty) = ty else { return };
        let Some(t) = defs.types.get(ty.type_index as usize) else {
            return; // not a type of the model: nothing to check it against
        };
        let binding = defs.required_binding(element);
        match t.kind {
            TypeKind::Primitive => {
                let index = if as_id {
                    self.formats.id
                } else {
                    ty.type_index
                };
                let well_formed = self.primitive(index, value);
                if let (true, Some(vs), Value::String(code)) = (well_formed, binding, value)
                    && !vs.contains_code(code)
                {
                    self.issue(
                        IssueCode::CodeInvalid,
                        format!("'{}' is not {}", quote(code), describe(vs)),
                    );
                }
            }
            TypeKind::Resource => self.resource(value),
            TypeKind::Complex | TypeKind::Logical => match value.as_object() {
                Some(object) => {
                    self.object(t.owner, object, ObjectKind::Element);
                    match (t.name.as_str(), binding) {
                        ("Reference", _) => self.reference(object, &ty.targets),
                        ("Coding", Some(vs)) => self.bound_coding(object, vs),
                        ("CodeableConcept", Some(vs)) => self.bound_concept(object, vs),
                        _ => {}
                    }
                }
                None => self.expected_object(value),
            },
        }
    }

    /// A `Coding` bound `required` to `vs`: its system and code must be one of the value set's
    /// ([terminologies](https://hl7.org/fhir/R4/terminologies.html#required)).
    fn bound_coding(&mut self, coding: &Map<String, Value>, vs: &ValueSet) {
        let system = coding.get("system").and_then(Value::as_str);
        let code = coding.get("code").and_then(Value::as_str);
        match (system, code) {
            (Some(system), Some(code)) if vs.contains(system, code) => {}
            (system, code) => {
                let what = match (system, code) {
                    (Some(system), Some(code)) => {
                        format!("'{}' of {}", quote(code), quote(system))
                    }
                    (None, Some(code)) => format!("'{}' without a system", quote(code)),
                    (_, None) => "a coding without a code".to_owned(),
                };
                self.issue(
                    IssueCode::CodeInvalid,
                    format!("{what} is not {}", describe(vs)),
                );
            }
        }
    }

    /// A `CodeableConcept` bound `required` to `vs`: at least one of its codings must be from
    /// the value set ([terminologies](https://hl7.org/fhir/R4/terminologies.html#required):
    /// the concept SHALL be from it, so text alone does not do).
    fn bound_concept(&mut self, concept: &Map<String, Value>, vs: &ValueSet) {
        let codings = concept.get("coding").and_then(Value::as_array);
        let from_set = codings.into_iter().flatten().any(|coding| {
            match (
                coding.get("system").and_then(Value::as_str),
                coding.get("code").and_then(Value::as_str),
            ) {
                (Some(system), Some(code)) => vs.contains(system, code),
                _ => false,
            }
        });
        if !from_set {
            let found: Vec<String> = codings
                .into_iter()
                .flatten()
                .filter_map(|c| {
                    let code = c.get("code").and_then(Value::as_str)?;
                    Some(match c.get("system").and_then(Value::as_str) {
                        Some(system) => format!("{}|{}", quote(system), quote(code)),
                        None => quote(code),
                    })
                })
                .take(4)
                .collect();
            let what = if found.is_empty() {
                "no coding".to_owned()
            } else {
                format!("none of the codings ({})", found.join(", "))
            };
            self.issue(
                IssueCode::CodeInvalid,
                format!("{what} is {}", describe(vs)),
            );
        }
    }

    fn expected_object(&mut self, value: &Value) {
        self.issue(
            IssueCode::Structure,
            format!("expected a JSON object, found {}", json_type(value)),
        );
    }

    /// A primitive value of type `type_index`; whether it is well-formed.
    fn primitive(&mut self, type_index: u32, value: &Value) -> bool {
        let defs = self.defs;
        let Some(format) = self.formats.get(type_index) else {
            return true;
        };
        let before = self.issues.len();
        let type_name = defs.types[type_index as usize].name.as_str();
        match (format.json, value) {
            (JsonKind::Bool, Value::Bool(_)) => {}
            (JsonKind::Number, Value::Number(number)) => {
                let text = number.as_str();
                if !self.formats.matches(type_index, text) {
                    self.issue(
                        IssueCode::Value,
                        format!("'{}' is not a valid {type_name}", quote(text)),
                    );
                } else if let Some((min, max)) = format.range {
                    match text.parse::<i64>() {
                        Ok(n) if (min..=max).contains(&n) => {}
                        _ => self.issue(
                            IssueCode::Value,
                            format!(
                                "{} is out of range for {type_name} ({min}..{max})",
                                quote(text)
                            ),
                        ),
                    }
                }
            }
            (JsonKind::String, Value::String(text)) => {
                if text.is_empty() {
                    self.issue(IssueCode::Value, "a string must not be empty");
                } else if !self.formats.matches(type_index, text) {
                    self.issue(
                        IssueCode::Value,
                        format!("'{}' is not a valid {type_name}", quote(text)),
                    );
                } else if let Some(why) = matches!(type_name, "date" | "dateTime" | "instant")
                    .then(|| primitive::impossible_day(text))
                    .flatten()
                {
                    self.issue(
                        IssueCode::Value,
                        format!("'{}' is not a valid {type_name}: {why}", quote(text)),
                    );
                } else if type_name == "xhtml" && !text.trim_start().starts_with("<div") {
                    self.issue(IssueCode::Value, "narrative must be an XHTML <div> element");
                }
            }
            (json, other) => {
                let expected = match json {
                    JsonKind::Bool => "a JSON boolean",
                    JsonKind::Number => "a JSON number",
                    JsonKind::String => "a JSON string",
                };
                self.issue(
                    IssueCode::Structure,
                    format!("{type_name} must be {expected}, found {}", json_type(other)),
                );
            }
        }
        self.issues.len() == before
    }

    /// `_name`: the id and extensions of primitive element `name` (whose value, if any, is
    /// `parent[name]`), reported under `name`.
    fn primitive_extension(
        &mut self,
        element: &Element,
        ty: Option<&ElementType>,
        name: &str,
        value: &Value,
        parent: &Map<String, Value>,
    ) {
        let defs = self.defs;
        let mark = self.push_name(name);
        let primitive = ty
            .and_then(|ty| defs.types.get(ty.type_index as usize))
            .is_some_and(|t| t.kind == TypeKind::Primitive);
        if !primitive {
            self.path.truncate(mark);
            let mark = self.push_name(&format!("_{name}"));
            self.issue(
                IssueCode::Structure,
                format!("_{name} is only allowed for primitive elements"),
            );
            self.path.truncate(mark);
            return;
        }
        // The primitive's own definition: id and extension (prohibited for xhtml), no value.
        let Some(owner) = ty
            .and_then(|ty| defs.types.get(ty.type_index as usize))
            .map(|t| t.owner)
        else {
            return;
        };
        if element.is_many() {
            match value {
                Value::Array(items) if items.is_empty() => {
                    self.issue(IssueCode::Structure, "an array must not be empty");
                }
                Value::Array(items) => {
                    // Missing trailing entries of either array count as null, as common
                    // serialisers omit them; an index must have a value or an extension.
                    let values = parent.get(name).and_then(Value::as_array);
                    for (i, item) in items.iter().enumerate() {
                        let mark = self.push_index(i);
                        match item {
                            Value::Null => {
                                // A null value at i is reported with the value array.
                                if values.and_then(|v| v.get(i)).is_none() {
                                    self.issue(
                                        IssueCode::Structure,
                                        "null is only allowed where the value array has a value",
                                    );
                                }
                            }
                            Value::Object(object) => {
                                self.object(owner, object, ObjectKind::PrimitiveExtension)
                            }
                            other => self.expected_object(other),
                        }
                        self.path.truncate(mark);
                    }
                }
                other => self.issue(
                    IssueCode::Structure,
                    format!(
                        "_{name} repeats: expected an array, found {}",
                        json_type(other)
                    ),
                ),
            }
        } else {
            match value.as_object() {
                Some(object) => self.object(owner, object, ObjectKind::PrimitiveExtension),
                None => self.expected_object(value),
            }
        }
        self.path.truncate(mark);
    }

    /// `Reference.reference`: its format and, when the target type is visible, that it is one
    /// of `targets`.
    fn reference(&mut self, object: &Map<String, Value>, targets: &[String]) {
        let Some(Value::String(reference)) = object.get("reference") else {
            return;
        };
        if reference.is_empty() {
            return; // already reported as an empty string
        }
        let mark = self.push_name("reference");
        match self.reference_type(reference) {
            Ok(Some(ty)) => {
                let allowed = targets.is_empty()
                    || targets
                        .iter()
                        .any(|t| t == ty || t == "Resource" || self.defs.is_a(ty, t));
                if !allowed {
                    self.issue(
                        IssueCode::Structure,
                        format!(
                            "a reference to {ty} is not allowed here (allowed: {})",
                            targets.join(", ")
                        ),
                    );
                }
            }
            Ok(None) => {}
            Err(message) => self.issue(IssueCode::Value, message),
        }
        self.path.truncate(mark);
    }

    /// Check a reference's format; the resource type it names, when it names one.
    fn reference_type<'r>(&self, reference: &'r str) -> Result<Option<&'r str>, String> {
        let formats = self.formats;
        let invalid = || {
            format!(
                "'{}' is not a valid reference (expected Type/id, Type?query, an absolute URL, #id or urn:uuid:)",
                quote(reference)
            )
        };
        if let Some(fragment) = reference.strip_prefix('#') {
            return if fragment.is_empty() || formats.matches(formats.id, fragment) {
                Ok(None)
            } else {
                Err(invalid())
            };
        }
        if reference.starts_with("urn:uuid:") {
            return if formats.matches(formats.uuid, reference) {
                Ok(None)
            } else {
                Err(format!("'{}' is not a valid urn:uuid:", quote(reference)))
            };
        }
        if reference.starts_with("urn:oid:") {
            return if formats.matches(formats.oid, reference) {
                Ok(None)
            } else {
                Err(format!("'{}' is not a valid urn:oid:", quote(reference)))
            };
        }
        if reference.contains(char::is_whitespace) {
            return Err(invalid());
        }
        if has_scheme(reference) {
            // Absolute: the type is visible when it ends in Type/id[/_history/vid].
            let mut segments = reference.rsplit('/');
            let mut last = segments.next();
            let mut before = segments.next();
            if before == Some("_history") {
                last = segments.next();
                before = segments.next();
            }
            let ty = before.filter(|t| self.defs.is_concrete_resource(t));
            return Ok(ty.filter(|_| last.is_some_and(|id| formats.matches(formats.id, id))));
        }
        // Relative: Type/id[/_history/vid] or the conditional Type?query.
        if let Some((ty, query)) = reference.split_once('?') {
            return if self.defs.is_concrete_resource(ty) && !query.is_empty() {
                Ok(Some(ty))
            } else {
                Err(invalid())
            };
        }
        let mut segments = reference.split('/');
        let (ty, id) = (segments.next(), segments.next());
        let rest = (segments.next(), segments.next(), segments.next());
        let version_ok = match rest {
            (None, None, None) => true,
            (Some("_history"), Some(vid), None) => formats.matches(formats.id, vid),
            _ => false,
        };
        match (ty, id) {
            (Some(ty), Some(id))
                if version_ok
                    && self.defs.is_concrete_resource(ty)
                    && formats.matches(formats.id, id) =>
            {
                Ok(Some(ty))
            }
            _ => Err(invalid()),
        }
    }
}

/// "in the required value set URL (a, b, c)": the codes listed when there are a few.
fn describe(vs: &ValueSet) -> String {
    const LISTED: usize = 12;
    let mut text = format!("in the required value set {}", vs.url);
    if vs.len() <= LISTED {
        let codes: Vec<&str> = vs
            .systems()
            .flat_map(|(_, codes)| codes.iter().map(String::as_str))
            .collect();
        let _ = write!(text, " ({})", codes.join(", "));
    }
    text
}

/// `scheme:` as in RFC 3986: a letter, then letters, digits, `+`, `-` or `.`.
fn has_scheme(text: &str) -> bool {
    let Some((scheme, _)) = text.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// At most [`MAX_QUOTE`] characters of an offending value.
fn quote(text: &str) -> String {
    match text.char_indices().nth(MAX_QUOTE) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// R4 binds no `Coding` element `required`, so the rule is checked on a value set directly.
    #[test]
    fn a_bound_coding_needs_system_and_code_from_the_value_set() {
        let vs = crate::r4()
            .value_set("http://hl7.org/fhir/ValueSet/administrative-gender")
            .expect("expanded");
        let gender = "http://hl7.org/fhir/administrative-gender";
        let check = |coding: Value| {
            let mut walker = Walker {
                defs: crate::r4(),
                formats: primitive::formats(),
                issues: Vec::new(),
                path: "X.coding".to_owned(),
                scratch: String::new(),
            };
            walker.bound_coding(coding.as_object().expect("object"), vs);
            walker
                .issues
                .into_iter()
                .map(|i| i.message)
                .collect::<Vec<_>>()
        };
        assert!(check(json!({"system": gender, "code": "male"})).is_empty());
        for (coding, start) in [
            (json!({"system": gender, "code": "M"}), "'M' of "),
            (json!({"code": "male"}), "'male' without a system"),
            (json!({"system": gender}), "a coding without a code"),
        ] {
            let messages = check(coding);
            assert_eq!(messages.len(), 1);
            assert!(messages[0].starts_with(start), "{}", messages[0]);
        }
    }
}
