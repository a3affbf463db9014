//! The committed definitions tables are complete and consistent: counts from the R4 bundles,
//! known entries, and the `fhirpath::ModelInfo` contract.

use fhir::{Max, SearchParamType, TypeKind, r4};
use fhirpath::ModelInfo;

#[test]
fn counts_match_the_r4_bundles() {
    let defs = r4();
    let count = |kind| defs.types().iter().filter(|t| t.kind == kind).count();
    // profiles-types.json: 20 primitives, 41 complex types (SimpleQuantity and MoneyQuantity
    // are constraints, not types); profiles-resources.json: 148 resources incl. the abstract
    // Resource and DomainResource, and the logical MetadataResource.
    assert_eq!(count(TypeKind::Primitive), 20);
    assert_eq!(count(TypeKind::Complex), 41);
    assert_eq!(count(TypeKind::Resource), 148);
    // (The bundles also hold SubscriptionStatus, from FHIR 4.3.0: not generated.)
    assert_eq!(count(TypeKind::Logical), 1);
    assert_eq!(defs.resource_types().count(), 146);
    // 1378 in the bundle, less DeviceDefinition-classification (from a FHIR 5 snapshot).
    assert_eq!(defs.all_search_params().len(), 1377);
    assert_eq!(defs.patient_compartment().count(), 67);
}

#[test]
fn type_definitions() {
    let defs = r4();
    let patient = defs.type_def("Patient").expect("Patient");
    assert_eq!(patient.kind, TypeKind::Resource);
    assert!(!patient.is_abstract);
    assert_eq!(patient.base.as_deref(), Some("DomainResource"));
    let resource = defs.type_def("Resource").expect("Resource");
    assert!(resource.is_abstract);
    assert_eq!(resource.base, None);
    assert_eq!(
        defs.type_def("code").and_then(|t| t.base.as_deref()),
        Some("string")
    );
    assert_eq!(
        defs.type_def("Age").and_then(|t| t.base.as_deref()),
        Some("Quantity")
    );
    assert!(
        defs.type_def("date")
            .and_then(|t| t.regex.as_deref())
            .is_some()
    );
    assert!(defs.type_def("SimpleQuantity").is_none());
    assert!(defs.is_concrete_resource("Observation"));
    assert!(!defs.is_concrete_resource("DomainResource"));
    assert!(!defs.is_concrete_resource("MetadataResource"));
    assert!(!defs.is_concrete_resource("HumanName"));
    assert!(defs.is_a("Patient", "Resource"));
    assert!(!defs.is_a("Bundle", "DomainResource"));
}

#[test]
fn elements_include_inherited_and_backbone_ones() {
    let defs = r4();
    let names: Vec<&str> = defs
        .elements("Patient")
        .expect("Patient elements")
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(
        &names[..8],
        [
            "id",
            "meta",
            "implicitRules",
            "language",
            "text",
            "contained",
            "extension",
            "modifierExtension"
        ]
    );
    assert!(names.contains(&"birthDate"));

    let contact = defs.element("Patient", "contact").expect("Patient.contact");
    assert!(contact.is_backbone);
    assert_eq!(contact.max, Max::Unbounded);
    assert_eq!(contact.fhirpath_types(), ["Patient.contact"]);
    let name = defs
        .element("Patient.contact", "name")
        .expect("Patient.contact.name");
    assert_eq!(name.path, "Patient.contact.name");
    assert_eq!(name.types[0].code, "HumanName");
    assert_eq!(name.max, Max::Bounded(1));
    assert!(
        defs.element("Patient.contact", "modifierExtension")
            .is_some()
    );

    let item = defs
        .element("Questionnaire.item", "item")
        .expect("Questionnaire.item.item");
    assert_eq!(
        item.content_reference.as_deref(),
        Some("Questionnaire.item")
    );
    assert_eq!(item.fhirpath_types(), ["Questionnaire.item"]);
    assert!(item.types.is_empty());
    assert!(
        defs.element("Questionnaire.item", "linkId")
            .is_some_and(|e| e.min == 1)
    );

    let status = defs
        .element("Observation", "status")
        .expect("Observation.status");
    assert_eq!((status.min, status.max), (1, Max::Bounded(1)));
    assert!(status.is_summary && status.is_modifier);

    let value = defs
        .element("Observation", "value")
        .expect("Observation.value[x]");
    assert!(value.choice);
    assert_eq!(value.path, "Observation.value[x]");
    let codes: Vec<&str> = value.types.iter().map(|t| t.code.as_str()).collect();
    assert_eq!(
        codes,
        [
            "Quantity",
            "CodeableConcept",
            "string",
            "boolean",
            "integer",
            "Range",
            "Ratio",
            "SampledData",
            "time",
            "dateTime",
            "Period"
        ]
    );
    let property = defs
        .property("Observation", "valueQuantity")
        .expect("valueQuantity");
    assert_eq!(property.element.name, "value");
    assert_eq!(property.ty.map(|t| t.code.as_str()), Some("Quantity"));
    assert!(defs.property("Observation", "value").is_none());
    assert!(defs.property("Observation", "valueFoo").is_none());

    let subject = defs
        .element("Observation", "subject")
        .expect("Observation.subject");
    assert_eq!(subject.types[0].code, "Reference");
    assert_eq!(
        subject.types[0].targets,
        ["Patient", "Group", "Device", "Location"]
    );
    let answer_value_set = defs
        .element("Questionnaire.item", "answerValueSet")
        .expect("answerValueSet");
    assert_eq!(answer_value_set.types[0].code, "canonical");
    assert_eq!(answer_value_set.types[0].targets, ["ValueSet"]);
}

