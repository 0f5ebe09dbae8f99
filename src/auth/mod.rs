//! Authentication: who is calling, in constant time, without ever keeping or logging a key or
//! a token.
//!
//! A caller is known by a *name*, which is what owns streams: an API key's name (`keys`), or
//! an identity from the team's identity provider (`jwt`: a JWT checked against its JWKS,
//! named `auth.jwt.owner_prefix` + its owner claim). A caller may instead present a scoped
//! stream token (`tokens`) issued by a key: it is then that key's name with a [`Grant`], and
//! may do only what the grant allows (`Principal::may`). Credentials are looked for in this
//! order: `X-API-Key`, `Authorization: Bearer <token>`, a `Sec-WebSocket-Protocol` entry
//! `apikey.<KEY>` or `token.<TOKEN>`, then the `access_token` query parameter
//! (`EventSource` cannot set headers).
//!
//! [`Credentials`] is what a reload replaces as a whole; every principal remembers how it
//! authenticated ([`Credential`]), so an open connection can be asked, after a reload or a
//! JWKS refresh, whether its credential still stands ([`Credentials::revoked`]).

mod jwt;
mod keys;
pub mod tokens;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use jwt::JwtVerifier;
pub use keys::KeyStore;
use tokens::{Grant, SignError};

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
    /// An identity provider's token that does not pass (the text says why; never the token).
    #[error("invalid token: {0}")]
    InvalidJwt(String),
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
    /// What owns its streams: a key's name, or an identity's.
    pub name: String,
    /// Admin keys see all streams in listings.
    pub admin: bool,
    /// Set when the caller presented a stream token instead of the key: what it allows.
    pub grant: Option<Grant>,
    /// An identity's grants on other owners' streams (its token's grants claim).
    pub shared: Option<Grant>,
    /// When the credential stops working (a token's or a JWT's `exp`); open connections
    /// close then.
    pub expires: Option<SystemTime>,
    /// How the caller authenticated: what must still stand for it to stay connected.
    pub credential: Credential,
}

/// How a principal authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// An API key, by its digest (a key rotated under the same name is another key).
    Key { digest: [u8; 32] },
    /// A stream token, signed by the key with this digest.
    StreamToken { issuer: [u8; 32] },
    /// An identity provider's JWT, signed with the JWKS key `kid`, checked under the
    /// `auth.jwt` settings with this fingerprint.
    Jwt { kid: Option<String>, settings: u64 },
}

/// Why an open connection's credential no longer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    /// Its key was removed or rotated (the connection closes with 4403).
    Key,
    /// The key that signed its token, or the JWKS key or settings its JWT was checked with,
    /// is gone (4401, as an expired token: a new token resumes it).
    Token,
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
        within(
            grant,
            need,
            "a stream token can only send to or subscribe to its stream",
        )
    }

    /// Whether an identity's grants let it do what `need` says on another owner's `stream`:
    /// `Ok(false)` where they do not cover it (answered as not found).
    pub fn may_share(&self, stream: &uuid::Uuid, need: Need) -> Result<bool, Denied> {
        match &self.shared {
            Some(grant) if grant.covers(stream) => within(
                grant,
                need,
                "a grant on another owner's stream allows only sending and subscribing",
            ),
            _ => Ok(false),
        }
    }

    /// Time left until the credential expires (`None`: it does not).
    pub fn remaining(&self) -> Option<Duration> {
        self.expires
            .map(|at| at.duration_since(SystemTime::now()).unwrap_or_default())
    }
}

