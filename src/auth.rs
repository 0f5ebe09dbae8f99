//! API-key authentication: who is calling, in constant time, without ever keeping or logging
//! the key itself.
//!
//! Keys are hashed with SHA-256 at start; a presented key is hashed and compared against every
//! configured digest with `subtle`, so neither the match position nor the key length leaks
//! through timing. A caller is known by the key's *name*, which is what owns streams.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::ApiKey;
use crate::error::ApiError;

/// The header every `/api` call carries.
pub const API_KEY_HEADER: &str = "x-api-key";

/// Prefix of a `Sec-WebSocket-Protocol` value that carries the key, for browsers that cannot
/// set headers on a WebSocket: offer `["streamgate.v1", "apikey.<KEY>"]`.
pub const WS_PROTOCOL_KEY_PREFIX: &str = "apikey.";

/// The subprotocol the daemon answers with when a client offers it.
pub const WS_PROTOCOL: &str = "streamgate.v1";

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Name of the key; streams record it as their owner.
    pub name: String,
    /// Admin keys see all streams in listings.
    pub admin: bool,
}

struct Entry {
    digest: [u8; 32],
    principal: Principal,
}

/// The configured keys, as digests.
pub struct KeyStore {
    entries: Vec<Entry>,
}

impl KeyStore {
    pub fn new(keys: &[ApiKey]) -> Self {
        let entries = keys
            .iter()
            .map(|k| Entry {
                digest: digest(&k.key),
                principal: Principal {
                    name: k.name.clone(),
                    admin: k.admin,
                },
            })
            .collect();
        Self { entries }
    }

    /// Finds the caller for a presented key. Every entry is compared, match or not.
    pub fn authenticate(&self, presented: &str) -> Result<Principal, ApiError> {
        let presented = digest(presented);
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.digest.ct_eq(&presented)) {
                found = Some(&entry.principal);
            }
        }
        found.cloned().ok_or(ApiError::InvalidKey)
    }

    /// Authenticates from the `X-API-Key` header or, failing that, a `Sec-WebSocket-Protocol`
    /// entry `apikey.<KEY>`.
    pub fn from_headers(
        &self,
        header: Option<&str>,
        ws_protocols: Option<&str>,
    ) -> Result<Principal, ApiError> {
        if let Some(key) = header {
            return self.authenticate(key.trim());
        }
        match ws_protocols.and_then(key_from_protocols) {
            Some(key) => self.authenticate(key),
            None => Err(ApiError::MissingKey),
        }
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn key_from_protocols(protocols: &str) -> Option<&str> {
    protocols
        .split(',')
        .map(str::trim)
        .find_map(|p| p.strip_prefix(WS_PROTOCOL_KEY_PREFIX))
}

/// The subprotocol to answer a WebSocket handshake with: `streamgate.v1` when the client
/// offered it, else none. Never an offered key: a response header may be logged or cached
/// where the request was not. (Browsers fail a handshake whose offered protocols get no
/// answer, so a browser offers `["streamgate.v1", "apikey.<KEY>"]`.)
pub fn ws_response_protocol(protocols: Option<&str>) -> Option<String> {
    protocols?
        .split(',')
        .map(str::trim)
        .any(|p| p == WS_PROTOCOL)
        .then(|| WS_PROTOCOL.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> KeyStore {
        KeyStore::new(&[
            ApiKey {
                name: "alice".into(),
                key: "alice-key-123".into(),
                admin: false,
            },
            ApiKey {
                name: "ops".into(),
                key: "ops-key-456789".into(),
                admin: true,
            },
        ])
    }

    #[test]
    fn finds_the_right_principal() {
        let s = store();
        assert_eq!(s.authenticate("alice-key-123").unwrap().name, "alice");
        assert!(s.authenticate("ops-key-456789").unwrap().admin);
        assert!(matches!(s.authenticate("nope"), Err(ApiError::InvalidKey)));
    }

    #[test]
    fn header_then_protocol() {
        let s = store();
        let p = s
            .from_headers(None, Some("streamgate.v1, apikey.alice-key-123"))
            .unwrap();
        assert_eq!(p.name, "alice");
        assert!(matches!(
            s.from_headers(None, Some("streamgate.v1")),
            Err(ApiError::MissingKey)
        ));
        assert!(matches!(
            s.from_headers(None, None),
            Err(ApiError::MissingKey)
        ));
    }

    #[test]
    fn response_protocol_prefers_ours() {
        assert_eq!(
            ws_response_protocol(Some("apikey.x, streamgate.v1")).as_deref(),
            Some("streamgate.v1")
        );
        assert_eq!(
            ws_response_protocol(Some("apikey.x")),
            None,
            "the key is never echoed"
        );
        assert_eq!(ws_response_protocol(None), None);
    }
}