#[test]
fn fhirpath_system_types_use_the_fhir_type_extension() {
    let defs = r4();
    // Element.id and Extension.url have FHIRPath system types in the snapshots, named by their
    // structuredefinition-fhir-type extension. Resource.id is the exception: 4.0.1 says
    // `string` there, but the logical id is an `id` (as the FHIRPath suite expects).
    assert_eq!(
        defs.element("Patient", "id").expect("id").types[0].code,
        "id"
    );
    assert_eq!(
        defs.element("HumanName", "id").expect("id").types[0].code,
        "string"
    );
    assert_eq!(
        defs.element("Extension", "url").expect("url").types[0].code,
        "uri"
    );
    assert_eq!(
        defs.element("date", "value").expect("value").types[0].code,
        "date"
    );
}

#[test]
fn every_element_type_and_content_reference_resolves() {
    let defs = r4();
    for t in defs.types() {
        let mut stack = vec![t.name.clone()];
        while let Some(owner) = stack.pop() {
            for e in defs.elements(&owner).expect("owner") {
                for ty in &e.types {
                    // xhtml.id alone has a FHIRPath system type without a FHIR type name.
                    let known = defs.type_def(&ty.code).is_some() || ty.code == "System.String";
                    assert!(known, "{}: {}", e.path, ty.code);
                    for target in &ty.targets {
                        assert!(
                            defs.type_def(target).is_some(),
                            "{}: target {target}",
                            e.path
                        );
                    }
                }
                if let Some(target) = &e.content_reference {
                    assert!(defs.elements(target).is_some(), "{}: {target}", e.path);
                }
                if e.is_backbone {
                    stack.push(e.path.clone());
                }
            }
        }
    }
}

#[test]
fn model_info_contract() {
    let defs = r4();
    let info = ModelInfo::element(defs, "Patient", "name").expect("Patient.name");
    assert_eq!(info.types, ["HumanName"]);
    assert!(info.many && !info.choice);
    let info = ModelInfo::element(defs, "Observation", "value").expect("Observation.value");
    assert!(info.choice && !info.many);
    assert_eq!(info.types.len(), 11);
    let info = ModelInfo::element(defs, "Patient", "contact").expect("Patient.contact");
    assert_eq!(info.types, ["Patient.contact"]);
    assert!(ModelInfo::element(defs, "Patient.contact", "telecom").is_some_and(|i| i.many));
    assert!(ModelInfo::element(defs, "Patient", "valueQuantity").is_none());
    assert!(ModelInfo::element(defs, "Nope", "id").is_none());

    assert_eq!(defs.base_type("Patient"), Some("DomainResource"));
    assert_eq!(defs.base_type("DomainResource"), Some("Resource"));
    assert_eq!(defs.base_type("Resource"), None);
    assert_eq!(defs.base_type("HumanName"), Some("Element"));
    assert_eq!(defs.base_type("code"), Some("string"));
    assert_eq!(defs.base_type("Patient.contact"), Some("BackboneElement"));
    assert_eq!(defs.base_type("Timing.repeat"), Some("Element"));
    assert_eq!(defs.base_type("Nope"), None);

    assert!(defs.is_type("Patient") && defs.is_type("HumanName") && defs.is_type("date"));
    assert!(!defs.is_type("Patient.contact") && !defs.is_type("System.String"));
    assert!(
        defs.is_resource("Patient")
            && defs.is_resource("Resource")
            && defs.is_resource("DomainResource")
    );
    assert!(!defs.is_resource("HumanName"));
    assert!(defs.is_primitive("code") && !defs.is_primitive("Coding"));
}

