//! [`SearchQuery`] -> SQL, one text for both backends (`$n` placeholders; the SQLite backend
//! rewrites them).
//!
//! Shape: every filter is `alias.rid [NOT] IN (SELECT x.rid FROM idx_<type> x WHERE
//! x.res_type = ? AND x.param = ? AND <value conditions>)`, so that each is answered from the
//! `(res_type, param, value)` index of its table; composites join their components' rows on
//! `(rid, grp)`; chains, `_has` and compartments go through `idx_reference`. Sorted pages wrap
//! the match in a subquery that computes each sort key (`MIN`/`MAX` over the key's index rows)
//! with a "missing" flag so that resources without a value sort last in either direction, and
//! page with a keyset condition on `(keys..., rid)`. A person-level reference (`:mdm`, a
//! linked compartment) compares `target_id` with the person's Patient ids, a subquery over the
//! EMPI golden records' `link` rows (`linked_ids`), so it is as current as the links.
//!
//! A restricted caller's access policy ([`Restriction`]) adds the conditions of
//! [`crate::access`] to every resource alias written here (the page, its count, conditional
//! matching, chains, `_has`), so no hidden resource matches, is counted or moves a cursor; when
//! no filter is as selective as a reference, the caller's compartments drive the query.
//! Without a restriction nothing is added.

use std::collections::BTreeMap;

use crate::access;
use crate::context::Restriction;
use crate::index::ParamType;
use crate::sql::{Sql, SqlParam, VERSION_COLUMNS};
use crate::time;

use super::{
    Cursor, DateCondition, Filter, GOLDEN_TAG_CODE, GOLDEN_TAG_SYSTEM, KeyValue, NumberCondition,
    Prefix, SearchQuery, SortKey, StringMode, TokenMatch, UriMode, ValueMatch,
};

/// The highest Unicode scalar: `v <= s < v + MAX_CHAR` is "starts with v" in code-point order.
const MAX_CHAR: char = '\u{10FFFF}';

/// The SQL type of a sort key column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyType {
    Int,
    Float,
    Text,
}

/// A page query, and the types of the key columns that follow the resource columns.
#[derive(Debug)]
pub(crate) struct PageSql {
    pub sql: Sql,
    /// Per sort key: the missing flag (always `Int`) then the key; empty when unsorted.
    pub keys: Vec<KeyType>,
}

struct Builder<'s> {
    sql: &'s mut Sql,
    aliases: usize,
    /// The query's derived parameters ([`SearchQuery::stored_as`]).
    stored_as: &'s BTreeMap<(String, String), Vec<String>>,
    /// The caller's restriction, applied to every resource alias; `None`: unrestricted.
    access: Option<&'s Restriction>,
}

/// The conditions (over `resource r`) of a query, without paging.
pub(crate) fn where_clause(q: &SearchQuery, access: Option<&Restriction>, sql: &mut Sql) -> String {
    let mut b = Builder {
        sql,
        aliases: 0,
        stored_as: &q.stored_as,
        access,
    };
    b.resource(q.resource_type.as_deref(), &q.types, &q.filters, "r")
        .join(" AND ")
}

/// `SELECT COUNT(*)` of a query.
pub(crate) fn count_sql(q: &SearchQuery, access: Option<&Restriction>) -> Sql {
    let mut sql = Sql::default();
    let w = where_clause(q, access, &mut sql);
    sql.text = format!("SELECT COUNT(*) FROM resource r WHERE {w}");
    sql
}

/// The match query of a conditional operation: `(type, id)` of up to `limit` matches.
pub(crate) fn matches_sql(q: &SearchQuery, limit: usize, access: Option<&Restriction>) -> Sql {
    let mut sql = Sql::default();
    let w = where_clause(q, access, &mut sql);
    let limit = sql.bind(SqlParam::Int(limit as i64));
    sql.text = format!(
        "SELECT r.res_type, r.res_id FROM resource r WHERE {w} ORDER BY r.rid LIMIT {limit}"
    );
    sql
}

/// One page (`limit` rows after the cursor): `rid`, the version columns, then the key columns.
pub(crate) fn page_sql(q: &SearchQuery, limit: usize, access: Option<&Restriction>) -> PageSql {
    let mut sql = Sql::default();
    let mut b = Builder {
        sql: &mut sql,
        aliases: 0,
        stored_as: &q.stored_as,
        access,
    };
    let conds = b.resource(q.resource_type.as_deref(), &q.types, &q.filters, "r");
    if q.sort.is_empty() {
        let mut w = conds.join(" AND ");
        if let Some(after) = &q.after {
            w = format!("{w} AND r.rid > {}", b.int(after.rid));
        }
        let limit = b.int(limit as i64);
        sql.text = format!(
            "SELECT r.rid, {VERSION_COLUMNS} FROM resource r JOIN resource_version v ON v.seq = r.seq \
             WHERE {w} ORDER BY r.rid LIMIT {limit}"
        );
        return PageSql {
            sql,
            keys: Vec::new(),
        };
    }
    let mut columns = Vec::new();
    let mut keys = Vec::new();
    let mut order = Vec::new();
    let mut outer_cols = Vec::new();
    for (i, key) in q.sort.iter().enumerate() {
        let (expr, ty) = b.sort_expr(q.resource_type.as_deref(), key, "r");
        let default = match ty {
            KeyType::Int => "0",
            KeyType::Float => "0.0",
            KeyType::Text => "''",
        };
        columns.push(format!(
            "CAST(CASE WHEN {expr} IS NULL THEN 1 ELSE 0 END AS BIGINT) AS m{i}, COALESCE({expr}, {default}) AS k{i}"
        ));
        keys.extend([KeyType::Int, ty]);
        order.push((format!("s.m{i}"), false));
        order.push((format!("s.k{i}"), key.descending));
        outer_cols.push(format!("s.m{i}, s.k{i}"));
    }
    let mut outer_where = String::new();
    if let Some(after) = &q.after
        && after.keys.len() == order.len()
    {
        outer_where = format!("WHERE {}", b.keyset(&order, after));
    }
    let limit = b.int(limit as i64);
    let order_by: Vec<String> = order
        .iter()
        .map(|(c, desc)| {
            if *desc {
                format!("{c} DESC")
            } else {
                c.clone()
            }
        })
        .collect();
    sql.text = format!(
        "SELECT s.rid, {VERSION_COLUMNS}, {} FROM (SELECT r.rid AS rid, r.seq AS seq, {} \
         FROM resource r WHERE {}) s JOIN resource_version v ON v.seq = s.seq {outer_where} \
         ORDER BY {}, s.rid LIMIT {limit}",
        outer_cols.join(", "),
        columns.join(", "),
        conds.join(" AND "),
        order_by.join(", ")
    );
    PageSql { sql, keys }
}

