//! Scoped stream tokens: what a web page or a shell pipeline holds instead of an API key.
//! A token names its streams (one, or up to [`MAX_STREAMS`]) and what it may do there
//! (`send`, `subscribe`, or both) until it expires; it can do nothing else (no other stream,
//! no start, list, end or stats).
//!
//! Tokens are JWTs (HS256, via `jsonwebtoken`). Each is signed with a secret derived from the
//! owner's API key (`auth::KeyStore` keeps the derived secret, never the key), which gives
//! three properties without new settings: every instance configured with the same keys
//! accepts every instance's tokens (no sticky sessions); rotating or removing a key (a
//! reload) revokes all of its tokens, and closes the connections opened with them; and the
//! zero-config key file is all a local daemon needs. Checks run in
//! constant time (`jsonwebtoken` compares signatures with `ring`/HMAC verification).
//!
//! A token is never logged: the request log writes the path without its query, and errors
//! never quote a presented token.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Denied;
use crate::wire::Scope;

/// A token could not be signed (a bug, or a key removed meanwhile).
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot sign a token: {0}")]
pub struct SignError(pub String);

/// `iss` of every token: tokens of other issuers are refused.
const ISSUER: &str = "streamgate";

/// Most streams one token may name: a token travels in a header (or a URL), and each
/// stream id adds about 40 bytes to it.
pub const MAX_STREAMS: usize = 100;

/// What a token lets its holder do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The streams it is for.
    pub streams: Vec<Uuid>,
    pub send: bool,
    pub subscribe: bool,
    /// When it stops working (also on open connections).
    pub expires: SystemTime,
}

impl Grant {
    /// Whether the token is for `stream`.
    pub fn covers(&self, stream: &Uuid) -> bool {
        self.streams.contains(stream)
    }

    pub fn allows(&self, scope: Scope) -> bool {
        match scope {
            Scope::Send => self.send,
            Scope::Subscribe => self.subscribe,
        }
    }

    /// The scopes, as the wire names them.
    pub fn scopes(&self) -> Vec<Scope> {
        let mut scopes = Vec::new();
        if self.send {
            scopes.push(Scope::Send);
        }
        if self.subscribe {
            scopes.push(Scope::Subscribe);
        }
        scopes
    }

    /// Time left until expiry (zero once expired).
    pub fn remaining(&self) -> Duration {
        self.expires
            .duration_since(SystemTime::now())
            .unwrap_or_default()
    }
}

/// The signed claims.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    /// Name of the key that issued it (and owns the streams).
    sub: String,
    /// The one stream of a single-stream token (what tokens said before `streams`, and what
    /// the console page reads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stream: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    streams: Vec<Uuid>,
    scope: Vec<Scope>,
    iat: u64,
    exp: u64,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// Signs a token for `grant`, issued by the key named `owner` with its derived `secret`.
pub fn issue(owner: &str, secret: &[u8], grant: &Grant) -> Result<String, SignError> {
    let claims = Claims {
        iss: ISSUER.into(),
        sub: owner.into(),
        stream: match grant.streams[..] {
            [one] => Some(one),
            _ => None,
        },
        streams: grant.streams.clone(),
        scope: grant.scopes(),
        iat: unix(SystemTime::now()),
        exp: unix(grant.expires),
    };
    let internal = |e: jsonwebtoken::errors::Error| SignError(e.to_string());
    let key = EncodingKey::from_secret(secret).map_err(internal)?;
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).map_err(internal)
}

/// Whether a token says it is one of ours (issuer `streamgate`, HS256), read before any
/// check: it picks the verifier, and the chosen one checks everything.
pub fn is_ours(token: &str) -> bool {
    #[derive(Deserialize)]
    struct Issuer {
        iss: Option<String>,
    }
    let header_ours = jsonwebtoken::decode_header(token).is_ok_and(|h| h.alg == Algorithm::HS256);
    header_ours
        && jsonwebtoken::dangerous::insecure_decode_claims::<Issuer>(token)
            .is_ok_and(|c| c.iss.as_deref() == Some(ISSUER))
}

/// Reads the key name a token says issued it, before its signature can be checked (the
/// secret depends on it). Nothing read here is trusted until `verify` passed.
pub fn claimed_owner(token: &str) -> Result<String, Denied> {
    jsonwebtoken::dangerous::insecure_decode_claims::<Claims>(token)
        .map(|c| c.sub)
        .map_err(|_| Denied::InvalidToken)
}

/// Checks a token's signature (with the secret of the key it names), issuer and expiry.
pub fn verify(token: &str, secret: &[u8]) -> Result<Grant, Denied> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 0;
    validation.set_issuer(&[ISSUER]);
    validation.set_required_spec_claims(&["exp", "iss", "sub"]);
    let key = DecodingKey::from_secret(secret).map_err(|_| Denied::InvalidToken)?;
    let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation)
        .map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => Denied::TokenExpired,
            _ => Denied::InvalidToken,
        })?
        .claims;
    let mut streams = claims.streams;
    if let Some(one) = claims.stream.filter(|s| !streams.contains(s)) {
        streams.push(one);
    }
    if streams.is_empty() || streams.len() > MAX_STREAMS {
        return Err(Denied::InvalidToken);
    }
    let grant = Grant {
        streams,
        send: claims.scope.contains(&Scope::Send),
        subscribe: claims.scope.contains(&Scope::Subscribe),
        expires: UNIX_EPOCH + Duration::from_secs(claims.exp),
    };
    // `jsonwebtoken` still accepts a token during its `exp` second; open connections close
    // at its start, so new ones are refused from then on too.
    if grant.remaining().is_zero() {
        return Err(Denied::TokenExpired);
    }
    Ok(grant)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(ttl: Duration) -> Grant {
        Grant {
            streams: vec![Uuid::new_v4()],
            send: false,
            subscribe: true,
            expires: SystemTime::now() + ttl,
        }
    }

    #[test]
    fn a_token_round_trips_with_its_secret_only() {
        let g = grant(Duration::from_secs(60));
        let t = issue("alice", b"secret-a", &g).unwrap();
        assert_eq!(claimed_owner(&t).unwrap(), "alice");
        let back = verify(&t, b"secret-a").unwrap();
        assert_eq!(back.streams, g.streams);
        assert!(back.subscribe && !back.send);
        assert!(matches!(verify(&t, b"secret-b"), Err(Denied::InvalidToken)));
    }

    #[test]
    fn expired_and_malformed_tokens_are_refused() {
        let mut g = grant(Duration::ZERO);
        g.expires = SystemTime::now() - Duration::from_secs(5);
        let t = issue("alice", b"s", &g).unwrap();
        assert!(matches!(verify(&t, b"s"), Err(Denied::TokenExpired)));
        assert!(matches!(
            claimed_owner("not.a.jwt"),
            Err(Denied::InvalidToken)
        ));
        assert!(matches!(verify("garbage", b"s"), Err(Denied::InvalidToken)));
    }

    #[test]
    fn a_token_with_alg_none_is_refused() {
        // header {"alg":"none"} with valid-looking claims and no signature
        let g = grant(Duration::from_secs(60));
        let t = issue("alice", b"s", &g).unwrap();
        let claims = t.split('.').nth(1).unwrap();
        let forged = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{claims}.");
        assert!(matches!(verify(&forged, b"s"), Err(Denied::InvalidToken)));
    }
}
