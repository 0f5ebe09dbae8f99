//! Scoped stream tokens: what a web page or a shell pipeline holds instead of an API key.
//! A token names one stream and what it may do there (`send`, `subscribe`, or both) until it
//! expires; it can do nothing else (no other stream, no start, list, end or stats).
//!
//! Tokens are JWTs (HS256, via `jsonwebtoken`). Each is signed with a secret derived from the
//! owner's API key (`auth::KeyStore` keeps the derived secret, never the key), which gives
//! three properties without new settings: every instance configured with the same keys
//! accepts every instance's tokens (no sticky sessions); rotating or removing a key revokes
//! all of its tokens; and the zero-config key file is all a local daemon needs. Checks run in
//! constant time (`jsonwebtoken` compares signatures with `ring`/HMAC verification).
//!
//! A token is never logged: the request log writes the path without its query, and errors
//! never quote a presented token.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ApiError;
use crate::wire::Scope;

/// `iss` of every token: tokens of other issuers are refused.
const ISSUER: &str = "streamgate";

/// What a token lets its holder do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub stream: Uuid,
    pub send: bool,
    pub subscribe: bool,
    /// When it stops working (also on open connections).
    pub expires: SystemTime,
}

impl Grant {
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
    /// Name of the key that issued it (and owns the stream).
    sub: String,
    stream: Uuid,
    scope: Vec<Scope>,
    iat: u64,
    exp: u64,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// Signs a token for `grant`, issued by the key named `owner` with its derived `secret`.
pub fn issue(owner: &str, secret: &[u8], grant: &Grant) -> Result<String, ApiError> {
    let claims = Claims {
        iss: ISSUER.into(),
        sub: owner.into(),
        stream: grant.stream,
        scope: grant.scopes(),
        iat: unix(SystemTime::now()),
        exp: unix(grant.expires),
    };
    let internal =
        |e: jsonwebtoken::errors::Error| ApiError::Internal(format!("cannot sign a token: {e}"));
    let key = EncodingKey::from_secret(secret).map_err(internal)?;
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).map_err(internal)
}

/// Reads the key name a token says issued it, before its signature can be checked (the
/// secret depends on it). Nothing read here is trusted until `verify` passed.
pub fn claimed_owner(token: &str) -> Result<String, ApiError> {
    jsonwebtoken::dangerous::insecure_decode_claims::<Claims>(token)
        .map(|c| c.sub)
        .map_err(|_| ApiError::InvalidToken)
}

/// Checks a token's signature (with the secret of the key it names), issuer and expiry.
pub fn verify(token: &str, secret: &[u8]) -> Result<Grant, ApiError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 0;
    validation.set_issuer(&[ISSUER]);
    validation.set_required_spec_claims(&["exp", "iss", "sub"]);
    let key = DecodingKey::from_secret(secret).map_err(|_| ApiError::InvalidToken)?;
    let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation)
        .map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => ApiError::TokenExpired,
            _ => ApiError::InvalidToken,
        })?
        .claims;
    let grant = Grant {
        stream: claims.stream,
        send: claims.scope.contains(&Scope::Send),
        subscribe: claims.scope.contains(&Scope::Subscribe),
        expires: UNIX_EPOCH + Duration::from_secs(claims.exp),
    };
    // `jsonwebtoken` still accepts a token during its `exp` second; open connections close
    // at its start, so new ones are refused from then on too.
    if grant.remaining().is_zero() {
        return Err(ApiError::TokenExpired);
    }
    Ok(grant)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(ttl: Duration) -> Grant {
        Grant {
            stream: Uuid::new_v4(),
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
        assert_eq!(back.stream, g.stream);
        assert!(back.subscribe && !back.send);
        assert!(matches!(
            verify(&t, b"secret-b"),
            Err(ApiError::InvalidToken)
        ));
    }

    #[test]
    fn expired_and_malformed_tokens_are_refused() {
        let mut g = grant(Duration::ZERO);
        g.expires = SystemTime::now() - Duration::from_secs(5);
        let t = issue("alice", b"s", &g).unwrap();
        assert!(matches!(verify(&t, b"s"), Err(ApiError::TokenExpired)));
        assert!(matches!(
            claimed_owner("not.a.jwt"),
            Err(ApiError::InvalidToken)
        ));
        assert!(matches!(
            verify("garbage", b"s"),
            Err(ApiError::InvalidToken)
        ));
    }

    #[test]
    fn a_token_with_alg_none_is_refused() {
        // header {"alg":"none"} with valid-looking claims and no signature
        let g = grant(Duration::from_secs(60));
        let t = issue("alice", b"s", &g).unwrap();
        let claims = t.split('.').nth(1).unwrap();
        let forged = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{claims}.");
        assert!(matches!(verify(&forged, b"s"), Err(ApiError::InvalidToken)));
    }
}