impl Builder<'_> {
    fn text(&mut self, v: &str) -> String {
        self.sql.bind(SqlParam::Text(v.to_owned()))
    }

    /// A resource type or parameter name compared with an index table's `res_type` or
    /// `param` (numbered on SQLite: `SqlParam::Name`).
    fn name(&mut self, v: &str) -> String {
        self.sql.bind(SqlParam::Name(v.to_owned()))
    }

    fn names(&mut self, values: &[String]) -> String {
        self.sql.bind_list(values, SqlParam::Name)
    }

    fn int(&mut self, v: i64) -> String {
        self.sql.bind(SqlParam::Int(v))
    }

    fn float(&mut self, v: f64) -> String {
        self.sql.bind(SqlParam::Float(v))
    }

    fn key(&mut self, v: &KeyValue) -> String {
        match v {
            KeyValue::Int(i) => self.int(*i),
            KeyValue::Float(f) => self.float(*f),
            KeyValue::Text(s) => self.text(s),
        }
    }

    fn alias(&mut self, prefix: &str) -> String {
        self.aliases += 1;
        format!("{prefix}{}", self.aliases)
    }

    fn list(&mut self, values: &[String]) -> String {
        self.sql.bind_list(values, SqlParam::Text)
    }

    /// The Patient ids of the person of Patient `id` (a bound parameter), as a subquery: `id`,
    /// the current golden Patients (tagged [`GOLDEN_TAG_SYSTEM`]`|`[`GOLDEN_TAG_CODE`]) that
    /// are `id` or whose `link` names it, and every Patient their `link` names. Read from the
    /// stored links when the query runs, so an unlink or unmerge shows at once. Only golden
    /// records' links count: a source's own `link` (replaced-by, seealso) joins no one; nor
    /// does a retired golden record (`active` false, merged away: its one link is
    /// `replaced-by` the golden record that now lists its sources).
    fn linked_ids(&mut self, id: &str) -> String {
        let golden = |b: &mut Self| {
            let (g, l, k, n) = (b.alias("g"), b.alias("l"), b.alias("k"), b.alias("n"));
            let system = b.text(GOLDEN_TAG_SYSTEM);
            let code = b.text(GOLDEN_TAG_CODE);
            let (patient, link) = (b.name("Patient"), b.name("link"));
            let (tag, active) = (b.name("_tag"), b.name("active"));
            format!(
                "SELECT {g}.rid FROM resource {g} WHERE {g}.res_type = 'Patient' AND {g}.deleted = FALSE \
                 AND ({g}.res_id = {id} OR {g}.rid IN (SELECT {l}.rid FROM idx_reference {l} \
                 WHERE {l}.res_type = {patient} AND {l}.param = {link} \
                 AND {l}.target_type = 'Patient' AND {l}.target_id = {id})) \
                 AND EXISTS (SELECT 1 FROM idx_token {k} WHERE {k}.rid = {g}.rid \
                 AND {k}.res_type = {patient} AND {k}.param = {tag} \
                 AND {k}.system = {system} AND {k}.code = {code}) \
                 AND NOT EXISTS (SELECT 1 FROM idx_token {n} WHERE {n}.rid = {g}.rid \
                 AND {n}.res_type = {patient} AND {n}.param = {active} AND {n}.code = 'false')"
            )
        };
        let (r, l) = (self.alias("g"), self.alias("l"));
        let goldens = golden(self);
        let listed = golden(self);
        let (patient, link) = (self.name("Patient"), self.name("link"));
        format!(
            "SELECT CAST({id} AS TEXT) UNION SELECT {r}.res_id FROM resource {r} WHERE {r}.rid IN ({goldens}) \
             UNION SELECT {l}.target_id FROM idx_reference {l} WHERE {l}.rid IN ({listed}) \
             AND {l}.res_type = {patient} AND {l}.param = {link} AND {l}.target_type = 'Patient'"
        )
    }

    /// The conditions, ANDed by the caller, that a current resource (alias `a`) matches
    /// (and, for a restricted caller, may see).
    fn resource(
        &mut self,
        resource_type: Option<&str>,
        types: &[String],
        filters: &[Filter],
        a: &str,
    ) -> Vec<String> {
        let typed = resource_type.is_some();
        let mut driver = driver(filters, typed);
        // A caller's allowed compartments drive unless an `_id` list pins the rows or a
        // filter is as selective as a reference lookup: they are such a lookup, and bound
        // what is scanned to the caller's patients however broad the other filters are.
        let access_drives = self.access.is_some_and(|r| r.patients.is_some())
            && !pinned_by_id(filters, typed)
            && driver.is_none_or(|i| filter_rank(&filters[i]).is_none_or(|r| r > 1));
        if access_drives {
            driver = None;
        }
        let mut conds = vec![format!("{a}.deleted = FALSE")];
        if let Some(t) = resource_type {
            // A driving subquery already restricts the type (and a type condition here would
            // tempt SQLite's planner into scanning the type instead).
            if driver.is_none() && !access_drives {
                conds.push(format!("{a}.res_type = {}", self.text(t)));
            }
        } else if !types.is_empty() {
            conds.push(format!("{a}.res_type IN ({})", self.list(types)));
        }
        if let Some(r) = self.access {
            let aliases = access::Aliases {
                member: self.alias("z"),
                owner: self.alias("o"),
                label: self.alias("w"),
            };
            conds.extend(access::conditions(
                self.sql,
                r,
                resource_type,
                types,
                a,
                &aliases,
                access_drives,
            ));
        }
        for (i, f) in filters.iter().enumerate() {
            conds.push(self.filter(resource_type, f, a, driver != Some(i)));
        }
        conds
    }

    /// `x.rid = a.rid AND x.param = ?`: an index-table alias correlated with resource alias `a`
    /// (answered from the `rid` index).
    fn correlated(&mut self, resource_type: Option<&str>, param: &str, x: &str, a: &str) -> String {
        let is = self.param_is(resource_type, param, x);
        format!("{x}.rid = {a}.rid AND {is}")
    }

    /// `x.res_type = ? AND x.param = ?` for an index-table alias.
    fn owner(&mut self, resource_type: Option<&str>, param: &str, x: &str) -> String {
        let is = self.param_is(resource_type, param, x);
        match resource_type {
            Some(t) => format!("{x}.res_type = {} AND {is}", self.name(t)),
            None => is,
        }
    }

    /// `x.param = ?` for the rows stored under `name` (a parameter code, or one of the names
    /// derived from it: `p$i`, `p:canonical`, `p:identifier`); for a derived parameter
    /// (`combo-code`), `x.param IN (...)` over the same names of the parameters storing its
    /// rows (`code`, `component-code`).
    fn param_is(&mut self, resource_type: Option<&str>, name: &str, x: &str) -> String {
        let (code, suffix) = name.split_at(name.find(['$', ':']).unwrap_or(name.len()));
        let mut names: Vec<String> = self
            .stored_as
            .iter()
            .filter(|((t, c), _)| c == code && resource_type.is_none_or(|rt| rt == t))
            .flat_map(|(_, parts)| parts.iter().map(|p| format!("{p}{suffix}")))
            .collect();
        names.sort();
        names.dedup();
        match names.as_slice() {
            [] => format!("{x}.param = {}", self.name(name)),
            [one] => format!("{x}.param = {}", self.name(one)),
            many => format!("{x}.param IN ({})", self.names(many)),
        }
    }

    /// One filter over resource alias `a`: as `a.rid IN (subquery)` when it drives the query,
    /// otherwise (`probe`) as a correlated `EXISTS` checked on each candidate.
    fn filter(&mut self, resource_type: Option<&str>, f: &Filter, a: &str, probe: bool) -> String {
        match f {
            Filter::Id { ids, negate } => format!(
                "{a}.res_id {}IN ({})",
                if *negate { "NOT " } else { "" },
                self.list(ids)
            ),
            Filter::LastUpdated(conds) => {
                let alts: Vec<String> = conds
                    .iter()
                    .map(|c| {
                        self.date_cond(
                            &format!("{a}.last_updated"),
                            &format!("({a}.last_updated + 1)"),
                            c,
                        )
                    })
                    .collect();
                format!("({})", alts.join(" OR "))
            }
            Filter::Param {
                param,
                values,
                negate,
            } => {
                if values.is_empty() {
                    return if *negate { "1 = 1" } else { "1 = 0" }.to_owned();
                }
                if probe {
                    let exists: Vec<String> = values
                        .iter()
                        .map(|v| {
                            format!(
                                "EXISTS ({})",
                                self.value_subquery(resource_type, param, v, Some(a))
                            )
                        })
                        .collect();
                    return format!(
                        "{}({})",
                        if *negate { "NOT " } else { "" },
                        exists.join(" OR ")
                    );
                }
                let subqueries: Vec<String> = values
                    .iter()
                    .map(|v| self.value_subquery(resource_type, param, v, None))
                    .collect();
                format!(
                    "{a}.rid {}IN ({})",
                    if *negate { "NOT " } else { "" },
                    subqueries.join(" UNION ")
                )
            }
            Filter::Missing {
                param,
                kind,
                missing,
            } => {
                if *kind == ParamType::Composite {
                    return self.composite_presence(
                        resource_type,
                        &format!("{param}$0"),
                        *missing,
                        a,
                    );
                }
                let x = self.alias("x");
                let table = table_of(*kind);
                let owner = self.correlated(resource_type, param, &x, a);
                format!(
                    "{}EXISTS (SELECT 1 FROM {table} {x} WHERE {owner})",
                    if *missing { "NOT " } else { "" }
                )
            }
            Filter::Chain { param, targets } => {
                let x = self.alias("x");
                let owner = if probe {
                    self.correlated(resource_type, param, &x, a)
                } else {
                    self.owner(resource_type, param, &x)
                };
                let alts: Vec<String> = targets
                    .iter()
                    .map(|(target, inner)| {
                        let t = self.alias("t");
                        let conds = self.resource(Some(target), &[], inner, &t).join(" AND ");
                        format!(
                            "({x}.target_type = {} AND {x}.target_id IN (SELECT {t}.res_id FROM resource {t} WHERE {conds}))",
                            self.text(target)
                        )
                    })
                    .collect();
                if probe {
                    format!(
                        "EXISTS (SELECT 1 FROM idx_reference {x} WHERE {owner} AND ({}))",
                        alts.join(" OR ")
                    )
                } else {
                    format!(
                        "{a}.rid IN (SELECT {x}.rid FROM idx_reference {x} WHERE {owner} AND ({}))",
                        alts.join(" OR ")
                    )
                }
            }
            Filter::Has {
                source_type,
                param,
                inner,
            } => {
                let x = self.alias("x");
                let s = self.alias("s");
                let owner = self.owner(Some(source_type), param, &x);
                let this = match resource_type {
                    Some(t) => format!(" AND {x}.target_type = {}", self.text(t)),
                    None => String::new(),
                };
                let conds = self
                    .resource(Some(source_type), &[], inner, &s)
                    .join(" AND ");
                format!(
                    "{a}.res_id IN (SELECT {x}.target_id FROM idx_reference {x} WHERE {owner}{this} \
                     AND {x}.rid IN (SELECT {s}.rid FROM resource {s} WHERE {conds}))"
                )
            }
            Filter::Compartment {
                owner_type,
                owner_id,
                params,
                include_owner,
                referenced,
                linked,
            } => {
                let x = self.alias("x");
                let id = self.text(owner_id);
                let ty = self.text(owner_type);
                // The owner's id, or (linked) every Patient id of its person.
                let is_owner = |b: &mut Self, column: &str| {
                    if *linked && owner_type == "Patient" {
                        format!("{column} IN ({})", b.linked_ids(&id))
                    } else {
                        format!("{column} = {id}")
                    }
                };
                let members: Vec<&(String, Vec<String>)> = params
                    .iter()
                    .filter(|(t, _)| resource_type.is_none_or(|rt| rt == t))
                    .collect();
                // One type (a compartment search): its parameters as a list. Every type
                // (`$everything`): one lookup in a table of (type, parameter) pairs, not an
                // OR of ~70 terms per reference row (measured: 2.7 times as fast on a
                // patient with 7,000 reference rows).
                let by_type: Vec<String> = match members.as_slice() {
                    [] => Vec::new(),
                    [(t, ps)] => vec![format!(
                        "({x}.res_type = {} AND {x}.param IN ({}))",
                        self.name(t),
                        self.names(ps)
                    )],
                    many => {
                        let pairs: Vec<String> = many
                            .iter()
                            .flat_map(|(t, ps)| ps.iter().map(move |p| (t, p)))
                            .map(|(t, p)| format!("({}, {})", self.name(t), self.name(p)))
                            .collect();
                        vec![format!(
                            "({x}.res_type, {x}.param) IN (VALUES {})",
                            pairs.join(", ")
                        )]
                    }
                };
                let owner_row = *include_owner && resource_type.is_none_or(|t| t == owner_type);
                // The rids of the members (of `resource_type`), and the owner's.
                let member_rids = (!by_type.is_empty()).then(|| {
                    let target = is_owner(self, &format!("{x}.target_id"));
                    format!(
                        "SELECT {x}.rid FROM idx_reference {x} WHERE {target} \
                         AND {x}.target_type = {ty} AND ({})",
                        by_type.join(" OR ")
                    )
                });
                let owner_rid = include_owner.then(|| {
                    let o = self.alias("o");
                    let owner = is_owner(self, &format!("{o}.res_id"));
                    format!(
                        "SELECT {o}.rid FROM resource {o} WHERE {o}.res_type = {ty} AND {owner}"
                    )
                });
                // What refers onwards: the members and the owner.
                let sources: Vec<String> = member_rids.iter().chain(&owner_rid).cloned().collect();
                // What they refer to is added only when it is of a type outside the
                // compartment (practitioners, organisations, locations, medications): a
                // resource of a compartment type is there as a member or not at all (another
                // patient's encounter, a linked patient), and each page would otherwise join
                // every reference of the whole compartment.
                // A caller confined to some patients sees no type outside the compartment:
                // nothing to add (one consent restricts sees them all).
                let referenced = *referenced && self.access.is_none_or(|r| r.patients.is_none());
                // Under consent, only what the caller may see refers onwards: a withheld
                // resource's references are withheld data too.
                let sources = match self.access {
                    Some(r) if referenced && !sources.is_empty() && !r.withheld.is_empty() => {
                        let v = self.alias("v");
                        let aliases = access::Aliases {
                            member: self.alias("z"),
                            owner: self.alias("o"),
                            label: self.alias("w"),
                        };
                        let mut conds = vec![format!("{v}.rid IN ({})", sources.join(" UNION "))];
                        conds.extend(access::conditions(
                            self.sql,
                            r,
                            None,
                            &[],
                            &v,
                            &aliases,
                            false,
                        ));
                        vec![format!(
                            "SELECT {v}.rid FROM resource {v} WHERE {}",
                            conds.join(" AND ")
                        )]
                    }
                    _ => sources,
                };
                let outside = if referenced {
                    let types: Vec<String> = params
                        .iter()
                        .map(|(t, _)| t.clone())
                        .chain([owner_type.clone()])
                        .collect();
                    self.list(&types)
                } else {
                    String::new()
                };
                let mut alts = Vec::new();
                if probe {
                    if !by_type.is_empty() {
                        let target = is_owner(self, &format!("{x}.target_id"));
                        alts.push(format!(
                            "EXISTS (SELECT 1 FROM idx_reference {x} WHERE {x}.rid = {a}.rid \
                             AND {target} AND {x}.target_type = {ty} AND ({}))",
                            by_type.join(" OR ")
                        ));
                    }
                    if owner_row {
                        let owner = is_owner(self, &format!("{a}.res_id"));
                        alts.push(format!("({a}.res_type = {ty} AND {owner})"));
                    }
                    if referenced && !sources.is_empty() {
                        let y = self.alias("y");
                        alts.push(format!(
                            "({a}.res_type NOT IN ({outside}) AND EXISTS (SELECT 1 FROM idx_reference {y} \
                             WHERE {y}.target_type = {a}.res_type AND {y}.target_id = {a}.res_id \
                             AND {y}.rid IN ({})))",
                            sources.join(" UNION ")
                        ));
                    }
                } else {
                    // One rid list for the members, the owner and what they refer to, so
                    // that it drives the query.
                    let mut rids: Vec<String> = member_rids.into_iter().collect();
                    if owner_row && let Some(owner) = owner_rid {
                        rids.push(owner);
                    }
                    if referenced && !sources.is_empty() {
                        let (y, t) = (self.alias("y"), self.alias("t"));
                        // A driving list is the only type condition (see `resource`).
                        let of_type = match resource_type {
                            Some(rt) => format!(" AND {t}.res_type = {}", self.text(rt)),
                            None => String::new(),
                        };
                        rids.push(format!(
                            "SELECT {t}.rid FROM idx_reference {y} JOIN resource {t} \
                             ON {t}.res_type = {y}.target_type AND {t}.res_id = {y}.target_id \
                             WHERE {y}.rid IN ({}) AND {y}.target_type NOT IN ({outside}){of_type}",
                            sources.join(" UNION ")
                        ));
                    }
                    if !rids.is_empty() {
                        alts.push(format!("{a}.rid IN ({})", rids.join(" UNION ")));
                    }
                }
                if alts.is_empty() {
                    "1 = 0".to_owned()
                } else {
                    format!("({})", alts.join(" OR "))
                }
            }
        }
    }

    /// A composite parameter is present when its first component has a row in any table.
    fn composite_presence(
        &mut self,
        resource_type: Option<&str>,
        param: &str,
        missing: bool,
        a: &str,
    ) -> String {
        let subqueries: Vec<String> = [
            "idx_token",
            "idx_string",
            "idx_reference",
            "idx_date",
            "idx_number",
            "idx_quantity",
            "idx_uri",
        ]
        .iter()
        .map(|table| {
            let x = self.alias("x");
            let owner = self.correlated(resource_type, param, &x, a);
            format!("EXISTS (SELECT 1 FROM {table} {x} WHERE {owner})")
        })
        .collect();
        format!(
            "{}({})",
            if missing { "NOT " } else { "" },
            subqueries.join(" OR ")
        )
    }

    /// `SELECT rid` of the index rows matching one value.
    /// With `correlate` (a resource alias) the subquery selects `1` for that resource only.
    fn value_subquery(
        &mut self,
        resource_type: Option<&str>,
        param: &str,
        value: &ValueMatch,
        correlate: Option<&str>,
    ) -> String {
        let select = |x: &str| match correlate {
            Some(_) => "1".to_owned(),
            None => format!("{x}.rid"),
        };
        if let ValueMatch::Composite(parts) = value {
            let mut from = Vec::new();
            let mut conds = Vec::new();
            let first = self.alias("c");
            for (i, part) in parts.iter().enumerate() {
                let c = if i == 0 {
                    first.clone()
                } else {
                    self.alias("c")
                };
                let (table, name, cond) = self.atom(&format!("{param}${i}"), part, &c);
                let owner = match correlate {
                    Some(a) if i == 0 => self.correlated(resource_type, &name, &c, a),
                    Some(_) => self.param_is(resource_type, &name, &c),
                    None => self.owner(resource_type, &name, &c),
                };
                if i == 0 {
                    from.push(format!("{table} {c}"));
                } else {
                    from.push(format!(
                        "JOIN {table} {c} ON {c}.rid = {first}.rid AND {c}.grp = {first}.grp"
                    ));
                }
                conds.push(format!("{owner} AND {cond}"));
            }
            return format!(
                "SELECT {} FROM {} WHERE {}",
                select(&first),
                from.join(" "),
                conds.join(" AND ")
            );
        }
        let x = self.alias("x");
        let (table, name, cond) = self.atom(param, value, &x);
        let owner = match correlate {
            Some(a) => self.correlated(resource_type, &name, &x, a),
            None => self.owner(resource_type, &name, &x),
        };
        format!(
            "SELECT {} FROM {table} {x} WHERE {owner} AND {cond}",
            select(&x)
        )
    }

    /// The table, stored parameter name and condition (over alias `x`) of one simple value.
    fn atom(&mut self, param: &str, value: &ValueMatch, x: &str) -> (&'static str, String, String) {
        match value {
            ValueMatch::String { value, mode } => {
                let cond = match mode {
                    StringMode::Exact => format!("{x}.value_exact = {}", self.text(value)),
                    StringMode::StartsWith if value.is_empty() => "1 = 1".to_owned(),
                    StringMode::StartsWith => {
                        let lo = self.text(value);
                        let hi = self.text(&format!("{value}{MAX_CHAR}"));
                        format!("{x}.value_norm >= {lo} AND {x}.value_norm < {hi}")
                    }
                    StringMode::Contains => format!(
                        "{x}.value_norm LIKE {} ESCAPE '\\'",
                        self.text(&format!("%{}%", like_escape(value)))
                    ),
                };
                ("idx_string", param.to_owned(), cond)
            }
            ValueMatch::Token(t) => ("idx_token", param.to_owned(), self.token_cond(t, x)),
            ValueMatch::TokenText(text) => {
                let pattern = self.text(&format!("%{}%", like_escape(text)));
                (
                    "idx_token",
                    param.to_owned(),
                    format!("LOWER({x}.display) LIKE {pattern} ESCAPE '\\'"),
                )
            }
            ValueMatch::Reference {
                target_type,
                id,
                url,
            } => {
                let mut conds = Vec::new();
                if let Some(u) = url {
                    conds.push(format!("{x}.url = {}", self.text(u)));
                }
                if let Some(id) = id {
                    conds.push(format!("{x}.target_id = {}", self.text(id)));
                }
                if let Some(t) = target_type {
                    conds.push(format!("{x}.target_type = {}", self.text(t)));
                }
                if conds.is_empty() {
                    conds.push("1 = 1".into());
                }
                ("idx_reference", param.to_owned(), conds.join(" AND "))
            }
            ValueMatch::Linked { id } => {
                let id = self.text(id);
                let ids = self.linked_ids(&id);
                (
                    "idx_reference",
                    param.to_owned(),
                    format!("{x}.target_type = 'Patient' AND {x}.target_id IN ({ids})"),
                )
            }
            ValueMatch::ReferenceIdentifier(t) => (
                "idx_token",
                format!("{param}:identifier"),
                self.token_cond(t, x),
            ),
            ValueMatch::Date(d) => (
                "idx_date",
                param.to_owned(),
                self.date_cond(&format!("{x}.lo"), &format!("{x}.hi"), d),
            ),
            ValueMatch::Number(n) => (
                "idx_number",
                param.to_owned(),
                self.number_cond(&format!("{x}.value"), n),
            ),
            ValueMatch::Quantity(q) => {
                let mut conds = vec![self.number_cond(&format!("{x}.value"), &q.number)];
                let name = if q.canonical {
                    if let Some(code) = &q.code {
                        conds.push(format!("{x}.code = {}", self.text(code)));
                    }
                    format!("{param}:canonical")
                } else {
                    if let Some(s) = &q.system {
                        conds.push(format!("{x}.system = {}", self.text(s)));
                    }
                    if let Some(code) = &q.code {
                        let c = self.text(code);
                        conds.push(format!("({x}.code = {c} OR {x}.unit = {c})"));
                    }
                    param.to_owned()
                };
                ("idx_quantity", name, conds.join(" AND "))
            }
            ValueMatch::Uri { value, mode } => {
                let cond = match mode {
                    UriMode::Exact => format!("{x}.uri = {}", self.text(value)),
                    UriMode::Below => {
                        let lo = self.text(value);
                        let hi = self.text(&format!("{value}{MAX_CHAR}"));
                        format!("{x}.uri >= {lo} AND {x}.uri < {hi}")
                    }
                    UriMode::Above => {
                        let prefixes: Vec<String> = value
                            .match_indices('/')
                            .map(|(i, _)| value[..i].to_owned())
                            .chain(std::iter::once(value.clone()))
                            .filter(|p| !p.is_empty())
                            .collect();
                        format!("{x}.uri IN ({})", self.list(&prefixes))
                    }
                };
                ("idx_uri", param.to_owned(), cond)
            }
            ValueMatch::Composite(_) => ("idx_token", param.to_owned(), "1 = 0".to_owned()),
        }
    }

    fn token_cond(&mut self, t: &TokenMatch, x: &str) -> String {
        let mut c = Vec::new();
        if let Some(code) = &t.code {
            c.push(format!("{x}.code = {}", self.text(code)));
        }
        if let Some(s) = &t.system {
            c.push(format!("{x}.system = {}", self.text(s)));
        }
        if c.is_empty() {
            "1 = 1".to_owned()
        } else {
            c.join(" AND ")
        }
    }

    /// A resource range `[lo, hi)` against a search range `[start, end)` (R4 date semantics).
    fn date_cond(&mut self, lo: &str, hi: &str, d: &DateCondition) -> String {
        let (s, e) = (d.start, d.end);
        match d.prefix {
            Prefix::Eq => format!("({lo} >= {} AND {hi} <= {})", self.int(s), self.int(e)),
            Prefix::Ne => format!("({lo} < {} OR {hi} > {})", self.int(s), self.int(e)),
            Prefix::Gt => format!("{hi} > {}", self.int(e)),
            Prefix::Lt => format!("{lo} < {}", self.int(s)),
            Prefix::Ge => format!("{hi} > {}", self.int(s)),
            Prefix::Le => format!("{lo} < {}", self.int(e)),
            Prefix::Sa => format!("{lo} >= {}", self.int(e)),
            Prefix::Eb => format!("{hi} <= {}", self.int(s)),
            Prefix::Ap => {
                // Within 10% of the distance between the value and now.
                let slack = ((time::now_micros() - s).abs() / 10).max(e - s);
                format!(
                    "({lo} < {} AND {hi} > {})",
                    self.int(e.saturating_add(slack)),
                    self.int(s.saturating_sub(slack))
                )
            }
        }
    }

    /// A stored number against a search number with its precision interval.
    fn number_cond(&mut self, col: &str, n: &NumberCondition) -> String {
        match n.prefix {
            Prefix::Eq => format!(
                "({col} >= {} AND {col} < {})",
                self.float(n.low),
                self.float(n.high)
            ),
            Prefix::Ne => format!(
                "({col} < {} OR {col} >= {})",
                self.float(n.low),
                self.float(n.high)
            ),
            Prefix::Gt | Prefix::Sa => format!("{col} > {}", self.float(n.value)),
            Prefix::Lt | Prefix::Eb => format!("{col} < {}", self.float(n.value)),
            Prefix::Ge => format!("{col} >= {}", self.float(n.value)),
            Prefix::Le => format!("{col} <= {}", self.float(n.value)),
            Prefix::Ap => {
                let slack = (n.value.abs() * 0.1).max(n.high - n.low);
                format!(
                    "({col} >= {} AND {col} <= {})",
                    self.float(n.value - slack),
                    self.float(n.value + slack)
                )
            }
        }
    }

    /// The value expression of a sort key over resource alias `a` (NULL when absent).
    fn sort_expr(
        &mut self,
        resource_type: Option<&str>,
        key: &SortKey,
        a: &str,
    ) -> (String, KeyType) {
        let agg = if key.descending { "MAX" } else { "MIN" };
        let (table, column, ty) = match (key.param.as_str(), key.kind) {
            ("_id", _) => return (format!("{a}.res_id"), KeyType::Text),
            ("_lastUpdated", _) => return (format!("{a}.last_updated"), KeyType::Int),
            (_, ParamType::Date) => (
                "idx_date",
                if key.descending { "hi" } else { "lo" },
                KeyType::Int,
            ),
            (_, ParamType::String) => ("idx_string", "value_norm", KeyType::Text),
            (_, ParamType::Reference) => ("idx_reference", "url", KeyType::Text),
            (_, ParamType::Uri) => ("idx_uri", "uri", KeyType::Text),
            (_, ParamType::Number) => ("idx_number", "value", KeyType::Float),
            (_, ParamType::Quantity) => ("idx_quantity", "value", KeyType::Float),
            _ => ("idx_token", "code", KeyType::Text),
        };
        let x = self.alias("k");
        let owner = self.correlated(resource_type, &key.param, &x, a);
        (
            format!(
                "(SELECT {agg}({x}.{column}) FROM {table} {x} WHERE {x}.rid = {a}.rid AND {owner})"
            ),
            ty,
        )
    }

    /// Rows strictly after the cursor in the order `(column, descending)...`, then `s.rid`.
    fn keyset(&mut self, order: &[(String, bool)], after: &Cursor) -> String {
        let mut alternatives = Vec::new();
        for i in 0..=order.len() {
            let mut conds = Vec::new();
            for (j, (col, _)) in order.iter().enumerate().take(i) {
                conds.push(format!("{col} = {}", self.key(&after.keys[j])));
            }
            if i == order.len() {
                conds.push(format!("s.rid > {}", self.int(after.rid)));
            } else {
                let (col, desc) = &order[i];
                let op = if *desc { "<" } else { ">" };
                conds.push(format!("{col} {op} {}", self.key(&after.keys[i])));
            }
            alternatives.push(format!("({})", conds.join(" AND ")));
        }
        format!("({})", alternatives.join(" OR "))
    }
}

