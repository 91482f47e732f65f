//! The admin API's conventions both its server and its clients follow: the
//! error body every failure answers and the headers a request may carry.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The header (gRPC metadata alike) that says why a change is made; the
/// audit log records it beside the action.
pub const REASON_HEADER: &str = "x-drover-reason";

/// Every error the admin API answers: `{"error": {...}}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorInfo,
}

/// One error: a stable code for scripts and a message for people.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorInfo {
    /// Stable and snake_case, for scripts: `invalid_argument`, `not_found`,
    /// `unauthenticated`, `permission_denied`, `rate_limited`, `no_leader`...
    pub code: String,
    /// For people: what was wrong and what to do.
    pub message: String,
    /// What the code needs to say more: `field` for invalid arguments,
    /// `retry_after_ms` and `retry_safe` for passing failures.
    #[serde(default)]
    pub details: BTreeMap<String, serde_json::Value>,
}
