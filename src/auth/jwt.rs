//! Tokens from the team's identity provider (`auth.jwt`): JWTs signed with the provider's
//! keys, checked against its JWKS.
//!
//! The JWKS is fetched at start, again every `refresh_s`, and when a token names a key not
//! seen yet (such fetches at most once every `min_refresh_s`, so a stream of forged `kid`s
//! cannot make the daemon hammer the provider). Keys stay cached while the provider is unreachable, so an
//! outage stops no token whose key is known. A refresh that drops a key tells the open
//! connections (through [`JwtVerifier::changes`]), and those whose token it signed close.
//!
//! Only asymmetric algorithms are accepted, and only those `auth.jwt.algorithms` names; the
//! key must be of the token's algorithm family (so an HS256 token "signed" with a public key
//! is refused, as is `alg: none`, which `jsonwebtoken` does not even parse). `iss`, `aud`,
//! `exp` and `nbf` are checked with `leeway_s` of clock skew. Nothing of a token is logged.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use tokio::sync::watch;
use uuid::Uuid;

use super::tokens::{Grant, MAX_STREAMS};
use super::{Credential, Denied, Principal};
use crate::config::Jwt;
use crate::wire::Scope;

/// Longest a JWKS fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest JWKS document read.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// A key of the JWKS, ready to check signatures.
struct Key {
    decoding: DecodingKey,
    /// The algorithm the JWKS says it is for, if it says.
    alg: Option<Algorithm>,
}

/// Checks an identity provider's tokens.
pub struct JwtVerifier {
    settings: Jwt,
    /// Tells these settings from a reload's other ones.
    fingerprint: u64,
    algorithms: Vec<Algorithm>,
    /// By `kid` (`None`: a key without one).
    keys: RwLock<HashMap<Option<String>, Key>>,
    /// When an unknown `kid` last made it fetch the JWKS (fetched or not).
    last_on_demand: Mutex<Option<Instant>>,
    fetching: tokio::sync::Mutex<()>,
    http: reqwest::Client,
    /// Bumped when a refresh drops a key.
    changes: watch::Sender<u64>,
}

impl JwtVerifier {
    /// A verifier with the JWKS loaded if it can be now (a provider down at start is
    /// retried by the refresher and on the first token; a `jwks_file` that cannot be read
    /// is an error).
    pub async fn start(settings: &Jwt) -> Result<Arc<Self>, String> {
        let http = crate::crypto::http_client(FETCH_TIMEOUT)?;
        let mut hasher = DefaultHasher::new();
        settings.hash(&mut hasher);
        let algorithms = settings
            .algorithms
            .iter()
            .filter_map(|a| a.parse::<Algorithm>().ok())
            .collect();
        let verifier = Arc::new(Self {
            settings: settings.clone(),
            fingerprint: hasher.finish(),
            algorithms,
            keys: RwLock::default(),
            last_on_demand: Mutex::default(),
            fetching: tokio::sync::Mutex::default(),
            http,
            changes: watch::Sender::new(0),
        });
        match verifier.refresh().await {
            Ok(()) => {}
            // A file is there or not: no point starting without it.
            Err(e) if settings.jwks_file.is_some() => return Err(e),
            Err(e) => tracing::warn!(error = %e, "auth.jwt: cannot load the JWKS yet; retrying"),
        }
        Ok(verifier)
    }

