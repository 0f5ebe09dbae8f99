//! The one TLS crypto provider of the daemon (the listener, and its HTTP client for JWKS
//! fetches and trace export): rustls over aws-lc-rs, rustls's default (and reqwest's), with
//! post-quantum key exchange.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

/// The provider every TLS configuration of the daemon is built with.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The daemon's outgoing HTTP client (JWKS fetches, OTLP export): this provider, the Mozilla
/// roots, and `timeout` per request.
pub fn http_client(timeout: std::time::Duration) -> Result<reqwest::Client, String> {
    let tls = client_config().map_err(|e| format!("TLS: {e}"))?;
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(timeout)
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
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