/// The filter that should drive the query (an indexed `rid IN (...)`): the most selective
/// positive one, judged by its kind; `None` when an `_id` list already pins the rows or no
/// filter narrows well enough to beat scanning the type.
fn driver(filters: &[Filter], typed: bool) -> Option<usize> {
    if pinned_by_id(filters, typed) {
        return None;
    }
    filters
        .iter()
        .enumerate()
        .filter_map(|(i, f)| Some((filter_rank(f)?, i)))
        .filter(|(rank, _)| *rank <= 3)
        .min()
        .map(|(_, i)| i)
}

/// A typed query with an `_id` list: the unique `(res_type, res_id)` key pins its rows.
fn pinned_by_id(filters: &[Filter], typed: bool) -> bool {
    typed
        && filters
            .iter()
            .any(|f| matches!(f, Filter::Id { negate: false, .. }))
}

/// How selective a filter is likely to be when it drives (1 = a handful of rows); `None`
/// for one that cannot drive (a negation, `:missing`, `_has`, `_lastUpdated`).
fn filter_rank(f: &Filter) -> Option<u8> {
    match f {
        Filter::Param {
            values,
            negate: false,
            ..
        } if !values.is_empty() => values.iter().map(value_rank).max(),
        Filter::Chain { .. } => Some(3),
        Filter::Compartment { .. } => Some(1),
        _ => None,
    }
}

