//! The FHIR R4 definitions registry: types, their elements, search parameters and the Patient
//! compartment, parsed once from the tables in `generated/` (see `generated/README.md`).
//!
//! Elements are grouped by their *owner*: a type name (`"Patient"`, `"HumanName"`, `"date"`) or
//! the path of a backbone element (`"Patient.contact"`, `"Questionnaire.item"`). Each owner has
//! its snapshot elements (inherited ones included) and two hash indexes: by element name
//! (`"value"`, for FHIRPath) and by JSON property name (`"valueQuantity"`, for validation), so a
//! lookup is one or two `&str` hash probes and never allocates.

use std::collections::HashMap;
use std::fmt;

use crate::search::{self, SearchParam};
use crate::terminology::{Bindings, ValueSet};

/// Marker of an unresolved index.
pub(crate) const NONE_INDEX: u32 = u32::MAX;

/// The most elements one owner may have (validation tracks them in a `u128`); a choice
/// element has fewer than 255 types (validation tracks the chosen one in a `u8`).
const MAX_OWNER_ELEMENTS: usize = 128;

/// What kind of definition a type is (`StructureDefinition.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TypeKind {
    /// A primitive datatype (`boolean`, `string`, `date`, `code`, ...).
    Primitive,
    /// A complex datatype (`HumanName`, `Reference`, `Extension`, `Element`, ...).
    Complex,
    /// A resource, abstract (`Resource`, `DomainResource`) or concrete (`Patient`).
    Resource,
    /// A logical model (`MetadataResource`); never a `resourceType` on the wire.
    Logical,
}

/// One FHIR type.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TypeDef {
    /// The type name (`"Patient"`, `"HumanName"`, `"dateTime"`).
    pub name: String,
    /// Primitive, complex, resource or logical.
    pub kind: TypeKind,
    /// Abstract types (`Element`, `BackboneElement`, `Resource`, `DomainResource`) have no
    /// instances of their own.
    pub is_abstract: bool,
    /// The type this one specialises (`"DomainResource"` for `Patient`); `None` for roots.
    pub base: Option<String>,
    /// For primitives, the spec's regular expression for the value's lexical form.
    pub regex: Option<String>,
    pub(crate) owner: u32,
}

/// An element's maximum cardinality.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Max {
    /// At most this many (`0` means prohibited).
    Bounded(u32),
    /// `*`.
    Unbounded,
}

impl Max {
    /// Whether `count` occurrences are allowed.
    pub fn allows(self, count: usize) -> bool {
        match self {
            Max::Bounded(max) => count <= max as usize,
            Max::Unbounded => true,
        }
    }
}

impl fmt::Display for Max {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Max::Bounded(n) => write!(f, "{n}"),
            Max::Unbounded => f.write_str("*"),
        }
    }
}

/// One type an element may have (`ElementDefinition.type`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ElementType {
    /// The type code (`"Reference"`, `"string"`, `"BackboneElement"`).
    pub code: String,
    /// For `Reference` and `canonical`: the allowed target types (`["Patient", "Group"]`);
    /// empty when any is allowed.
    pub targets: Vec<String>,
    /// Index into `Definitions::types`, `NONE_INDEX` when the code is not a type of this model.
    pub(crate) type_index: u32,
}

/// One element of a type or backbone element, from the snapshot.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Element {
    /// The full path (`"Patient.contact.name"`, `"Observation.value[x]"`).
    pub path: String,
    /// The name, without `[x]` for a choice element (`"name"`, `"value"`).
    pub name: String,
    /// The declared types, in definition order (several for a choice element); empty for an
    /// element defined by `content_reference`.
    pub types: Vec<ElementType>,
    /// Minimum cardinality.
    pub min: u32,
    /// Maximum cardinality.
    pub max: Max,
    /// A choice element (`value[x]`): on the wire `name` + capitalised type (`valueQuantity`).
    pub choice: bool,
    /// For an element defined by reference to another backbone element, that element's path
    /// (`Questionnaire.item.item` -> `"Questionnaire.item"`).
    pub content_reference: Option<String>,
    /// `isSummary`: part of the `_summary=true` view.
    pub is_summary: bool,
    /// `isModifier`: changes the meaning of the resource.
    pub is_modifier: bool,
    /// A backbone element: its children are the elements of the owner named by `path`.
    pub is_backbone: bool,
    /// The type names FHIRPath sees (see [`Element::fhirpath_types`]).
    fhirpath_types: Box<[String]>,
    /// The owner holding this element's children (backbone or content reference), or `NONE_INDEX`.
    pub(crate) children: u32,
    /// The value set this element is bound to with strength `required` (index into the
    /// definitions' value sets), or `NONE_INDEX` (no such binding, or not enumerable).
    pub(crate) binding: u32,
}

