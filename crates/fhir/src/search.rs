//! Search parameters of the FHIR R4 specification (`search-parameters.json`), as parsed from
//! `generated/search_parameters.txt`.
//!
//! Several parameters are defined once for many resource types (`clinical-patient` has 30
//! bases and an expression that is a union over all of them); [`SearchParam::expression_for`]
//! gives the part of the expression that applies to one type, so an indexer does not evaluate
//! thirty branches that cannot match.

use std::collections::HashMap;
use std::fmt;

use crate::definitions::{data_lines, split_list};

/// `SearchParameter.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SearchParamType {
    /// `number`
    Number,
    /// `date`
    Date,
    /// `string`
    String,
    /// `token`
    Token,
    /// `reference`
    Reference,
    /// `composite`
    Composite,
    /// `quantity`
    Quantity,
    /// `uri`
    Uri,
    /// `special`
    Special,
}

impl SearchParamType {
    /// The code as written in FHIR (`"token"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Number => "number",
            Self::Date => "date",
            Self::String => "string",
            Self::Token => "token",
            Self::Reference => "reference",
            Self::Composite => "composite",
            Self::Quantity => "quantity",
            Self::Uri => "uri",
            Self::Special => "special",
        }
    }

    fn parse(code: &str) -> Option<Self> {
        Some(match code {
            "number" => Self::Number,
            "date" => Self::Date,
            "string" => Self::String,
            "token" => Self::Token,
            "reference" => Self::Reference,
            "composite" => Self::Composite,
            "quantity" => Self::Quantity,
            "uri" => Self::Uri,
            "special" => Self::Special,
            _ => return None,
        })
    }
}

impl fmt::Display for SearchParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One component of a composite search parameter.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Component {
    /// The canonical URL of the component's own search parameter.
    pub definition: String,
    /// FHIRPath, evaluated on each result of the composite's expression.
    pub expression: String,
}

/// One search parameter.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SearchParam {
    /// The code used in the query string (`"birthdate"`, `"_id"`).
    pub code: String,
    /// The canonical URL (`http://hl7.org/fhir/SearchParameter/individual-birthdate`).
    pub url: String,
    /// The resource types it applies to (`["Patient", "Person", "RelatedPerson"]`).
    pub base: Vec<String>,
    /// Its type.
    pub kind: SearchParamType,
    /// The FHIRPath expression extracting the values, for all bases together; `None` for the
    /// three parameters the spec leaves to the server (`_text`, `_content`, `_query`).
    pub expression: Option<String>,
    /// For reference parameters: the resource types a value may point to.
    pub targets: Vec<String>,
    /// The comparators allowed (`eq`, `ne`, `gt`, ...); empty when not stated.
    pub comparators: Vec<String>,
    /// The modifiers allowed; empty when not stated (R4 core states none).
    pub modifiers: Vec<String>,
    /// For composite parameters, their components in order.
    pub components: Vec<Component>,
    /// For parameters with several bases: (base, the union branches of `expression` rooted at it).
    base_expressions: Vec<(String, String)>,
}

impl SearchParam {
    /// The expression to evaluate on a `resource_type` resource: for a parameter with several
    /// bases only the branches rooted at that type (`Patient.birthDate` out of
    /// `Patient.birthDate | Person.birthDate | RelatedPerson.birthDate`), else `expression`.
    pub fn expression_for(&self, resource_type: &str) -> Option<&str> {
        self.base_expressions
            .iter()
            .find(|(base, _)| base == resource_type)
            .map(|(_, expression)| expression.as_str())
            .or(self.expression.as_deref())
    }
}

/// One base's parameters: by code, and in definition order (indexes into `params`).
#[derive(Debug, Default)]
struct BaseIndex {
    by_code: HashMap<Box<str>, u32>,
    order: Vec<u32>,
}

/// All search parameters, indexed by (base, code) and by URL.
#[derive(Debug)]
pub(crate) struct SearchIndex {
    pub(crate) params: Vec<SearchParam>,
    by_base: HashMap<Box<str>, BaseIndex>,
    by_url: HashMap<Box<str>, u32>,
}

impl SearchIndex {
    pub(crate) fn get(&self, base: &str, code: &str) -> Option<&SearchParam> {
        self.by_base
            .get(base)?
            .by_code
            .get(code)
            .map(|&i| &self.params[i as usize])
    }

    pub(crate) fn for_base<'a>(&'a self, base: &str) -> impl Iterator<Item = &'a SearchParam> + 'a {
        self.by_base
            .get(base)
            .map(|index| index.order.as_slice())
            .unwrap_or(&[])
            .iter()
            .map(|&i| &self.params[i as usize])
    }

    pub(crate) fn by_url(&self, url: &str) -> Option<&SearchParam> {
        self.by_url.get(url).map(|&i| &self.params[i as usize])
    }

    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let mut params: Vec<SearchParam> = Vec::new();
        for (n, line) in data_lines(text) {
            let err = |msg: &str| format!("search_parameters.txt:{n}: {msg}");
            let fields: Vec<&str> = line.split('\t').collect();
            match fields.as_slice() {
                [
                    "S",
                    code,
                    kind,
                    url,
                    bases,
                    targets,
                    comparators,
                    modifiers,
                    expression,
                ] => {
                    params.push(SearchParam {
                        code: (*code).to_owned(),
                        url: (*url).to_owned(),
                        base: split_list(bases),
                        kind: SearchParamType::parse(kind).ok_or_else(|| err("unknown type"))?,
                        expression: (!expression.is_empty()).then(|| (*expression).to_owned()),
                        targets: split_list(targets),
                        comparators: split_list(comparators),
                        modifiers: split_list(modifiers),
                        components: Vec::new(),
                        base_expressions: Vec::new(),
                    });
                }
                ["B", base, expression] => params
                    .last_mut()
                    .ok_or_else(|| err("B before S"))?
                    .base_expressions
                    .push(((*base).to_owned(), (*expression).to_owned())),
                ["C", definition, expression] => params
                    .last_mut()
                    .ok_or_else(|| err("C before S"))?
                    .components
                    .push(Component {
                        definition: (*definition).to_owned(),
                        expression: (*expression).to_owned(),
                    }),
                _ => return Err(err("bad line")),
            }
        }
        let mut by_base: HashMap<Box<str>, BaseIndex> = HashMap::new();
        let mut by_url = HashMap::new();
        for (i, param) in params.iter().enumerate() {
            let i = i as u32;
            by_url.insert(param.url.as_str().into(), i);
            for base in &param.base {
                let index = by_base.entry(base.as_str().into()).or_default();
                if index
                    .by_code
                    .insert(param.code.as_str().into(), i)
                    .is_some()
                {
                    return Err(format!("duplicate search parameter {base}.{}", param.code));
                }
                index.order.push(i);
            }
        }
        Ok(SearchIndex {
            params,
            by_base,
            by_url,
        })
    }
}
