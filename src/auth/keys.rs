//! The configured API keys, as digests: a presented key is hashed and compared against every
//! digest with `subtle`, so neither the match position nor the key length leaks through
//! timing. Each key also derives the secret its stream tokens are signed with; the key itself
//! is not kept.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::tokens::{self, Grant, SignError};
use super::{Credential, Denied, Principal};
use crate::config::ApiKey;

struct Entry {
    name: String,
    admin: bool,
    digest: [u8; 32],
    /// Signs and checks the key's stream tokens; derived from the key, which is not kept.
    token_secret: [u8; 32],
    /// With mutual TLS: the client certificate subject the key is bound to.
    cert_subject: Option<String>,
}

/// The configured keys.
pub struct KeyStore {
    entries: Vec<Entry>,
}

impl KeyStore {
    pub fn new(keys: &[ApiKey]) -> Self {
        let entries = keys
            .iter()
            .map(|k| Entry {
                name: k.name.clone(),
                admin: k.admin,
                digest: digest(&k.key),
                token_secret: token_secret(&k.key),
                cert_subject: k.client_cert_subject.clone(),
            })
            .collect();
        Self { entries }
    }

    /// Finds the caller for a presented key (every entry is compared, match or not), on a
    /// connection whose client certificate has `subject` (with mutual TLS).
    pub fn authenticate(
        &self,
        presented: &str,
        subject: Option<&str>,
    ) -> Result<Principal, Denied> {
        let presented = digest(presented);
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.digest.ct_eq(&presented)) {
                found = Some(entry);
            }
        }
        let entry = found.ok_or(Denied::InvalidKey)?;
        if let Some(bound) = &entry.cert_subject {
            if subject != Some(bound.as_str()) {
                return Err(Denied::Forbidden(
                    "this key is bound to another client certificate \
                     (api_keys[].client_cert_subject)"
                        .into(),
                ));
            }
        }
        Ok(Principal {
            name: entry.name.clone(),
            admin: entry.admin,
            grant: None,
            shared: None,
            expires: None,
            credential: Credential::Key {
                digest: entry.digest,
            },
        })
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
            expires: Some(grant.expires),
            grant: Some(grant),
            shared: None,
            credential: Credential::StreamToken {
                issuer: entry.digest,
            },
        })
    }

    /// Signs a token for `grant`, as the key named `owner`.
    pub fn issue(&self, owner: &str, grant: &Grant) -> Result<String, SignError> {
        let entry = self
            .entry(owner)
            .ok_or_else(|| SignError(format!("no key named {owner}")))?;
        tokens::issue(owner, &entry.token_secret, grant)
    }

    /// Whether the key named `name` with this digest is still configured.
    pub fn holds(&self, name: &str, key_digest: &[u8; 32]) -> bool {
        self.entry(name)
            .is_some_and(|e| bool::from(e.digest.ct_eq(key_digest)))
    }

    fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == name)
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
