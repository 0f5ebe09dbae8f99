//! The one TLS crypto provider of the daemon (the listener, and JWKS fetches): rustls over
//! aws-lc-rs, rustls's default (and reqwest's), with post-quantum key exchange.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

/// The provider every TLS configuration of the daemon is built with.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A TLS client configuration that trusts the Mozilla roots (`webpki-roots`).
pub fn client_config() -> Result<rustls::ClientConfig, rustls::Error> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
