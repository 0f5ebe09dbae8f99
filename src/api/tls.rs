//! HTTPS and WSS on the listener (`http.tls`), with rustls: TLS 1.2 and 1.3 only, ALPN
//! `http/1.1`, and with `client_ca` mutual TLS (every client presents a certificate that
//! chains to it; its subject is what `api_keys[].client_cert_subject` binds a key to).
//!
//! The certificates are read at start and again on every reload: the acceptor is swapped
//! whole, new handshakes use the new certificate, and connections already open keep theirs.
//! A file that cannot be read or parsed is an error naming the file and what is wrong with it,
//! at start (the daemon does not start) and on a reload (the reload is refused whole).

use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::config::Tls;
use crate::error::Error;

/// The listener's TLS side, swapped on a reload.
pub struct TlsEdge {
    acceptor: RwLock<TlsAcceptor>,
}

impl TlsEdge {
    pub fn new(settings: &Tls) -> Result<Self, Error> {
        Ok(Self {
            acceptor: RwLock::new(acceptor(settings)?),
        })
    }

    /// The acceptor for the next handshake.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.read().expect("tls lock").clone()
    }

    /// Reads the certificates again; on an error the old ones stay.
    pub fn reload(&self, settings: &Tls) -> Result<(), Error> {
        let new = acceptor(settings)?;
        *self.acceptor.write().expect("tls lock") = new;
        Ok(())
    }
}

fn acceptor(settings: &Tls) -> Result<TlsAcceptor, Error> {
    let provider = crate::crypto::provider();
    let bad = |key: &str, path: &std::path::Path, why: String| Error::Config {
        message: format!("{key}: {}: {why}", path.display()),
    };
    let certs = certificates("http.tls.cert", &settings.cert)?;
    let key = PrivateKeyDer::from_pem_file(&settings.key)
        .map_err(|e| bad("http.tls.key", &settings.key, pem_error(e, "private key")))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| Error::Config {
            message: format!("http.tls: {e}"),
        })?;
    let builder = match &settings.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates("http.tls.client_ca", ca)? {
                roots
                    .add(cert)
                    .map_err(|e| bad("http.tls.client_ca", ca, e.to_string()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| bad("http.tls.client_ca", ca, e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        bad(
            "http.tls.cert",
            &settings.cert,
            format!("{e} (with http.tls.key)"),
        )
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Every certificate of a PEM file (at least one).
fn certificates(key: &str, path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let bad = |why: String| Error::Config {
        message: format!("{key}: {}: {why}", path.display()),
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(pem_error(e, "certificate")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(pem_error(e, "certificate")))?;
    if certs.is_empty() {
        return Err(bad("no certificate in it (PEM `BEGIN CERTIFICATE`)".into()));
    }
    Ok(certs)
}

fn pem_error(e: rustls::pki_types::pem::Error, what: &str) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(e) => format!("cannot read it: {e}"),
        rustls::pki_types::pem::Error::NoItemsFound => format!("no {what} in it (PEM)"),
        other => format!("not a PEM {what}: {other:?}"),
    }
}

/// The subject of a client certificate, as `api_keys[].client_cert_subject` names it
/// (`CN=alice, O=Example`, in the certificate's order).
pub fn subject(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(parsed.subject().to_string())
}