#[test]
fn search_parameters() {
    let defs = r4();
    let birthdate = defs
        .search_param("Patient", "birthdate")
        .expect("Patient.birthdate");
    assert_eq!(birthdate.kind, SearchParamType::Date);
    assert_eq!(
        birthdate.url,
        "http://hl7.org/fhir/SearchParameter/individual-birthdate"
    );
    assert_eq!(birthdate.base, ["Patient", "Person", "RelatedPerson"]);
    assert_eq!(
        birthdate.expression_for("Patient"),
        Some("Patient.birthDate")
    );
    assert_eq!(birthdate.expression_for("Person"), Some("Person.birthDate"));
    assert!(birthdate.comparators.iter().any(|c| c == "ge"));

    let id = defs
        .search_param("Observation", "_id")
        .expect("_id on every type");
    assert_eq!(id.base, ["Resource"]);
    assert_eq!(id.expression.as_deref(), Some("Resource.id"));
    assert!(defs.search_param("Observation", "_text").is_some());
    assert!(
        defs.search_param("Bundle", "_text").is_none(),
        "Bundle is not a DomainResource"
    );
    assert!(defs.search_param("Bundle", "_lastUpdated").is_some());

    let patient = defs
        .search_param("Observation", "patient")
        .expect("Observation.patient");
    assert_eq!(patient.kind, SearchParamType::Reference);
    assert_eq!(patient.targets, ["Patient"]);
    assert_eq!(
        patient.expression_for("Observation"),
        Some("Observation.subject.where(resolve() is Patient)")
    );

    let composite = defs
        .search_param("Observation", "code-value-quantity")
        .expect("code-value-quantity");
    assert_eq!(composite.kind, SearchParamType::Composite);
    assert_eq!(composite.components.len(), 2);
    assert_eq!(composite.components[1].expression, "value.as(Quantity)");
    assert_eq!(
        composite.components[0].definition,
        "http://hl7.org/fhir/SearchParameter/clinical-code"
    );

    let own: Vec<&str> = defs
        .search_params("Patient")
        .map(|p| p.code.as_str())
        .collect();
    assert!(own.contains(&"family") && own.contains(&"_id") && own.contains(&"_text"));
    assert!(
        defs.search_param_by_url("http://hl7.org/fhir/SearchParameter/clinical-patient")
            .is_some()
    );

    // Every base of every parameter is a resource type, and every multi-base parameter has
    // an expression of its own for each base.
    for p in defs.all_search_params() {
        for base in &p.base {
            assert!(defs.is_resource(base), "{}: base {base}", p.url);
            if p.expression.is_some() && p.base.len() > 1 {
                let own = p.expression_for(base).expect("expression");
                assert!(own.contains(base.as_str()), "{}: {own}", p.url);
            }
        }
    }
}

#[test]
fn patient_compartment() {
    let defs = r4();
    assert_eq!(
        defs.patient_compartment_params("AllergyIntolerance"),
        ["patient", "recorder", "asserter"]
    );
    assert_eq!(
        defs.patient_compartment_params("Observation"),
        ["subject", "performer"]
    );
    assert_eq!(defs.patient_compartment_params("Patient"), ["link"]);
    assert!(defs.patient_compartment_params("Organization").is_empty());
    for (ty, params) in defs.patient_compartment() {
        for code in params {
            assert!(defs.search_param(ty, code).is_some(), "{ty}.{code}");
        }
    }
}

#[test]
fn required_bindings_are_expanded_value_sets() {
    let defs = fhir::r4();
    let gender = defs.element("Patient", "gender").expect("element");
    let vs = defs.required_binding(gender).expect("bound required");
    assert_eq!(vs.url, "http://hl7.org/fhir/ValueSet/administrative-gender");
    assert!(vs.contains("http://hl7.org/fhir/administrative-gender", "female"));
    assert!(vs.contains_code("unknown"));
    assert!(!vs.contains_code("F"));
    assert_eq!(vs.len(), 4);
    // Inherited through a datatype and a backbone element.
    let use_ = defs.element("ContactPoint", "use").expect("element");
    assert!(defs.required_binding(use_).is_some());
    let status = defs
        .element("Condition", "clinicalStatus")
        .expect("element");
    assert!(defs.required_binding(status).expect("bound").contains(
        "http://terminology.hl7.org/CodeSystem/condition-clinical",
        "active"
    ));
    // Not enumerable from the definitions (BCP-13), or not required: no binding to check.
    let content_type = defs.element("Attachment", "contentType").expect("element");
    assert!(defs.required_binding(content_type).is_none());
    let marital = defs.element("Patient", "maritalStatus").expect("element");
    assert!(defs.required_binding(marital).is_none());
    // A value set including whole code systems (the resource types).
    let types = defs
        .value_set("http://hl7.org/fhir/ValueSet/resource-types")
        .expect("expanded");
    assert!(types.contains_code("Patient") && types.contains_code("VisionPrescription"));
}
