//! Liveness (`/healthz`: the process answers) and readiness (`/readyz`: the store answers;
//! when it does not, 503 with an OperationOutcome from the error table).

use axum::extract::State;

use crate::AppState;
use crate::error::ApiError;

pub async fn healthz() -> &'static str {
    "ok"
}

pub async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    match state.store.ready().await {
        Ok(()) => Ok("ready"),
        Err(e) => {
            tracing::warn!(error = %e, "store not ready");
            Err(ApiError::unavailable("store unavailable"))
        }
    }
}
