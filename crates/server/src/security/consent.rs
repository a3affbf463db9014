//! Consent applied to requests: the patient-privacy `Consent` resources of the store, kept in
//! memory ([`Consents`]), evaluated per request (`auth::consent::evaluate`, one decision per
//! patient with consents and one for everyone else, the network default) and turned into the
//! store's withheld data ([`store::Withheld`]), which the store applies inside its SQL.
//!
//! The cache is checked on every request against one cheap query, the number of current
//! Consents and the newest `lastUpdated` among them: a create or update raises the newest
//! time, a delete lowers the count, so any change reloads the set before the request is
//! decided (a consent is in force from the request after its write commits).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use auth::consent::{AccessRequest, Consent, ConsentSettings, Decision, evaluate};
use auth::labels::Label;
use auth::token::AccessClaims;
use store::search::{Cursor, TotalMode};
use store::{
    Patients, RequestContext, SearchQuery, SecurityLabel, Selector, Store, StoreError, Withheld,
    Withholding,
};

/// Consents read at once while loading.
const PAGE: usize = 500;

/// The patient-privacy consents of the store, by patient id.
#[derive(Debug, Default)]
pub struct Consents {
    cached: Mutex<Option<Loaded>>,
}

#[derive(Debug, Clone)]
struct Loaded {
    /// `(number of current Consents, newest lastUpdated)` when loaded.
    signature: (u64, Option<i64>),
    by_patient: Arc<BTreeMap<String, Vec<Consent>>>,
}

/// What consent withholds from one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsentOutcome {
    /// The store's withheld data; empty when nothing is.
    pub withheld: Vec<Withheld>,
    /// Break-glass released something consent withheld.
    pub break_glass_used: bool,
}