    /// Reads the JWKS again every `refresh_s` until `stopping`.
    pub fn refresh_on_schedule(
        self: &Arc<Self>,
        mut stopping: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let verifier = Arc::downgrade(self);
        let every = Duration::from_secs(self.settings.refresh_s);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tokio::select! {
                    _ = stopping.changed() => return,
                    _ = tick.tick() => {}
                }
                // A reload replaced this verifier: its schedule ends with it.
                let Some(verifier) = verifier.upgrade() else {
                    return;
                };
                if let Err(e) = verifier.refresh().await {
                    tracing::warn!(error = %e, "auth.jwt: JWKS refresh failed; keeping the keys known");
                }
            }
        })
    }

    /// The settings it checks tokens under.
    pub fn settings(&self) -> &Jwt {
        &self.settings
    }

    /// These settings' fingerprint (a principal checked under others no longer stands).
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// Whether the JWKS still has the key `kid`.
    pub fn knows(&self, kid: Option<&str>) -> bool {
        self.keys
            .read()
            .expect("jwks lock")
            .contains_key(&kid.map(str::to_string))
    }

    /// Bumped whenever a refresh drops a key.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Checks a token and says who it stands for.
    pub async fn verify(&self, token: &str) -> Result<Principal, Denied> {
        let invalid = |why: &str| Denied::InvalidJwt(why.to_string());
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| invalid("not a JWT this daemon accepts"))?;
        if !self.algorithms.contains(&header.alg) {
            return Err(invalid(&format!(
                "algorithm {:?} is not accepted (auth.jwt.algorithms)",
                header.alg
            )));
        }
        let kid = header.kid.clone();
        if !self.knows(kid.as_deref()) {
            // A key the provider added since the last fetch, perhaps.
            self.refresh_if_due().await;
        }
        let claims = {
            let keys = self.keys.read().expect("jwks lock");
            let key = keys
                .get(&kid)
                .ok_or_else(|| invalid("signed with a key the identity provider does not list"))?;
            if key.alg.is_some_and(|alg| alg != header.alg) {
                return Err(invalid("the token's algorithm is not its key's"));
            }
            let mut validation = Validation::new(header.alg);
            validation.leeway = self.settings.leeway_s;
            validation.validate_nbf = true;
            validation.set_issuer(&[&self.settings.issuer]);
            validation.set_audience(&[&self.settings.audience]);
            validation.set_required_spec_claims(&["exp", "iss", "aud"]);
            jsonwebtoken::decode::<Value>(token, &key.decoding, &validation)
                .map_err(|e| match e.kind() {
                    ErrorKind::ExpiredSignature => Denied::TokenExpired,
                    ErrorKind::InvalidAudience => invalid("wrong audience (auth.jwt.audience)"),
                    ErrorKind::InvalidIssuer => invalid("wrong issuer (auth.jwt.issuer)"),
                    ErrorKind::ImmatureSignature => invalid("not valid yet (nbf)"),
                    ErrorKind::MissingRequiredClaim(c) => invalid(&format!("no `{c}` claim")),
                    ErrorKind::InvalidSignature => invalid("bad signature"),
                    _ => invalid("bad token"),
                })?
                .claims
        };
        self.principal(&claims, kid)
    }

    /// The caller a checked token's claims name.
    fn principal(&self, claims: &Value, kid: Option<String>) -> Result<Principal, Denied> {
        let owner = claims
            .get(&self.settings.owner_claim)
            .and_then(Value::as_str)
            .filter(|o| !o.is_empty())
            .ok_or_else(|| {
                Denied::InvalidJwt(format!(
                    "no `{}` claim naming the caller (auth.jwt.owner_claim)",
                    self.settings.owner_claim
                ))
            })?;
        let expires = claims
            .get("exp")
            .and_then(Value::as_u64)
            .map(|exp| UNIX_EPOCH + Duration::from_secs(exp));
        let shared = match claims.get(&self.settings.grants_claim) {
            None | Some(Value::Null) => None,
            Some(grants) => Some(self.grants(grants, expires)?),
        };
        Ok(Principal {
            name: format!("{}{owner}", self.settings.owner_prefix),
            admin: false,
            grant: None,
            shared,
            expires,
            credential: Credential::Jwt {
                kid,
                settings: self.fingerprint,
            },
        })
    }

    /// The grants claim: `{"streams": [...], "scope": [...]}`.
    fn grants(&self, grants: &Value, expires: Option<SystemTime>) -> Result<Grant, Denied> {
        let bad = || {
            Denied::InvalidJwt(format!(
                "the `{}` claim is not {{\"streams\": [stream ids, at most {MAX_STREAMS}], \
                 \"scope\": [\"send\" and/or \"subscribe\"]}}",
                self.settings.grants_claim
            ))
        };
        let streams: Vec<Uuid> = grants
            .get("streams")
            .and_then(|s| serde_json::from_value(s.clone()).ok())
            .filter(|s: &Vec<Uuid>| s.len() <= MAX_STREAMS)
            .ok_or_else(bad)?;
        let scope: Vec<Scope> = grants
            .get("scope")
            .and_then(|s| serde_json::from_value(s.clone()).ok())
            .ok_or_else(bad)?;
        Ok(Grant {
            streams,
            send: scope.contains(&Scope::Send),
            subscribe: scope.contains(&Scope::Subscribe),
            expires: expires.unwrap_or(UNIX_EPOCH),
        })
    }

    /// Fetches the JWKS for an unknown `kid`, unless one did within `min_refresh_s`.
    async fn refresh_if_due(&self) {
        let due = {
            let mut last = self.last_on_demand.lock().expect("jwks lock");
            let due = last
                .is_none_or(|at| at.elapsed() >= Duration::from_secs(self.settings.min_refresh_s));
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if due {
            if let Err(e) = self.refresh().await {
                tracing::warn!(error = %e, "auth.jwt: JWKS refresh failed");
            }
        }
    }

    /// Reads the JWKS now and replaces the keys (kept as they were when it cannot be read).
    async fn refresh(&self) -> Result<(), String> {
        let _one_at_a_time = self.fetching.lock().await;
        let text = match (&self.settings.jwks_url, &self.settings.jwks_file) {
            (Some(url), _) => self.fetch(url).await?,
            (None, Some(path)) => {
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?
            }
            (None, None) => return Err("no jwks_url or jwks_file".into()),
        };
        let set: JwkSet = serde_json::from_slice(&text).map_err(|e| format!("not a JWKS: {e}"))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            // Symmetric keys have no place in a provider's public set: skipped.
            let Ok(decoding) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            if decoding.family() == jsonwebtoken::AlgorithmFamily::Hmac {
                continue;
            }
            let alg = jwk.common.key_algorithm.and_then(algorithm_of);
            keys.insert(jwk.common.key_id.clone(), Key { decoding, alg });
        }
        let dropped = {
            let mut held = self.keys.write().expect("jwks lock");
            let dropped = held.keys().any(|kid| !keys.contains_key(kid));
            *held = keys;
            dropped
        };
        if dropped {
            self.changes.send_modify(|n| *n += 1);
        }
        Ok(())
    }

    async fn fetch(&self, url: &str) -> Result<Vec<u8>, String> {
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("cannot fetch the JWKS: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("the JWKS URL answered {}", resp.status()));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| format!("cannot read the JWKS: {e}"))?;
        if body.len() > MAX_JWKS_BYTES {
            return Err(format!("the JWKS is larger than {MAX_JWKS_BYTES} bytes"));
        }
        Ok(body.to_vec())
    }
}

/// The signature algorithm a JWK's `alg` names (`None` for an encryption algorithm).
fn algorithm_of(alg: KeyAlgorithm) -> Option<Algorithm> {
    format!("{alg:?}").parse().ok()
}
