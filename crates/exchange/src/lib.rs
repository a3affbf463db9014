//! The exchange between Renkei nodes, as values: what a node publishes to the hub, how the
//! hub keeps each node's records apart (the record locator), how a federated query's answers
//! from several nodes become one result, directed messages, and the patient summary the hub
//! serves when a holder is offline.
//!
//! # What it must not do
//! Speak HTTP, touch SQL or read files: the server carries these values between processes and
//! the store keeps them. Everything here is a pure function of its inputs (the clock is passed
//! in), so the rules are tested without a network.
pub mod directed;
pub mod federate;
mod json;
pub mod locator;
pub mod namespace;
pub mod privacy;
pub mod publish;
pub mod registration;

pub mod summary;