impl Consents {
    /// The consents in force, reloaded when the store's Consents changed since last time.
    async fn current(
        &self,
        store: &dyn Store,
    ) -> Result<Arc<BTreeMap<String, Vec<Consent>>>, StoreError> {
        let ctx = RequestContext::system();
        let mut newest = SearchQuery::parse(
            Some("Consent"),
            &[("_sort".to_owned(), "-_lastUpdated".to_owned())],
            store.extractor(),
            false,
        )?;
        newest.count = 1;
        newest.total = TotalMode::Accurate;
        let page = store.search(&ctx, &newest).await?;
        let signature = (
            page.total.unwrap_or(0),
            page.matches.first().map(|r| r.last_updated),
        );
        if let Some(l) = self.lock().as_ref()
            && l.signature == signature
        {
            return Ok(l.by_patient.clone());
        }
        let by_patient = Arc::new(load(store, &ctx).await?);
        *self.lock() = Some(Loaded {
            signature,
            by_patient: by_patient.clone(),
        });
        Ok(by_patient)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Loaded>> {
        self.cached.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What consent withholds from a request with `claims` (a user or a backend service,
    /// seeing every compartment).
    pub async fn decide(
        &self,
        store: &dyn Store,
        settings: &ConsentSettings,
        claims: &AccessClaims,
    ) -> Result<ConsentOutcome, StoreError> {
        let consents = self.current(store).await?;
        let req = AccessRequest {
            actors: claims
                .organization
                .iter()
                .chain(claims.fhir_user.iter())
                .cloned()
                .collect(),
            purpose: claims.purpose_of_use.clone(),
            now: chrono::Utc::now(),
            break_glass: claims.break_glass.is_some(),
        };
        Ok(withheld(settings, &consents, &req))
    }
}

/// Every active patient-privacy Consent, by the id of its patient; others, and those that do
/// not parse, are left out (a malformed consent was refused at write time by validation, or
/// decides nothing it cannot express).
async fn load(
    store: &dyn Store,
    ctx: &RequestContext,
) -> Result<BTreeMap<String, Vec<Consent>>, StoreError> {
    let mut q = SearchQuery::all(Some("Consent"));
    q.count = PAGE;
    let mut out: BTreeMap<String, Vec<Consent>> = BTreeMap::new();
    loop {
        let page = store.search(ctx, &q).await?;
        for r in &page.matches {
            let Some(body) = r.body.as_deref() else {
                continue;
            };
            let Ok(value) = serde_json::from_str(body) else {
                continue;
            };
            match Consent::from_resource(&value) {
                Ok(c) if c.applies() => {
                    if let Some(p) = c
                        .patient
                        .as_deref()
                        .and_then(|p| p.strip_prefix("Patient/"))
                    {
                        out.entry(p.to_owned()).or_default().push(c);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(consent = %r.id, error = %e, "a Consent that cannot be used is ignored")
                }
            }
        }
        match page.next {
            Some(next) => q.after = Some(Cursor::decode(&next)?),
            None => return Ok(out),
        }
    }
}

/// The withheld data of `req`: the default decision for every patient without consents, each
/// consenting patient's own; patients with the same decision share one entry.
fn withheld(
    settings: &ConsentSettings,
    consents: &BTreeMap<String, Vec<Consent>>,
    req: &AccessRequest,
) -> ConsentOutcome {
    let default = evaluate(settings, &[], req);
    let mut break_glass_used = default.break_glass_used;
    let mut groups: BTreeMap<Vec<Withholding>, BTreeSet<String>> = BTreeMap::new();
    for (patient, theirs) in consents {
        let d = evaluate(settings, theirs, req);
        break_glass_used |= d.break_glass_used;
        groups
            .entry(withholdings(&d))
            .or_default()
            .insert(patient.clone());
    }
    let mut withheld = Vec::new();
    let others: BTreeSet<String> = consents.keys().cloned().collect();
    for what in withholdings(&default) {
        withheld.push(Withheld {
            patients: Patients::AllBut(others.clone()),
            what,
        });
    }
    for (whats, patients) in groups {
        for what in whats {
            withheld.push(Withheld {
                patients: Patients::Of(patients.clone()),
                what,
            });
        }
    }
    ConsentOutcome {
        withheld,
        break_glass_used,
    }
}

/// A decision as the store's terms.
fn withholdings(d: &Decision) -> Vec<Withholding> {
    let mut out = Vec::new();
    if !d.permitted {
        let release = d.only.clone().unwrap_or_default();
        out.push(Withholding::RecordExcept(Selector {
            labels: labels(&release.labels),
            types: release.types,
            resources: release.resources,
        }));
    }
    let denied = Selector {
        labels: labels(&d.denied_labels),
        types: d.denied_types.clone(),
        resources: d.denied_resources.clone(),
    };
    if !denied.is_empty() {
        out.push(Withholding::Data(denied));
    }
    out
}

fn labels(l: &BTreeSet<Label>) -> BTreeSet<SecurityLabel> {
    l.iter()
        .map(|l| SecurityLabel::new(l.system.clone(), l.code.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use auth::consent::NetworkDefault;
    use serde_json::json;

    fn consent(patient: &str, provision: serde_json::Value) -> Consent {
        Consent::from_resource(&json!({"resourceType": "Consent", "id": patient,
            "status": "active", "patient": {"reference": format!("Patient/{patient}")},
            "scope": {"coding": [{"code": "patient-privacy"}]}, "provision": provision}))
        .expect("consent")
    }

    fn req(purpose: Option<&str>, break_glass: bool) -> AccessRequest {
        AccessRequest {
            actors: vec!["Organization/x".into()],
            purpose: purpose.map(str::to_owned),
            now: chrono::Utc::now(),
            break_glass,
        }
    }

    #[test]
    fn nothing_is_withheld_without_consents_on_an_opt_out_network() {
        let out = withheld(
            &ConsentSettings::default(),
            &BTreeMap::new(),
            &req(None, false),
        );
        assert_eq!(out, ConsentOutcome::default());
    }

    #[test]
    fn decisions_become_grouped_withholdings_and_break_glass_lifts_them() {
        let deny_x =
            json!({"type": "deny", "actor": [{"reference": {"reference": "Organization/x"}}]});
        let mut consents = BTreeMap::new();
        for p in ["p1", "p2"] {
            consents.insert(p.to_owned(), vec![consent(p, deny_x.clone())]);
        }
        consents.insert(
            "p3".to_owned(),
            vec![consent(
                p3(),
                json!({"type": "deny", "purpose": [{"code": "HRESCH"}]}),
            )],
        );
        let out = withheld(
            &ConsentSettings::default(),
            &consents,
            &req(Some("TREAT"), false),
        );
        assert_eq!(
            out.withheld,
            [Withheld {
                patients: Patients::Of(["p1".to_owned(), "p2".to_owned()].into()),
                what: Withholding::RecordExcept(Selector::default()),
            }]
        );
        let glass = withheld(
            &ConsentSettings::default(),
            &consents,
            &req(Some("ETREAT"), true),
        );
        assert!(glass.withheld.is_empty() && glass.break_glass_used);
        // Opt-in: everyone without a consent is withheld.
        let opt_in = ConsentSettings {
            default: NetworkDefault::OptIn,
            ..ConsentSettings::default()
        };
        let out = withheld(&opt_in, &consents, &req(Some("TREAT"), false));
        assert_eq!(
            out.withheld[0],
            Withheld {
                patients: Patients::AllBut(
                    ["p1".to_owned(), "p2".to_owned(), "p3".to_owned()].into()
                ),
                what: Withholding::RecordExcept(Selector::default()),
            }
        );
    }

    fn p3() -> &'static str {
        "p3"
    }
}
