//! Authentication: who is calling, in constant time, without ever keeping or logging a key or
//! a token.
//!
//! Keys are hashed with SHA-256 at start; a presented key is hashed and compared against every
//! configured digest with `subtle`, so neither the match position nor the key length leaks
//! through timing. A caller is known by the key's *name*, which is what owns streams.
//!
//! A caller may instead present a scoped stream token (`tokens.rs`), issued by a key for one
//! stream: the caller is then that key's name with a [`Grant`], and may do only what the
//! grant allows (`Principal::may`). Credentials are looked for in this order: `X-API-Key`,
//! `Authorization: Bearer <token>`, a `Sec-WebSocket-Protocol` entry `apikey.<KEY>` or
//! `token.<TOKEN>`, then the `access_token` query parameter (`EventSource` cannot set headers).

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::ApiKey;
use crate::tokens::{self, Grant};
use crate::wire::Scope;

/// Why a caller was not let in, or not let do what it asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error(
        "missing API key: send it in the X-API-Key header (or a stream token as \
         `Authorization: Bearer <token>`)"
    )]
    MissingKey,
    #[error("invalid API key")]
    InvalidKey,
    #[error("invalid stream token (bad signature, issuer or shape, or its key no longer exists)")]
    InvalidToken,
    #[error("the stream token has expired; ask its owner for a new one")]
    TokenExpired,
    /// A stream token used for what its scope does not allow, or where only a key will do.
    #[error("{0}")]
    Forbidden(String),
}

/// The header every `/api` call carries.
pub const API_KEY_HEADER: &str = "x-api-key";

/// Prefix of a `Sec-WebSocket-Protocol` value that carries the key, for browsers that cannot
/// set headers on a WebSocket: offer `["streamgate.v1", "apikey.<KEY>"]`.
pub const WS_PROTOCOL_KEY_PREFIX: &str = "apikey.";

/// Prefix of a `Sec-WebSocket-Protocol` value that carries a stream token.
pub const WS_PROTOCOL_TOKEN_PREFIX: &str = "token.";

/// The query parameter that may carry a stream token.
pub const ACCESS_TOKEN_PARAM: &str = "access_token";

/// The subprotocol the daemon answers with when a client offers it.
pub const WS_PROTOCOL: &str = "streamgate.v1";

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Name of the key; streams record it as their owner.
    pub name: String,
    /// Admin keys see all streams in listings.
    pub admin: bool,
    /// Set when the caller presented a stream token instead of the key: what it allows.
    pub grant: Option<Grant>,
}

/// What a route needs of the caller, besides owning the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// A key: starting, listing, ending, stats, issuing tokens.
    Key,
    /// A key, or a token for the stream with this scope.
    Scope(Scope),
    /// A key, or any token for the stream (reading its description).
    Any,
}

impl Principal {
    /// A caller that presented the key itself.
    pub fn key(name: &str, admin: bool) -> Self {
        Self {
            name: name.into(),
            admin,
            grant: None,
        }
    }

    /// Whether the caller may do what `need` says about `stream` (`None`: no stream). A
    /// token used for another stream is answered as that stream not existing (`Ok(false)`),
    /// so a token reveals nothing about its owner's other streams.
    pub fn may(&self, stream: Option<uuid::Uuid>, need: Need) -> Result<bool, Denied> {
        let Some(grant) = &self.grant else {
            return Ok(true);
        };
        if stream.is_some_and(|s| !grant.covers(&s)) {
            return Ok(false);
        }
        match need {
            Need::Key => Err(Denied::Forbidden(
                "a stream token can only send to or subscribe to its stream; this needs the \
                 API key"
                    .into(),
            )),
            Need::Scope(scope) if !grant.allows(scope) => Err(Denied::Forbidden(format!(
                "this token's scope is {}; this needs `{}`",
                scope_list(&grant.scopes()),
                scope_name(scope)
            ))),
            _ => Ok(true),
        }
    }
}

fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::Send => "send",
        Scope::Subscribe => "subscribe",
    }
}

fn scope_list(scopes: &[Scope]) -> String {
    let names: Vec<_> = scopes
        .iter()
        .map(|s| format!("`{}`", scope_name(*s)))
        .collect();
    names.join(" and ")
}

/// Where a request may carry its credentials (see the module docs for the order).
#[derive(Debug, Default, Clone, Copy)]
pub struct Presented<'a> {
    pub api_key: Option<&'a str>,
    pub authorization: Option<&'a str>,
    pub ws_protocols: Option<&'a str>,
    pub access_token: Option<&'a str>,
}