impl Element {
    /// Whether the element may repeat (max `*` or above 1); such elements are JSON arrays.
    pub fn is_many(&self) -> bool {
        match self.max {
            Max::Bounded(max) => max > 1,
            Max::Unbounded => true,
        }
    }

    /// The types as FHIRPath names them: the type codes, except that a backbone element's type
    /// is its own path (`"Patient.contact"`) and a content reference's the referenced path.
    ///
    /// Elements the snapshots type with a FHIRPath system type (`Resource.id`, `Element.id`,
    /// `Extension.url`, a primitive's `value`) are named by their
    /// `structuredefinition-fhir-type` extension, as the definitions say: `"string"`,
    /// `"uri"`, `"date"` for `date.value`; `"System.String"` only where no extension is given
    /// (`xhtml.id`).
    pub fn fhirpath_types(&self) -> &[String] {
        &self.fhirpath_types
    }
}

/// The element behind one JSON property name of an object.
#[derive(Debug, Clone, Copy)]
pub struct Property<'d> {
    /// The element (`Observation.value[x]` for `valueQuantity`).
    pub element: &'d Element,
    /// The type selected by the property name (`Quantity` for `valueQuantity`); for a
    /// non-choice element its only type; `None` for a content reference.
    pub ty: Option<&'d ElementType>,
}

/// The elements of one type or backbone element, indexed.
#[derive(Debug)]
pub(crate) struct Owner {
    /// The type this owner derives from: the type's base, or the backbone element's declared
    /// type (`BackboneElement`, `Element`).
    pub(crate) base: Option<String>,
    pub(crate) elements: Vec<Element>,
    by_name: HashMap<Box<str>, u32>,
    /// JSON property name -> (element index, type index within the element).
    by_json: HashMap<Box<str>, (u32, u32)>,
    /// Indexes of elements with `min > 0`.
    pub(crate) required: Vec<u32>,
}

impl Owner {
    fn new(base: Option<String>) -> Self {
        Owner {
            base,
            elements: Vec::new(),
            by_name: HashMap::new(),
            by_json: HashMap::new(),
            required: Vec::new(),
        }
    }

    /// The element and its type index for a JSON property name.
    pub(crate) fn property(&self, json_name: &str) -> Option<(u32, u32)> {
        self.by_json.get(json_name).copied()
    }
}

/// The FHIR R4 definitions: get them with [`crate::r4`].
pub struct Definitions {
    pub(crate) types: Vec<TypeDef>,
    type_by_name: HashMap<Box<str>, u32>,
    pub(crate) owners: Vec<Owner>,
    owner_by_name: HashMap<Box<str>, u32>,
    pub(crate) search: search::SearchIndex,
    compartment: Vec<(String, Vec<String>)>,
    compartment_by_type: HashMap<Box<str>, u32>,
    value_sets: Vec<ValueSet>,
    value_set_by_url: HashMap<Box<str>, u32>,
}

impl fmt::Debug for Definitions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Definitions")
            .field("types", &self.types.len())
            .field("owners", &self.owners.len())
            .field("search_params", &self.search.params.len())
            .finish_non_exhaustive()
    }
}

impl Definitions {
    /// Every type, in the order of the specification's bundles (datatypes, then resources).
    pub fn types(&self) -> &[TypeDef] {
        &self.types
    }

    /// The type named `name` (`"Patient"`, `"HumanName"`, `"code"`).
    pub fn type_def(&self, name: &str) -> Option<&TypeDef> {
        self.type_by_name
            .get(name)
            .map(|&i| &self.types[i as usize])
    }

    /// The names of the concrete resource types (`Account` ... `VisionPrescription`).
    pub fn resource_types(&self) -> impl Iterator<Item = &str> {
        self.types
            .iter()
            .filter(|t| t.kind == TypeKind::Resource && !t.is_abstract)
            .map(|t| t.name.as_str())
    }

    /// Whether `name` is a concrete resource type, i.e. a valid `resourceType`.
    pub fn is_concrete_resource(&self, name: &str) -> bool {
        self.type_def(name)
            .is_some_and(|t| t.kind == TypeKind::Resource && !t.is_abstract)
    }

