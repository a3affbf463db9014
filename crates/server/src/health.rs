//! Liveness (`/healthz`: the process answers) and readiness (`/readyz`: the store answers and
//! the patient index is loaded; otherwise 503 with `Retry-After` and an OperationOutcome from
//! the error table).

use axum::extract::State;

use crate::AppState;
use crate::error::ApiError;

pub async fn healthz() -> &'static str {
    "ok"
}

pub async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    if !state.mpi.is_ready() {
        return Err(ApiError::unavailable("the patient index is loading"));
    }
    match state.store.ready().await {
        Ok(()) => Ok("ready"),
        Err(e) => {
            tracing::warn!(error = %e, "store not ready");
            Err(ApiError::unavailable("store unavailable"))
        }
    }
}
