//! `Store::batches` through the EMPI (an import's chunks, each planned while the one before
//! it commits) over a real SQLite store: the identities it ends with are those of the same
//! chunks written one after another; a chunk whose transaction fails on one entry is
//! written again entry by entry, and the chunk planned on top of it is still linked.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::{Value, json};
use store::{BatchResult, FhirIndexExtractor, Store, StoreError, WriteEntry, WriteOp};
use support::{Harness, harness};

const FAMILIES: &[&str] = &[
    "Yamada",
    "Suzuki",
    "Tanaka",
    "Sato",
    "Ito",
    "Watanabe",
    "Nakamura",
    "Kobayashi",
    "Kato",
    "Yoshida",
    "Smith",
    "Garcia",
    "Okafor",
    "Novak",
    "Larsen",
    "Moreau",
];
const GIVENS: &[&str] = &[
    "Hanako", "Taro", "Yuki", "Kenji", "Aiko", "Hiroshi", "Emma", "Lucas", "Amara", "Jonas",
    "Ingrid", "Camille", "Mateo", "Sofia", "Daniel", "Mina",
];

/// Person `i`: a name of its own (the family name carries a number spelt in letters), a
/// birth date, a phone and an address.
fn person(i: usize) -> Value {
    let letters: String = format!("{i:04}")
        .bytes()
        .map(|d| (b'a' + (d - b'0')) as char)
        .collect();
    json!({
        "resourceType": "Patient",
        "name": [{"family": format!("{}{letters}", FAMILIES[i % FAMILIES.len()]),
                  "given": [GIVENS[(i / 3) % GIVENS.len()]]}],
        "gender": if i.is_multiple_of(2) { "female" } else { "male" },
        "birthDate": format!("{}-{:02}-{:02}", 1940 + i % 60, 1 + i % 12, 1 + i % 28),
        "telecom": [{"system": "phone", "value": format!("03-{:04}-{:04}", i % 9973, i)}],
        "address": [{"line": [format!("{} Sakura-dori", 1 + i % 97)], "city": "Kobe",
                     "postalCode": format!("65{:05}", i)}]
    })
}

/// The records of `people` people, some of them twice (the second with two letters of the
/// given name swapped), in a fixed shuffled order so that duplicates fall in other chunks.
fn records(people: usize) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for i in 0..people {
        let mut p = person(i);
        out.push((format!("p{i}-a"), p.clone()));
        if i % 5 < 2 {
            let given = p["name"][0]["given"][0].as_str().unwrap().to_owned();
            let mut chars: Vec<char> = given.chars().collect();
            chars.swap(1, 2);
            p["name"][0]["given"][0] = json!(chars.into_iter().collect::<String>());
            out.push((format!("p{i}-b"), p));
        }
    }
    // A fixed permutation (a linear congruential generator), not the file's person order.
    let mut state: u64 = 42;
    for k in (1..out.len()).rev() {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        out.swap(k, (state >> 33) as usize % (k + 1));
    }
    out
}

fn put(id: &str, mut body: Value) -> WriteEntry {
    body["id"] = json!(id);
    WriteEntry::new(WriteOp::Update {
        resource_type: "Patient".into(),
        id: id.to_owned(),
        resource: body,
        if_match: None,
    })
}

fn chunks(records: &[(String, Value)], size: usize) -> Vec<Vec<WriteEntry>> {
    records
        .chunks(size)
        .map(|c| c.iter().map(|(id, body)| put(id, body.clone())).collect())
        .collect()
}