    /// Whether `derived` is `ancestor` or specialises it (`Patient` of `DomainResource`).
    pub fn is_a(&self, derived: &str, ancestor: &str) -> bool {
        let mut current = Some(derived);
        while let Some(name) = current {
            if name == ancestor {
                return true;
            }
            current = self.type_def(name).and_then(|t| t.base.as_deref());
        }
        false
    }

    /// The elements of a type or backbone element (`"Patient"`, `"Patient.contact"`), in
    /// snapshot order, inherited elements included.
    pub fn elements(&self, owner: &str) -> Option<&[Element]> {
        self.owner(owner).map(|o| o.elements.as_slice())
    }

    /// The element `name` of a type or backbone element; choice elements by their name
    /// without `[x]` (`element("Observation", "value")`).
    pub fn element(&self, owner: &str, name: &str) -> Option<&Element> {
        let owner = self.owner(owner)?;
        let &i = owner.by_name.get(name)?;
        Some(&owner.elements[i as usize])
    }

    /// The element behind a JSON property name (`property("Observation", "valueQuantity")`).
    /// `_name` primitive-extension properties are not elements: look up `name`.
    pub fn property(&self, owner: &str, json_name: &str) -> Option<Property<'_>> {
        let owner = self.owner(owner)?;
        let (e, t) = owner.property(json_name)?;
        let element = &owner.elements[e as usize];
        Some(Property {
            element,
            ty: element.types.get(t as usize),
        })
    }

    /// The search parameter `code` that applies to `resource_type`, including those defined on
    /// `Resource` and `DomainResource` (`_id`, `_lastUpdated`, `_text`, ...).
    pub fn search_param(&self, resource_type: &str, code: &str) -> Option<&SearchParam> {
        self.search_bases(resource_type)
            .find_map(|base| self.search.get(base, code))
    }

    /// Every search parameter that applies to `resource_type`: its own, then those of
    /// `DomainResource` (when it is one) and `Resource`.
    pub fn search_params<'a>(
        &'a self,
        resource_type: &'a str,
    ) -> impl Iterator<Item = &'a SearchParam> + 'a {
        self.search_bases(resource_type)
            .flat_map(|base| self.search.for_base(base))
    }

    /// Every search parameter of the specification, in its order.
    pub fn all_search_params(&self) -> &[SearchParam] {
        &self.search.params
    }

    /// The search parameter with this canonical URL
    /// (`http://hl7.org/fhir/SearchParameter/Patient-birthdate`).
    pub fn search_param_by_url(&self, url: &str) -> Option<&SearchParam> {
        self.search.by_url(url)
    }

    /// The codes of the search parameters linking a `resource_type` resource to a Patient
    /// (`["patient", "recorder", "asserter"]` for `AllergyIntolerance`); empty when the type
    /// is not in the Patient compartment. For `Patient` itself: `["link"]`; a Patient is in
    /// its own compartment by id.
    pub fn patient_compartment_params(&self, resource_type: &str) -> &[String] {
        self.compartment_by_type
            .get(resource_type)
            .map(|&i| self.compartment[i as usize].1.as_slice())
            .unwrap_or(&[])
    }

    /// The resource types in the Patient compartment, with their linking parameter codes.
    pub fn patient_compartment(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.compartment
            .iter()
            .map(|(t, p)| (t.as_str(), p.as_slice()))
    }

    /// The value set an element is bound to with strength `required`, when R4 binds it so
    /// and the value set can be enumerated from the definitions (`generated/bindings.txt`
    /// lists the ones that cannot).
    pub fn required_binding(&self, element: &Element) -> Option<&ValueSet> {
        self.value_sets.get(element.binding as usize)
    }

    /// An expanded value set by canonical URL (only those bound `required` somewhere).
    pub fn value_set(&self, url: &str) -> Option<&ValueSet> {
        self.value_set_by_url
            .get(url)
            .map(|&i| &self.value_sets[i as usize])
    }

    pub(crate) fn owner(&self, name: &str) -> Option<&Owner> {
        self.owner_by_name
            .get(name)
            .map(|&i| &self.owners[i as usize])
    }

    /// `resource_type`, then `DomainResource` if it specialises it, then `Resource`.
    fn search_bases<'a>(&'a self, resource_type: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        let domain =
            resource_type != "DomainResource" && self.is_a(resource_type, "DomainResource");
        let resource = resource_type != "Resource";
        std::iter::once(resource_type)
            .chain(domain.then_some("DomainResource"))
            .chain(resource.then_some("Resource"))
    }

    /// Parse the four embedded tables.
    pub(crate) fn parse(
        types: &str,
        params: &str,
        compartment: &str,
        bindings: &str,
    ) -> Result<Self, String> {
        let mut defs = Definitions {
            types: Vec::new(),
            type_by_name: HashMap::new(),
            owners: Vec::new(),
            owner_by_name: HashMap::new(),
            search: search::SearchIndex::parse(params)?,
            compartment: Vec::new(),
            compartment_by_type: HashMap::new(),
            value_sets: Vec::new(),
            value_set_by_url: HashMap::new(),
        };
        defs.parse_types(types)?;
        defs.resolve()?;
        let bindings = Bindings::parse(bindings)?;
        for (path, vs) in &bindings.elements {
            let (owner, last) = path
                .rsplit_once('.')
                .ok_or_else(|| format!("bindings.txt: bad path {path}"))?;
            let name = last.strip_suffix("[x]").unwrap_or(last);
            let &o = defs
                .owner_by_name
                .get(owner)
                .ok_or_else(|| format!("bindings.txt: unknown element {path}"))?;
            let owner = &mut defs.owners[o as usize];
            let &e = owner
                .by_name
                .get(name)
                .ok_or_else(|| format!("bindings.txt: unknown element {path}"))?;
            owner.elements[e as usize].binding = *vs;
        }
        defs.value_sets = bindings.value_sets;
        defs.value_set_by_url = bindings.by_url;
        for (n, line) in data_lines(compartment) {
            let fields: Vec<&str> = line.split('\t').collect();
            match fields.as_slice() {
                ["P", ty, params] => {
                    let i = defs.compartment.len() as u32;
                    defs.compartment_by_type.insert((*ty).into(), i);
                    defs.compartment
                        .push(((*ty).to_owned(), split_list(params)));
                }
                _ => return Err(format!("compartment_patient.txt:{n}: bad line")),
            }
        }
        Ok(defs)
    }

    fn add_owner(&mut self, name: &str, base: Option<String>) -> u32 {
        let i = self.owners.len() as u32;
        self.owners.push(Owner::new(base));
        self.owner_by_name.insert(name.into(), i);
        i
    }

    fn parse_types(&mut self, text: &str) -> Result<(), String> {
        let mut current: Option<String> = None;
        for (n, line) in data_lines(text) {
            let err = |msg: &str| format!("types.txt:{n}: {msg}");
            let fields: Vec<&str> = line.split('\t').collect();
            match fields.as_slice() {
                ["T", name, kind, is_abstract, base, regex] => {
                    let kind = match *kind {
                        "primitive" => TypeKind::Primitive,
                        "complex" => TypeKind::Complex,
                        "resource" => TypeKind::Resource,
                        "logical" => TypeKind::Logical,
                        _ => return Err(err("unknown kind")),
                    };
                    let base = non_empty(base);
                    let owner = self.add_owner(name, base.clone());
                    self.type_by_name
                        .insert((*name).into(), self.types.len() as u32);
                    self.types.push(TypeDef {
                        name: (*name).to_owned(),
                        kind,
                        is_abstract: *is_abstract == "1",
                        base,
                        regex: non_empty(regex),
                        owner,
                    });
                    current = Some((*name).to_owned());
                }
                ["E", rel, min, max, flags, types] => {
                    let ty = current
                        .as_deref()
                        .ok_or_else(|| err("element before type"))?;
                    let path = format!("{ty}.{rel}");
                    let (parent, last) = path.rsplit_once('.').ok_or_else(|| err("bad path"))?;
                    let (name, choice) = match last.strip_suffix("[x]") {
                        Some(name) => (name.to_owned(), true),
                        None => (last.to_owned(), false),
                    };
                    let min = min.parse().map_err(|_| err("bad min"))?;
                    let max = match *max {
                        "*" => Max::Unbounded,
                        n => Max::Bounded(n.parse().map_err(|_| err("bad max"))?),
                    };
                    let (content_reference, types) = match types.strip_prefix('#') {
                        Some(target) => (Some(target.to_owned()), Vec::new()),
                        None => (None, parse_types(types).ok_or_else(|| err("bad types"))?),
                    };
                    let is_backbone = flags.contains('b');
                    let fhirpath_types: Box<[String]> = if is_backbone {
                        Box::new([path.clone()])
                    } else if let Some(target) = &content_reference {
                        Box::new([target.clone()])
                    } else {
                        types.iter().map(|t| t.code.clone()).collect()
                    };
                    let &owner = self
                        .owner_by_name
                        .get(parent)
                        .ok_or_else(|| err("element of an unknown owner"))?;
                    let children = if is_backbone {
                        let base = types.first().map(|t| t.code.clone());
                        self.add_owner(&path, base)
                    } else {
                        NONE_INDEX // content references are resolved once all owners exist
                    };
                    let element = Element {
                        path,
                        name,
                        types,
                        min,
                        max,
                        choice,
                        content_reference,
                        is_summary: flags.contains('s'),
                        is_modifier: flags.contains('m'),
                        is_backbone,
                        fhirpath_types,
                        children,
                        binding: NONE_INDEX,
                    };
                    self.owners[owner as usize].elements.push(element);
                }
                _ => return Err(err("bad line")),
            }
        }
        Ok(())
    }

    /// Resolve type codes and content references to indexes; build the lookup maps.
    fn resolve(&mut self) -> Result<(), String> {
        for o in 0..self.owners.len() {
            let mut elements = std::mem::take(&mut self.owners[o].elements);
            if elements.len() > MAX_OWNER_ELEMENTS {
                return Err(format!("an owner has {} elements", elements.len()));
            }
            let mut by_name = HashMap::new();
            let mut by_json = HashMap::new();
            let mut required = Vec::new();
            for (e, element) in elements.iter_mut().enumerate() {
                let e = e as u32;
                for ty in &mut element.types {
                    ty.type_index = self
                        .type_by_name
                        .get(ty.code.as_str())
                        .copied()
                        .unwrap_or(NONE_INDEX);
                }
                if let Some(target) = &element.content_reference {
                    element.children = *self
                        .owner_by_name
                        .get(target.as_str())
                        .ok_or_else(|| format!("{}: unknown contentReference", element.path))?;
                }
                by_name.insert(element.name.as_str().into(), e);
                if element.choice {
                    if element.types.len() >= 255 {
                        return Err(format!("{}: too many types", element.path));
                    }
                    for (t, ty) in element.types.iter().enumerate() {
                        let json = format!("{}{}", element.name, capitalise(&ty.code));
                        by_json.insert(json.into_boxed_str(), (e, t as u32));
                    }
                } else {
                    by_json.insert(element.name.as_str().into(), (e, 0));
                }
                if element.min > 0 {
                    required.push(e);
                }
            }
            let owner = &mut self.owners[o];
            owner.elements = elements;
            owner.by_name = by_name;
            owner.by_json = by_json;
            owner.required = required;
        }
        Ok(())
    }
}

