//! The data model FHIRPath navigates: what it must know of FHIR types, and nothing else.
//!
//! The evaluator never reads StructureDefinitions itself. A [`ModelInfo`] (implemented for
//! FHIR R4 by the `fhir` crate from its generated definitions registry) answers three questions:
//! which elements a type has and of which types, what a type's base type is, and whether a
//! name is a type at all. With no model ([`NoModel`]) the evaluator still works on plain JSON,
//! but cannot type primitives (a `birthDate` is then a String, not a Date), resolve choice
//! elements (`value` for `valueQuantity`), or check expressions before running them.

/// One element of a type, as FHIRPath sees it.
#[derive(Debug, Clone, Copy)]
pub struct ElementInfo<'m> {
    /// The element's possible types, by FHIR type name (`"HumanName"`, `"date"`, `"Resource"`).
    /// One entry for an ordinary element; several for a choice element `value[x]`, in the
    /// order of the definition. A backbone element's type is its path (`"Patient.contact"`);
    /// an element defined by `contentReference` has the referenced path as its type
    /// (`Questionnaire.item.item` -> `"Questionnaire.item"`). Elements whose definition uses
    /// a FHIRPath system type (`Element.id`, `Extension.url`, a primitive's `value`) are named
    /// by their FHIR type (`"string"`, `"uri"`); a model may use `"System.String"` and the like
    /// where it knows no FHIR type.
    pub types: &'m [String],
    /// True for a choice element (`value[x]`); its JSON property names are `name` + a type
    /// name with its first letter capitalised (`valueQuantity`, `valueDateTime`).
    pub choice: bool,
    /// True when the element may repeat (max cardinality `*` or above 1).
    pub many: bool,
}

/// What the evaluator needs to know about a data model.
pub trait ModelInfo: Send + Sync + std::fmt::Debug {
    /// The element `name` of type `type_name` (a resource, a complex datatype or a backbone
    /// path such as `"Patient.contact"`), including elements inherited from base types
    /// (`id`, `extension`, `meta`, ...). Choice elements are looked up by their name without
    /// `[x]` (`"value"`). `None` when the type has no such element or the type is unknown.
    fn element(&self, type_name: &str, name: &str) -> Option<ElementInfo<'_>>;

    /// The type `type_name` is derived from: `"DomainResource"` for `"Patient"`, `"Resource"`
    /// for `"DomainResource"`, `"Element"` for `"HumanName"`, `"BackboneElement"` for
    /// backbone paths, `"string"` for `"code"`. `None` for roots and unknown names.
    fn base_type(&self, type_name: &str) -> Option<&str>;

    /// Whether `type_name` names a FHIR type of this model (resource, complex or primitive).
    fn is_type(&self, type_name: &str) -> bool;

    /// Whether `type_name` is a resource type (concrete or abstract: `Resource`, `DomainResource`).
    fn is_resource(&self, type_name: &str) -> bool;

    /// Whether `type_name` is a FHIR primitive type (`boolean`, `string`, `date`, `code`, ...).
    fn is_primitive(&self, type_name: &str) -> bool;
}

/// The empty model: plain JSON, no FHIR type knowledge.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoModel;

impl ModelInfo for NoModel {
    fn element(&self, _type_name: &str, _name: &str) -> Option<ElementInfo<'_>> {
        None
    }
    fn base_type(&self, _type_name: &str) -> Option<&str> {
        None
    }
    fn is_type(&self, _type_name: &str) -> bool {
        false
    }
    fn is_resource(&self, _type_name: &str) -> bool {
        false
    }
    fn is_primitive(&self, _type_name: &str) -> bool {
        false
    }
}
