//! The production edge's settings: TLS on the listener (`http.tls`) and tokens from an
//! identity provider (`auth.jwt`). Both can change on a reload (SIGHUP): certificates are read
//! again, and the JWT settings replace the old ones for new requests.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::invalid;
use crate::error::Error;

/// `http.tls`: HTTPS and WSS on the listener (TLS 1.2 and 1.3, ALPN `http/1.1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// PEM: the server certificate, then its chain.
    pub cert: PathBuf,
    /// PEM: its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM: the CAs a client certificate must chain to. Set, every client must present one
    /// (mutual TLS), and a key may be bound to a certificate subject
    /// (`api_keys[].client_cert_subject`).
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// `auth`: credentials besides the configured keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    /// Tokens from the team's identity provider; `null`: none.
    pub jwt: Option<Jwt>,
}

/// `auth.jwt`: JWTs signed by an identity provider, checked against its JWKS.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Jwt {
    /// `iss` every token must carry.
    pub issuer: String,
    /// An `aud` every token must carry.
    pub audience: String,
    /// Where the provider publishes its keys (fetched at start, on a schedule, and when a
    /// token names a key not seen yet); or `jwks_file`.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// A JWKS on disk instead of a URL (read at start and on reload).
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// Signature algorithms accepted; asymmetric only (a token signed with a shared secret,
    /// or `alg: none`, is refused whatever this says).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// The claim that names the caller; streams it starts are owned by
    /// `owner_prefix` + its value, as a key's are by the key's name.
    #[serde(default = "default_owner_claim")]
    pub owner_claim: String,
    /// Put before the owner claim's value, so an identity never shares streams with an API
    /// key of the same name.
    #[serde(default = "default_owner_prefix")]
    pub owner_prefix: String,
    /// A claim with grants on other streams: `{"streams": [ID, ...], "scope": ["send",
    /// "subscribe"]}`; absent from a token, the caller has its own streams only.
    #[serde(default = "default_grants_claim")]
    pub grants_claim: String,
    /// Clock skew allowed on `exp` and `nbf`, seconds.
    #[serde(default = "default_leeway_s")]
    pub leeway_s: u64,
    /// The JWKS is fetched again this often, seconds.
    #[serde(default = "default_refresh_s")]
    pub refresh_s: u64,
    /// A token naming an unknown key fetches the JWKS again at most this often, seconds.
    #[serde(default = "default_min_refresh_s")]
    pub min_refresh_s: u64,
}

fn default_algorithms() -> Vec<String> {
    ["RS256", "ES256", "EdDSA"].map(String::from).to_vec()
}
fn default_owner_claim() -> String {
    "sub".into()
}
fn default_owner_prefix() -> String {
    "jwt:".into()
}
fn default_grants_claim() -> String {
    "streamgate".into()
}
fn default_leeway_s() -> u64 {
    30
}
fn default_refresh_s() -> u64 {
    3600
}
fn default_min_refresh_s() -> u64 {
    10
}

/// The algorithms `auth.jwt.algorithms` may name.
pub const JWT_ALGORITHMS: [&str; 9] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

impl Jwt {
    pub(super) fn validate(&self) -> Result<(), Error> {
        for (key, value) in [
            ("auth.jwt.issuer", &self.issuer),
            ("auth.jwt.audience", &self.audience),
            ("auth.jwt.owner_claim", &self.owner_claim),
        ] {
            if value.is_empty() {
                return Err(invalid(key, &"", "must not be empty"));
            }
        }
        match (&self.jwks_url, &self.jwks_file) {
            (Some(url), None) => {
                if !url.starts_with("https://") && !url.starts_with("http://") {
                    return Err(invalid(
                        "auth.jwt.jwks_url",
                        url,
                        "must be an http:// or https:// URL",
                    ));
                }
            }
            (None, Some(_)) => {}
            _ => {
                return Err(Error::Config {
                    message: "auth.jwt: give exactly one of jwks_url and jwks_file".into(),
                })
            }
        }
        if self.algorithms.is_empty() {
            return Err(invalid(
                "auth.jwt.algorithms",
                &"[]",
                "must name one at least",
            ));
        }
        for alg in &self.algorithms {
            if !JWT_ALGORITHMS.contains(&alg.as_str()) {
                return Err(invalid(
                    "auth.jwt.algorithms",
                    alg,
                    &format!(
                        "is not one of {} (shared-secret and `none` algorithms are never \
                         accepted from an identity provider)",
                        JWT_ALGORITHMS.join(", ")
                    ),
                ));
            }
        }
        super::at_least("auth.jwt.refresh_s", self.refresh_s, 1)?;
        super::at_least("auth.jwt.min_refresh_s", self.min_refresh_s, 1)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn jwt_settings_are_checked() {
        let base = "auth:\n  jwt:\n    issuer: https://idp\n    audience: sg\n";
        let ok = format!("{base}    jwks_url: https://idp/jwks\n");
        let c = Config::from_yaml(&ok).unwrap();
        let jwt = c.auth.jwt.unwrap();
        assert_eq!(jwt.owner_claim, "sub");
        assert_eq!(jwt.algorithms, ["RS256", "ES256", "EdDSA"]);
        for (extra, named) in [
            ("", "exactly one of jwks_url"),
            ("    jwks_url: ftp://x\n", "auth.jwt.jwks_url"),
            (
                "    jwks_url: https://idp/jwks\n    algorithms: [HS256]\n",
                "auth.jwt.algorithms",
            ),
            (
                "    jwks_url: https://idp/jwks\n    algorithms: [none]\n",
                "auth.jwt.algorithms",
            ),
        ] {
            let err = Config::from_yaml(&format!("{base}{extra}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(named), "{extra}: {err}");
        }
    }
}