/// The sources of each identity, as a set of sets (identity numbers aside).
async fn partition(h: &Harness, ids: impl Iterator<Item = &String>) -> BTreeSet<BTreeSet<String>> {
    let mut by_identity: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for id in ids {
        let (e, members) = h
            .mpi
            .identity_of(&h.ctx, id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{id} has no identity"));
        assert!(members.contains(id), "{e:?} lists {id}");
        by_identity
            .entry(e.to_string())
            .or_default()
            .insert(id.clone());
    }
    by_identity.into_values().collect()
}

/// Sends `chunks` through `Store::batches`, returning each chunk's answer.
async fn pipelined(h: &Harness, chunks: Vec<Vec<WriteEntry>>) -> Vec<BatchResult> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let (answers_tx, mut answers) = tokio::sync::mpsc::channel(2);
    let writer = {
        let (store, ctx) = (h.linked.clone(), h.ctx.clone());
        tokio::spawn(async move { store.batches(&ctx, rx, answers_tx).await })
    };
    let feeder = tokio::spawn(async move {
        for chunk in chunks {
            tx.send(chunk).await.unwrap();
        }
    });
    let mut out = Vec::new();
    while let Some(answer) = answers.recv().await {
        out.push(answer);
    }
    feeder.await.unwrap();
    writer.await.unwrap().unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_planned_while_the_previous_commits_end_as_one_after_another() {
    let records = records(300);
    assert!(records.len() > 400, "{} records", records.len());
    let ids: Vec<String> = records.iter().map(|(id, _)| id.clone()).collect();

    let one_by_one = harness(Arc::new(FhirIndexExtractor::new()));
    for chunk in chunks(&records, 40) {
        for r in one_by_one
            .linked
            .batch(&one_by_one.ctx, chunk)
            .await
            .unwrap()
        {
            r.unwrap();
        }
    }
    let expected = partition(&one_by_one, ids.iter()).await;
    // The duplicates were found: most people with two records have one identity.
    let pairs = expected.iter().filter(|s| s.len() == 2).count();
    assert!(pairs >= 100, "{pairs} identities with two sources");

    let piped = harness(Arc::new(FhirIndexExtractor::new()));
    let answers = pipelined(&piped, chunks(&records, 40)).await;
    assert_eq!(answers.len(), records.len().div_ceil(40));
    for answer in answers {
        for r in answer.unwrap() {
            r.unwrap();
        }
    }
    assert_eq!(partition(&piped, ids.iter()).await, expected);
    // And the golden records say the same (those the pipeline composed while the chunk
    // before committed included).
    let piped_store = &piped;
    let (piped, one_by_one) = (
        goldens(piped_store, ids.iter()).await,
        goldens(&one_by_one, ids.iter()).await,
    );
    assert_eq!(piped.len(), one_by_one.len());
    for (sources, golden) in &piped {
        assert_eq!(
            Some(golden),
            one_by_one.get(sources),
            "the golden record of {sources}"
        );
    }
    // The index the pipeline kept (each commit applied to it as planned) answers `$match`
    // as one loaded from the store afresh does.
    let fresh = mpi::Mpi::with_defaults(piped_store.base.clone());
    for i in (0..300).step_by(7) {
        let query = person(i);
        let kept = piped_store
            .mpi
            .find(&piped_store.ctx, &query)
            .await
            .unwrap();
        let loaded = fresh.find(&piped_store.ctx, &query).await.unwrap();
        // As a set: candidates of equal score come in the order they were indexed.
        let ids = |m: &[mpi::Match]| {
            m.iter()
                .map(|m| (m.id.clone(), m.grade))
                .collect::<BTreeSet<_>>()
        };
        assert_eq!(ids(&kept), ids(&loaded), "$match of person {i}");
        assert!(!kept.is_empty(), "person {i} is found");
    }
}

/// Each identity's golden record by its sources, without what differs between two runs: its
/// id, meta and enterprise identifier, and the times that survivorship details quote.
async fn goldens(h: &Harness, ids: impl Iterator<Item = &String>) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for id in ids {
        let (e, members) = h.mpi.identity_of(&h.ctx, id).await.unwrap().unwrap();
        let stored = h
            .base
            .load(&h.ctx, "Patient", &e.to_string())
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{e:?} has no golden record"));
        let mut body: Value = serde_json::from_str(stored.body.as_deref().unwrap()).unwrap();
        let golden = body.as_object_mut().unwrap();
        golden.remove("id");
        golden.remove("meta");
        golden.remove("identifier");
        for extension in golden["extension"].as_array_mut().unwrap() {
            let parts = extension["extension"].as_array_mut().unwrap();
            parts.retain(|part| part["url"] != "detail");
        }
        out.insert(members.join(","), body);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_failing_on_one_entry_is_written_entry_by_entry_and_the_next_still_links() {
    let h = harness(Arc::new(FhirIndexExtractor::new()));
    let people: Vec<Value> = (0..60).map(person).collect();
    // Chunk 1: 30 people, one of them written with a version the store does not hold.
    let mut first: Vec<WriteEntry> = (0..30)
        .map(|i| put(&format!("a{i}"), people[i].clone()))
        .collect();
    if let WriteOp::Update { if_match, .. } = &mut first[7].op {
        *if_match = Some(5);
    }
    // Chunk 2: the same 30 people again under other ids (each must join the first's
    // identity), and 30 new ones. Chunk 3: a deletion (planned after chunk 2 is applied).
    let second: Vec<WriteEntry> = (0..60)
        .map(|i| put(&format!("b{i}"), people[i].clone()))
        .collect();
    let third = vec![WriteEntry::new(WriteOp::Delete {
        resource_type: "Patient".into(),
        id: "b40".into(),
        if_match: None,
    })];
    let answers = pipelined(&h, vec![first, second, third]).await;
    assert_eq!(answers.len(), 3);
    let first = answers[0].as_ref().unwrap();
    for (i, r) in first.iter().enumerate() {
        match (i, r) {
            (7, Err(e)) => assert!(
                matches!(
                    e,
                    StoreError::VersionConflict { .. } | StoreError::NotFound { .. }
                ),
                "{e:?}"
            ),
            (7, Ok(o)) => panic!("a7 was written at a version it did not have: {o:?}"),
            (_, r) => assert!(r.is_ok(), "a{i}: {r:?}"),
        }
    }
    for r in answers[1]
        .as_ref()
        .unwrap()
        .iter()
        .chain(answers[2].as_ref().unwrap())
    {
        assert!(r.is_ok(), "{r:?}");
    }
    for i in (0..30).filter(|i| *i != 7) {
        let (a, _) = h
            .mpi
            .identity_of(&h.ctx, &format!("a{i}"))
            .await
            .unwrap()
            .unwrap();
        let (b, members) = h
            .mpi
            .identity_of(&h.ctx, &format!("b{i}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(a, b, "b{i} joins a{i}'s identity");
        assert_eq!(members.len(), 2, "{members:?}");
    }
    let (_, alone) = h.mpi.identity_of(&h.ctx, "b7").await.unwrap().unwrap();
    assert_eq!(alone, vec!["b7".to_owned()]);
    assert!(h.mpi.identity_of(&h.ctx, "b40").await.unwrap().is_none());
}

/// A `$match` asked while an import keeps chunks coming is answered while the import goes
/// on: the pipeline lets go of the index when someone waits, not only when it runs dry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_match_during_an_import_is_answered_before_the_import_ends() {
    let h = harness(Arc::new(FhirIndexExtractor::new()));
    // Far more chunks than the import needs to reach the question: the feeder stops once
    // the `$match` is answered, so the chunks left unsent say it was answered mid-import.
    let records = records(1500);
    let all = chunks(&records, 20);
    let total = all.len();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let (answers_tx, mut answers) = tokio::sync::mpsc::channel(2);
    let writer = {
        let (store, ctx) = (h.linked.clone(), h.ctx.clone());
        tokio::spawn(async move { store.batches(&ctx, rx, answers_tx).await })
    };
    let (asked_tx, asked_rx) = tokio::sync::oneshot::channel::<()>();
    let (answered_tx, mut answered_rx) = tokio::sync::oneshot::channel::<usize>();
    let matcher = {
        let mpi = h.mpi.clone();
        tokio::spawn(async move {
            asked_rx.await.unwrap();
            let query = person(3);
            let found = mpi.find(&store::RequestContext::system(), &query).await;
            answered_tx.send(found.unwrap().len()).unwrap();
        })
    };
    let feeder = tokio::spawn(async move {
        let mut asked = Some(asked_tx);
        for (sent, chunk) in all.into_iter().enumerate() {
            if sent == 3 {
                asked.take().unwrap().send(()).unwrap();
            }
            if sent > 3 && answered_rx.try_recv().is_ok() {
                return sent;
            }
            tx.send(chunk).await.unwrap();
        }
        total
    });
    while answers.recv().await.is_some() {}
    let sent = feeder.await.unwrap();
    writer.await.unwrap().unwrap();
    matcher.await.unwrap();
    assert!(
        sent < total,
        "the $match waited for all {total} chunks of the import"
    );
}