/// How selective one value is likely to be (1 = a handful of rows).
fn value_rank(v: &ValueMatch) -> u8 {
    match v {
        ValueMatch::Reference { .. }
        | ValueMatch::Linked { .. }
        | ValueMatch::String {
            mode: StringMode::Exact,
            ..
        }
        | ValueMatch::Uri {
            mode: UriMode::Exact,
            ..
        } => 1,
        ValueMatch::Token(t) | ValueMatch::ReferenceIdentifier(t) if t.code.is_some() => 1,
        ValueMatch::String {
            mode: StringMode::StartsWith,
            value,
        } if !value.is_empty() => 2,
        ValueMatch::Date(_)
        | ValueMatch::Number(_)
        | ValueMatch::Quantity(_)
        | ValueMatch::Composite(_) => 3,
        _ => 4,
    }
}

fn table_of(kind: ParamType) -> &'static str {
    match kind {
        ParamType::String => "idx_string",
        ParamType::Reference => "idx_reference",
        ParamType::Date => "idx_date",
        ParamType::Number => "idx_number",
        ParamType::Quantity => "idx_quantity",
        ParamType::Uri => "idx_uri",
        _ => "idx_token",
    }
}

/// Escapes `%`, `_` and `\` for a `LIKE ... ESCAPE '\'` pattern.
fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::AccessPolicy;
    use crate::search::{DEFAULT_COUNT, parse_query_string};

    fn query(resource_type: Option<&str>, params: &str) -> SearchQuery {
        SearchQuery::parse(
            resource_type,
            &parse_query_string(params),
            &crate::index::BasicExtractor,
            true,
        )
        .unwrap()
    }

    fn restricted() -> Restriction {
        AccessPolicy::patients(["p1"])
            .restriction()
            .cloned()
            .unwrap()
    }

    fn observations(filters: Vec<Filter>) -> SearchQuery {
        SearchQuery {
            filters,
            ..SearchQuery::all(Some("Observation"))
        }
    }

    fn code() -> Filter {
        Filter::Param {
            param: "code".into(),
            values: vec![ValueMatch::Token(TokenMatch {
                system: None,
                code: Some("8480-6".into()),
            })],
            negate: false,
        }
    }

    fn date() -> Filter {
        query(Some("Observation"), "_lastUpdated=gt2020-01-01")
            .filters
            .remove(0)
    }

    /// The compartment probe over the page's resource alias.
    const PROBE: &str = "WHERE z1.rid = r.rid";
    /// The compartment list driving the page.
    const DRIVE: &str = "r.rid IN (SELECT z1.rid FROM idx_reference z1";

    #[test]
    fn an_unrestricted_query_names_no_compartment_or_label() {
        for q in [
            observations(vec![code()]),
            observations(Vec::new()),
            query(None, "_type=Patient"),
        ] {
            for text in [
                page_sql(&q, DEFAULT_COUNT, None).sql.text,
                count_sql(&q, None).text,
                matches_sql(&q, 2, None).text,
            ] {
                assert!(!text.contains("idx_reference"), "{text}");
                assert!(!text.contains("idx_token w"), "{text}");
            }
        }
    }

    #[test]
    fn the_compartments_drive_unless_a_filter_is_as_selective() {
        let r = restricted();
        // A token with a code drives; the compartments are probed for each candidate.
        let page = page_sql(&observations(vec![code()]), 10, Some(&r)).sql.text;
        assert!(page.contains(PROBE) && !page.contains(DRIVE), "{page}");
        // Nothing else narrows: the compartments drive, and restrict the type.
        for q in [observations(Vec::new()), observations(vec![date()])] {
            let page = page_sql(&q, 10, Some(&r)).sql.text;
            assert!(page.contains(DRIVE), "{page}");
            assert!(!page.contains("r.res_type = "), "{page}");
        }
        // An `_id` list pins the rows.
        let by_id = observations(vec![Filter::Id {
            ids: vec!["o1".into()],
            negate: false,
        }]);
        let page = page_sql(&by_id, 10, Some(&r)).sql.text;
        assert!(page.contains(PROBE) && !page.contains(DRIVE), "{page}");
        // The count and a conditional match carry the same conditions as the page.
        let q = observations(vec![code()]);
        assert!(count_sql(&q, Some(&r)).text.contains(PROBE));
        assert!(matches_sql(&q, 2, Some(&r)).text.contains(PROBE));
    }

    #[test]
    fn chains_and_has_see_only_what_the_caller_sees() {
        let r = restricted();
        let chain = observations(vec![Filter::Chain {
            param: "subject".into(),
            targets: vec![("Patient".into(), vec![code()])],
        }]);
        let page = page_sql(&chain, 10, Some(&r)).sql.text;
        // The chained Patient alias (`t`) is judged too.
        let inner = page
            .split("FROM resource t")
            .nth(1)
            .expect("a chained resource");
        assert!(inner.contains(".res_id IN ("), "{page}");
        let has = SearchQuery {
            filters: vec![Filter::Has {
                source_type: "Observation".into(),
                param: "subject".into(),
                inner: vec![code()],
            }],
            ..SearchQuery::all(Some("Patient"))
        };
        let page = page_sql(&has, 10, Some(&r)).sql.text;
        let inner = page
            .split("FROM resource s")
            .nth(1)
            .expect("a source resource");
        assert!(inner.contains("idx_reference z"), "{page}");
    }

    #[test]
    fn a_restricted_everything_adds_no_referenced_resources() {
        let r = restricted();
        let q = SearchQuery::everything("p1");
        let open = page_sql(&q, 10, None).sql.text;
        assert!(open.contains("NOT IN"), "{open}");
        let restricted = page_sql(&q, 10, Some(&r)).sql.text;
        assert!(!restricted.contains("NOT IN"), "{restricted}");
    }
}
