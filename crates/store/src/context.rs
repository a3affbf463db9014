//! The request context every store call carries: who asks, for whom, why, and a request id.
//!
//! The store does not decide access yet; it records the context (request id on the change feed,
//! tracing spans) so that authorization, consent and audit can be added in one place later
//! without changing any caller. See DESIGN.md, "Security is not optional".

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// The node itself (start-up, import, benchmarks, and every HTTP request until the
    /// authorization layer exists).
    System,
    /// A person, by their identifier (e.g. a `Practitioner/..` reference or a login).
    User(String),
    /// An OAuth2 client application, by client id.
    Client(String),
    /// Another node of the exchange network, by node id.
    Node(String),
}

/// The context of one request, passed to every [`crate::Store`] call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    /// Who is asking.
    pub actor: Actor,
    /// The patient on whose behalf the request is made (e.g. `Patient/123`), if any.
    pub on_behalf_of: Option<String>,
    /// Purpose of use (a code from v3 PurposeOfUse, e.g. `TREAT`), if declared.
    pub purpose_of_use: Option<String>,
    /// Correlates logs, audit records and change-feed rows of one request.
    pub request_id: String,
}

impl RequestContext {
    /// The context of work the node does on its own behalf.
    pub fn system() -> Self {
        Self {
            actor: Actor::System,
            on_behalf_of: None,
            purpose_of_use: None,
            request_id: uuid::Uuid::new_v4().to_string(),
        }
    }

    /// The same context with the given request id.
    pub fn with_request_id(mut self, request_id: impl Into<String>) -> Self {
        self.request_id = request_id.into();
        self
    }
}
