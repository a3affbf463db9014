//! Authorization for the exchange, without HTTP: the rules that turn a client's token into
//! what a request may see and do, and the evidence of what it did.
//!
//! # What it owns
//! - [`scope`]: SMART on FHIR scopes (v2 `patient/Observation.rs?category=...`, v1
//!   `patient/*.read`), and what a set of them grants one interaction on one type.
//! - [`consent`]: the decision a patient's `Consent` resources and the network's default
//!   make for one access (by organisation or actor, purpose of use, sensitive class, period;
//!   break-glass).
//! - [`policy`]: which permission a request needs, and whether a token's grant covers it
//!   (patient-context tokens never reach `$match`, PIX, system-level search or export).
//! - [`discovery`]: the SMART configuration document and the CapabilityStatement's security.
//! - [`registry`]: registered clients (backend services, apps) and users, and the checks a
//!   registration passes.
//! - [`labels`]: sensitivity labels assigned at write time from clinical codes.
//! - [`audit`]: audit records shaped as IHE BALP `AuditEvent`s.
//! - [`chain`]: the audit log's hash chain and its Ed25519-signed head, and the check that
//!   finds an edited, removed, reordered or truncated record.
//! - [`password`]: argon2id password hashes of the built-in login.
//! - [`pkce`]: PKCE `S256` for the authorization-code grant.
//! - [`token`]: ES256 access tokens and the rotating key ring that signs them.
//! - [`secret`]: opaque random secrets (codes, refresh tokens) and the digest they are stored
//!   under.
//! - [`assertion`]: client authentication by `private_key_jwt` (RS384, ES384), with replay
//!   protection.
//! - [`client_key`]: a node's own ES384 key as a client of the hub: its client assertions, its
//!   public JWK Set, and detached JWS signatures of directed messages (and their check).
//!
//! # What it must not do
//! Speak HTTP or read a database: the server turns requests into the inputs here and the
//! outputs into the store's access policy and audit rows. Cryptography is `ring`'s (JWTs
//! through `jsonwebtoken` over it); nothing here implements a primitive.

pub mod assertion;
pub mod audit;
pub mod chain;
pub mod client_key;
pub mod consent;
pub mod discovery;
pub mod labels;
pub mod password;
pub mod pkce;
pub mod policy;
pub mod registry;
pub mod scope;
pub mod secret;
pub mod token;
