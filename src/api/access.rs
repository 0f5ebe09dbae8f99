//! Who may touch which stream: the one check every stream route makes before it acts. A
//! stream is answered only to its owner (a key, or an identity), to a token for it within its
//! scope, or to an identity whose grants name it, within their scope; every other caller gets
//! 404, whether the stream exists or not, so ids cannot be probed.

use std::sync::Arc;

use super::error::ApiError;
use super::AppState;
use crate::auth::{Need, Principal};
use crate::registry::StreamEntry;

/// The stream `id` if the caller owns it and may do what `need` says there; 404 for unknown
/// and foreign ids alike (and for a token's other streams), 403 past a token's scope.
pub(super) async fn owned(
    state: &AppState,
    id: &str,
    caller: &Principal,
    need: Need,
) -> Result<Arc<StreamEntry>, ApiError> {
    let not_found = || {
        // As the caller typed it: a pasted `6f1c…` reads as such, not `6f1c%e2%80%a6`.
        let typed = percent_encoding::percent_decode_str(id).decode_utf8_lossy();
        ApiError::StreamNotFound(typed.into_owned())
    };
    if !caller.may(uuid::Uuid::parse_str(id).ok(), need)? {
        return Err(not_found());
    }
    let entry = state
        .registry
        .find_owned(id, caller)
        .await
        .ok_or_else(not_found)?;
    // Another owner's stream, reached through an identity's grants: within their scope.
    if entry.record().owner != caller.name && !caller.may_share(&entry.id, need)? {
        return Err(not_found());
    }
    Ok(entry)
}