impl fhirpath::ModelInfo for Definitions {
    fn element(&self, type_name: &str, name: &str) -> Option<fhirpath::ElementInfo<'_>> {
        let element = Definitions::element(self, type_name, name)?;
        Some(fhirpath::ElementInfo {
            types: element.fhirpath_types(),
            choice: element.choice,
            many: element.is_many(),
        })
    }

    fn base_type(&self, type_name: &str) -> Option<&str> {
        match self.type_def(type_name) {
            Some(t) => t.base.as_deref(),
            None => self.owner(type_name)?.base.as_deref(),
        }
    }

    fn is_type(&self, type_name: &str) -> bool {
        self.type_by_name.contains_key(type_name)
    }

    fn is_resource(&self, type_name: &str) -> bool {
        self.type_def(type_name)
            .is_some_and(|t| t.kind == TypeKind::Resource)
    }

    fn is_primitive(&self, type_name: &str) -> bool {
        self.type_def(type_name)
            .is_some_and(|t| t.kind == TypeKind::Primitive)
    }
}

/// The non-comment lines of a table, numbered from 1.
pub(crate) fn data_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

pub(crate) fn split_list(field: &str) -> Vec<String> {
    field.split_whitespace().map(str::to_owned).collect()
}

fn non_empty(field: &str) -> Option<String> {
    (!field.is_empty()).then(|| field.to_owned())
}

/// `Reference(Patient|Group) string` -> two element types.
fn parse_types(field: &str) -> Option<Vec<ElementType>> {
    field
        .split(' ')
        .map(|spec| {
            let (code, targets) = match spec.split_once('(') {
                Some((code, rest)) => {
                    let list = rest.strip_suffix(')')?;
                    (code, list.split('|').map(str::to_owned).collect())
                }
                None => (spec, Vec::new()),
            };
            (!code.is_empty()).then(|| ElementType {
                code: code.to_owned(),
                targets,
                type_index: NONE_INDEX,
            })
        })
        .collect()
}

/// `quantity` -> `Quantity`, `dateTime` -> `DateTime`: the suffix of a choice property.
pub(crate) fn capitalise(code: &str) -> String {
    let mut chars = code.chars();
    match chars.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}
