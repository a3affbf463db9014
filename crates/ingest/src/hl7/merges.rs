//! A sender's patient merges (ADT^A40/A39/A41/A42) in HL7 v2 ingestion, recorded as FHIR
//! says ([`RecordMerges`]): called for every accepted message after mapping and before
//! commit, with the message's merge instructions and its checked writes; the writes it adds
//! commit in the same transaction as the message and its stored ACK.
//!
//! Nothing is matched here. With the EMPI on, the store the sink writes through is the `mpi`
//! crate's `EmpiStore`, which links every Patient write of the message (and follows a retired
//! Patient's `replaced-by` to the survivor's identity) in the same unit of work; there is no
//! other linking seam.

use hl7v2::fhir::{MergeInstruction, apply_merge, dt::uri_part};
use serde_json::{Value, json};
use store::{RequestContext, SearchQuery, Store, StoreError, WriteEntry, WriteOp};

/// Records merges and matches nothing: a merge marks each retired Patient `active = false`
/// with a `replaced-by` link to the survivor (`hl7v2::fhir::apply_merge`). A retired
/// patient the store never saw is created as such a stub, so later messages that still
/// carry the old identifier find where it went. The surviving side's `replaces` link comes
/// from the mapping itself.
#[derive(Debug, Default, Clone, Copy)]
pub struct RecordMerges;

/// `Patient?identifier=system|value` for an identifier JSON.
fn identifier_query(identifier: &Value) -> Option<String> {
    let value = identifier.get("value")?.as_str()?;
    Some(match identifier.get("system").and_then(Value::as_str) {
        Some(system) => format!("{}|{}", uri_part(system), uri_part(value)),
        None => uri_part(value),
    })
}

impl RecordMerges {
    /// Appends the writes recording `merges` to `entries`, the message's writes in processing
    /// order. Reads go to `store`; a read that is stale by commit time is guarded with
    /// `if_match`, which makes the commit fail and the message be retried.
    pub async fn record(
        &self,
        store: &dyn Store,
        ctx: &RequestContext,
        merges: &[MergeInstruction],
        entries: &mut Vec<WriteEntry>,
    ) -> Result<(), StoreError> {
        for merge in merges {
            let Some(surviving) = identifier_query(&merge.surviving) else {
                continue;
            };
            // Resolved by the store inside the transaction, after the survivor's own write.
            let survivor = json!({
                "reference": format!("Patient?identifier={surviving}"),
                "identifier": merge.surviving,
            });
            for retired in merge.retired.iter().filter(|r| **r != merge.surviving) {
                let Some(criteria) = identifier_query(retired) else {
                    continue;
                };
                let query = SearchQuery::parse(
                    Some("Patient"),
                    &[("identifier".to_owned(), criteria)],
                    store.extractor(),
                    false,
                )?;
                let mut probe = query.clone();
                probe.count = 2;
                let found = store.search(ctx, &probe).await?;
                let op = match found.matches.as_slice() {
                    [] => WriteOp::Create {
                        resource: apply_merge(
                            &json!({"resourceType": "Patient", "identifier": [retired]}),
                            &survivor,
                        ),
                        if_none_exist: Some(query),
                    },
                    [one] => {
                        let body: Value = serde_json::from_str(one.body.as_deref().unwrap_or("{}"))
                            .map_err(|e| StoreError::Backend(e.to_string()))?;
                        WriteOp::Update {
                            resource_type: "Patient".into(),
                            id: one.id.clone(),
                            resource: apply_merge(&body, &survivor),
                            if_match: Some(one.version),
                        }
                    }
                    more => {
                        return Err(StoreError::MultipleMatches {
                            what: "the retired patient of a merge".into(),
                            count: more.len(),
                        });
                    }
                };
                entries.push(WriteEntry::new(op));
            }
        }
        Ok(())
    }
}