/// Whether a grant allows `need` on a stream it covers.
fn within(grant: &Grant, need: Need, key_only: &str) -> Result<bool, Denied> {
    match need {
        Need::Key => Err(Denied::Forbidden(format!(
            "{key_only}; this needs the API key"
        ))),
        Need::Scope(scope) if !grant.allows(scope) => Err(Denied::Forbidden(format!(
            "this token's scope is {}; this needs `{}`",
            scope_list(&grant.scopes()),
            scope_name(scope)
        ))),
        _ => Ok(true),
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

/// Where a request may carry its credentials (see the module docs for the order), and the
/// client certificate's subject of its connection (with mutual TLS).
#[derive(Debug, Default, Clone, Copy)]
pub struct Presented<'a> {
    pub api_key: Option<&'a str>,
    pub authorization: Option<&'a str>,
    pub ws_protocols: Option<&'a str>,
    pub access_token: Option<&'a str>,
    pub cert_subject: Option<&'a str>,
}

/// Every credential the daemon accepts, replaced whole by a reload.
pub struct Credentials {
    pub keys: KeyStore,
    /// `auth.jwt`, when set.
    pub jwt: Option<Arc<JwtVerifier>>,
}

impl Credentials {
    /// Authenticates from whatever the request presented, in the order of the module docs.
    pub async fn identify(&self, presented: Presented<'_>) -> Result<Principal, Denied> {
        let subject = presented.cert_subject;
        if let Some(key) = presented.api_key {
            return self.keys.authenticate(key.trim(), subject);
        }
        if let Some(authorization) = presented.authorization {
            let token = authorization
                .trim()
                .split_once(' ')
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, token)| token.trim())
                .ok_or(Denied::InvalidToken)?;
            return self.token(token).await;
        }
        if let Some(protocols) = presented.ws_protocols {
            if let Some(key) = from_protocols(protocols, WS_PROTOCOL_KEY_PREFIX) {
                return self.keys.authenticate(key, subject);
            }
            if let Some(token) = from_protocols(protocols, WS_PROTOCOL_TOKEN_PREFIX) {
                return self.token(token).await;
            }
        }
        match presented.access_token {
            Some(token) => self.token(token.trim()).await,
            None => Err(Denied::MissingKey),
        }
    }

    /// A bearer token: one of our stream tokens (HS256, issuer `streamgate`), else the
    /// identity provider's when `auth.jwt` is set.
    pub async fn token(&self, token: &str) -> Result<Principal, Denied> {
        match (tokens::is_ours(token), &self.jwt) {
            (false, Some(jwt)) => jwt.verify(token).await,
            _ => self.keys.authenticate_token(token),
        }
    }

    /// Signs a stream token for `grant`, as the key named `owner`.
    pub fn issue(&self, owner: &str, grant: &Grant) -> Result<String, SignError> {
        self.keys.issue(owner, grant)
    }

    /// Whether `caller`'s credential no longer stands under these credentials (after a
    /// reload, or a JWKS refresh that dropped its key).
    pub fn revoked(&self, caller: &Principal) -> Option<Revoked> {
        let stands = match &caller.credential {
            Credential::Key { digest } => {
                return (!self.keys.holds(&caller.name, digest)).then_some(Revoked::Key)
            }
            Credential::StreamToken { issuer } => self.keys.holds(&caller.name, issuer),
            Credential::Jwt { kid, settings } => self
                .jwt
                .as_ref()
                .is_some_and(|jwt| jwt.fingerprint() == *settings && jwt.knows(kid.as_deref())),
        };
        (!stands).then_some(Revoked::Token)
    }
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
    use crate::config::ApiKey;

    fn keys() -> Vec<ApiKey> {
        vec![
            ApiKey::new("alice".into(), "alice-key-123".into(), false),
            ApiKey::new("ops".into(), "ops-key-456789".into(), true),
        ]
    }

    fn store() -> Credentials {
        Credentials {
            keys: KeyStore::new(&keys()),
            jwt: None,
        }
    }

    fn block<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn finds_the_right_principal() {
        let s = store();
        assert_eq!(
            s.keys.authenticate("alice-key-123", None).unwrap().name,
            "alice"
        );
        assert!(s.keys.authenticate("ops-key-456789", None).unwrap().admin);
        assert!(matches!(
            s.keys.authenticate("nope", None),
            Err(Denied::InvalidKey)
        ));
    }

    #[test]
    fn a_key_bound_to_a_certificate_needs_that_certificate() {
        let mut bound = ApiKey::new("svc".into(), "svc-key-12345".into(), false);
        bound.client_cert_subject = Some("CN=svc".into());
        let s = KeyStore::new(&[bound]);
        assert!(s.authenticate("svc-key-12345", Some("CN=svc")).is_ok());
        for other in [None, Some("CN=other")] {
            assert!(matches!(
                s.authenticate("svc-key-12345", other),
                Err(Denied::Forbidden(_))
            ));
        }
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
        let p = block(s.identify(protocols("streamgate.v1, apikey.alice-key-123"))).unwrap();
        assert_eq!(p.name, "alice");
        assert!(matches!(
            block(s.identify(protocols("streamgate.v1"))),
            Err(Denied::MissingKey)
        ));
        assert!(matches!(
            block(s.identify(Presented::default())),
            Err(Denied::MissingKey)
        ));
    }

    fn grant() -> Grant {
        Grant {
            streams: vec![uuid::Uuid::new_v4()],
            send: true,
            subscribe: false,
            // Whole seconds, as a token carries it.
            expires: std::time::UNIX_EPOCH
                + Duration::from_secs(
                    SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_secs()
                        + 60,
                ),
        }
    }

    #[test]
    fn a_token_stands_for_its_key_with_its_grant_only() {
        let s = store();
        let grant = grant();
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
            let p = block(s.identify(presented)).unwrap();
            assert_eq!((p.name.as_str(), p.grant.as_ref()), ("alice", Some(&grant)));
            assert_eq!(p.expires, Some(grant.expires));
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
        let forged = KeyStore::new(&[ApiKey::new("alice".into(), "another-key".into(), false)])
            .issue("alice", &grant)
            .unwrap();
        assert!(matches!(
            s.keys.authenticate_token(&forged),
            Err(Denied::InvalidToken)
        ));
        assert!(matches!(
            block(s.identify(Presented {
                authorization: Some("Basic abc"),
                ..Presented::default()
            })),
            Err(Denied::InvalidToken)
        ));
    }

    #[test]
    fn a_reload_revokes_removed_and_rotated_keys_and_their_tokens() {
        let s = store();
        let alice = s.keys.authenticate("alice-key-123", None).unwrap();
        let ops = s.keys.authenticate("ops-key-456789", None).unwrap();
        let token = s.issue("alice", &grant()).unwrap();
        let by_token = s.keys.authenticate_token(&token).unwrap();
        assert_eq!(s.revoked(&alice), None);
        assert_eq!(s.revoked(&by_token), None);
        // alice's key rotated (same name, new key); ops unchanged.
        let reloaded = Credentials {
            keys: KeyStore::new(&[
                ApiKey::new("alice".into(), "alice-key-NEW".into(), false),
                ApiKey::new("ops".into(), "ops-key-456789".into(), true),
            ]),
            jwt: None,
        };
        assert_eq!(reloaded.revoked(&alice), Some(Revoked::Key));
        assert_eq!(reloaded.revoked(&by_token), Some(Revoked::Token));
        assert_eq!(reloaded.revoked(&ops), None);
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