struct Entry {
    digest: [u8; 32],
    /// Signs and checks the key's stream tokens; derived from the key, which is not kept.
    token_secret: [u8; 32],
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
                token_secret: token_secret(&k.key),
                principal: Principal::key(&k.name, k.admin),
            })
            .collect();
        Self { entries }
    }

    /// Finds the caller for a presented key. Every entry is compared, match or not.
    pub fn authenticate(&self, presented: &str) -> Result<Principal, Denied> {
        let presented = digest(presented);
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.digest.ct_eq(&presented)) {
                found = Some(&entry.principal);
            }
        }
        found.cloned().ok_or(Denied::InvalidKey)
    }

    /// Authenticates from whatever the request presented, in the order of the module docs.
    pub fn identify(&self, presented: Presented<'_>) -> Result<Principal, Denied> {
        if let Some(key) = presented.api_key {
            return self.authenticate(key.trim());
        }
        if let Some(authorization) = presented.authorization {
            let token = authorization
                .trim()
                .split_once(' ')
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, token)| token.trim())
                .ok_or(Denied::InvalidToken)?;
            return self.authenticate_token(token);
        }
        if let Some(protocols) = presented.ws_protocols {
            if let Some(key) = from_protocols(protocols, WS_PROTOCOL_KEY_PREFIX) {
                return self.authenticate(key);
            }
            if let Some(token) = from_protocols(protocols, WS_PROTOCOL_TOKEN_PREFIX) {
                return self.authenticate_token(token);
            }
        }
        match presented.access_token {
            Some(token) => self.authenticate_token(token.trim()),
            None => Err(Denied::MissingKey),
        }
    }

    /// The caller a stream token stands for: the key that issued it (which must still be
    /// configured), with the token's grant.
    pub fn authenticate_token(&self, token: &str) -> Result<Principal, Denied> {
        let owner = tokens::claimed_owner(token)?;
        let entry = self.entry(&owner).ok_or(Denied::InvalidToken)?;
        let grant = tokens::verify(token, &entry.token_secret)?;
        Ok(Principal {
            name: owner,
            admin: false,
            grant: Some(grant),
        })
    }

    /// Signs a token for `grant`, as the key named `owner`.
    pub fn issue(&self, owner: &str, grant: &Grant) -> Result<String, tokens::SignError> {
        let entry = self
            .entry(owner)
            .ok_or_else(|| tokens::SignError(format!("no key named {owner}")))?;
        tokens::issue(owner, &entry.token_secret, grant)
    }

    fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.principal.name == name)
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The token secret of a key: a hash of it in a domain of its own, so it tells nothing about
/// the key's digest or the key.
fn token_secret(key: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"streamgate stream token secret v1\0");
    h.update(key.as_bytes());
    h.finalize().into()
}

fn from_protocols<'a>(protocols: &'a str, prefix: &str) -> Option<&'a str> {
    protocols
        .split(',')
        .map(str::trim)
        .find_map(|p| p.strip_prefix(prefix))
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
        assert!(matches!(s.authenticate("nope"), Err(Denied::InvalidKey)));
    }

    fn protocols(p: &str) -> Presented<'_> {
        Presented {
            ws_protocols: Some(p),
            ..Presented::default()
        }
    }

    #[test]
    fn header_then_protocol() {
        let s = store();
        let p = s
            .identify(protocols("streamgate.v1, apikey.alice-key-123"))
            .unwrap();
        assert_eq!(p.name, "alice");
        assert!(matches!(
            s.identify(protocols("streamgate.v1")),
            Err(Denied::MissingKey)
        ));
        assert!(matches!(
            s.identify(Presented::default()),
            Err(Denied::MissingKey)
        ));
    }

    #[test]
    fn a_token_stands_for_its_key_with_its_grant_only() {
        let s = store();
        let grant = Grant {
            streams: vec![uuid::Uuid::new_v4()],
            send: true,
            subscribe: false,
            // Whole seconds, as a token carries it.
            expires: std::time::UNIX_EPOCH
                + std::time::Duration::from_secs(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_secs()
                        + 60,
                ),
        };
        let token = s.issue("alice", &grant).unwrap();
        let bearer = format!("Bearer {token}");
        for presented in [
            Presented {
                authorization: Some(&bearer),
                ..Presented::default()
            },
            Presented {
                access_token: Some(&token),
                ..Presented::default()
            },
            protocols(&format!("streamgate.v1, token.{token}")),
        ] {
            let p = s.identify(presented).unwrap();
            assert_eq!((p.name.as_str(), p.grant.as_ref()), ("alice", Some(&grant)));
            assert!(p
                .may(Some(grant.streams[0]), Need::Scope(Scope::Send))
                .unwrap());
            assert!(matches!(
                p.may(Some(grant.streams[0]), Need::Scope(Scope::Subscribe)),
                Err(Denied::Forbidden(_))
            ));
            assert!(!p.may(Some(uuid::Uuid::new_v4()), Need::Any).unwrap());
            assert!(matches!(p.may(None, Need::Key), Err(Denied::Forbidden(_))));
        }
        // The same claims signed with another key's secret are not alice's.
        let forged = KeyStore::new(&[ApiKey {
            name: "alice".into(),
            key: "another-key".into(),
            admin: false,
        }])
        .issue("alice", &grant)
        .unwrap();
        assert!(matches!(
            s.authenticate_token(&forged),
            Err(Denied::InvalidToken)
        ));
        assert!(matches!(
            s.identify(Presented {
                authorization: Some("Basic abc"),
                ..Presented::default()
            }),
            Err(Denied::InvalidToken)
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
