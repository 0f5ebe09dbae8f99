//! TLS on the listener (`http.tls`), with certificates made at test time (rcgen): curl, Python
//! `websockets`, headless Chromium and streamctl's own client reach the daemon over HTTPS and
//! WSS; a plain-HTTP request, a wrong name, an expired or missing client certificate and a
//! client that never starts its handshake each fail alone while a good client is served;
//! mutual TLS binds a key to its certificate; a certificate rotated by a reload drops no
//! connection and the next handshake gets the new one.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use serde_json::{json, Value};
use streamgate::config::{ApiKey, Config, Tls};
use streamgate::reload::Reloader;
use streamgate_testkit::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// A test CA and the certificates it signs, as PEM files in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, as files and as rustls wants them.
struct Leaf {
    cert: PathBuf,
    key: PathBuf,
    der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl Pki {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "streamgate test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let pki = Self {
            dir: tempfile::tempdir().unwrap(),
            ca,
        };
        std::fs::write(pki.ca_path(), pki.ca.pem()).unwrap();
        pki
    }

    fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A certificate named `name` (files `name.pem`, `name.key`), for the names `sans`
    /// (a server) or none (a client), expired if asked.
    fn leaf(&self, name: &str, common_name: &str, sans: &[&str], expired: bool) -> Leaf {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let (cert_path, key_path) = (
            self.dir.path().join(format!("{name}.pem")),
            self.dir.path().join(format!("{name}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        Leaf {
            cert: cert_path,
            key: key_path,
            der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        roots
    }

    /// A TLS client trusting this CA, presenting `client` if given.
    fn client(&self, client: Option<&Leaf>) -> TlsConnector {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(self.roots());
        let config = match client {
            Some(leaf) => builder
                .with_client_auth_cert(
                    vec![leaf.der.clone()],
                    PrivateKeyDer::try_from(leaf.key_der.clone()).unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        TlsConnector::from(Arc::new(config))
    }
}

fn tls_config(server: &Leaf, client_ca: Option<&Path>) -> Config {
    let mut config = test_config();
    config.http.tls = Some(Tls {
        cert: server.cert.clone(),
        key: server.key.clone(),
        client_ca: client_ca.map(Path::to_path_buf),
    });
    config
}

/// One HTTP/1.1 request over TLS to `addr` (SNI `name`): the status and body, or why the
/// connection failed.
async fn https(
    tls: &TlsConnector,
    addr: SocketAddr,
    name: &str,
    method_path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, Value), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let server = ServerName::try_from(name.to_string()).unwrap();
    let mut stream = tls.connect(server, tcp).await.map_err(|e| e.to_string())?;
    let mut head = format!("{method_path} HTTP/1.1\r\nhost: {name}\r\nconnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("content-length: 0\r\n\r\n");
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .await
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not HTTP: {text}"))?;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    let body = body.lines().find(|l| l.starts_with('{')).unwrap_or("{}");
    Ok((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

/// Waits until the TLS daemon answers `/healthz` with `ok`.
async fn ready(tls: &TlsConnector, addr: SocketAddr) {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok((200, body)) = https(tls, addr, "localhost", "GET /healthz", &[]).await {
            if body["status"] == "ok" {
                return;
            }
        }
        assert!(Instant::now() < deadline, "the TLS daemon did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn start(config: Config, pki: &Pki) -> (Daemon, Reloader) {
    let (d, reloader) = Daemon::start_reloadable(config).await;
    ready(&pki.client(None), d.addr).await;
    (d, reloader)
}

/// The streamctl client library over HTTPS (trusting the test CA): a stream started, and a
/// record sent.
async fn client(pki: &Pki, addr: SocketAddr, key: &str) -> streamgate_client::Client {
    streamgate_client::Client::builder(
        &format!("https://localhost:{}", addr.port()),
        streamgate_client::Credential::ApiKey(key.into()),
    )
    .root_certificates(&std::fs::read(pki.ca_path()).unwrap())
    .build()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_wss_reach_the_daemon_from_curl_python_chromium_and_the_rust_client() {
    let pki = Pki::new();
    let server = pki.leaf("server", "localhost", &["localhost"], false);
    let (d, _) = start(tls_config(&server, None), &pki).await;
    let base = format!("https://localhost:{}", d.addr.port());

    // The Rust client library (what streamctl runs on), HTTPS then WSS.
    let c = client(&pki, d.addr, ALICE).await;
    let id = c.start(None).await.unwrap().stream_id;
    c.send(id, &json!({"over": "wss"})).await.unwrap();

    // curl, trusting the CA; and without it, refused by curl (60: untrusted certificate).
    let curl = |extra: &[&str]| {
        Command::new("curl")
            .args(["-sS", "--max-time", "10"])
            .args(extra)
            .arg(format!("{base}/api/stream/{id}"))
            .args(["-H", &format!("x-api-key: {ALICE}")])
            .output()
            .expect("curl runs")
    };
    let trusted = curl(&["--cacert", pki.ca_path().to_str().unwrap()]);
    assert!(trusted.status.success(), "{:?}", trusted);
    let view: Value = serde_json::from_slice(&trusted.stdout).unwrap();
    assert_eq!(view["records_in"], 1);
    assert_eq!(curl(&[]).status.code(), Some(60));

    // Python websockets over WSS: subscribe, receive the result.
    let script = r#"
import asyncio, json, ssl, sys
from websockets.asyncio.client import connect
async def main(url, key, stream, cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    async with connect(url, ssl=ctx, additional_headers={"X-API-Key": key}) as ws:
        await ws.send(json.dumps({"type": "subscribe", "stream_id": stream, "from": "earliest"}))
        while True:
            f = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if f["type"] == "result":
                print(json.dumps(f["data"], separators=(",", ":")))
                return
asyncio.run(main(*sys.argv[1:5]))
"#;
    let python = Command::new("python3")
        .args(["-c", script])
        .arg(format!("wss://localhost:{}/api/connect", d.addr.port()))
        .args([ALICE, &id.to_string(), pki.ca_path().to_str().unwrap()])
        .output()
        .expect("python3 runs");
    assert!(python.status.success(), "{python:?}");
    assert_eq!(
        String::from_utf8_lossy(&python.stdout).trim(),
        r#"{"over":"wss"}"#
    );

    // Headless Chromium, trusting exactly this certificate.
    let spki = spki_sha256_base64(&server.der);
    let browser = tests_dir().join("browser/tls.py");
    let chromium = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(browser)
            .args([&base, ALICE, &spki, &id.to_string()])
            .output()
    })
    .await
    .unwrap()
    .expect("python3 runs (the test command installs selenium and chromium)");
    assert!(chromium.status.success(), "{chromium:?}");
    assert_eq!(
        String::from_utf8_lossy(&chromium.stdout).trim(),
        r#"{"over":"wss"}"#
    );
    d.stop().await.unwrap();
}

fn tests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")
}

/// What Chromium's `--ignore-certificate-errors-spki-list` takes: the base64 SHA-256 of the
/// certificate's SubjectPublicKeyInfo.
fn spki_sha256_base64(cert: &CertificateDer<'_>) -> String {
    use base64::Engine;
    use sha2::Digest;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).unwrap();
    let digest = sha2::Sha256::digest(parsed.tbs_certificate.subject_pki.raw);
    base64::engine::general_purpose::STANDARD.encode(digest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_a_wrong_name_and_stalled_handshakes_fail_alone() {
    let pki = Pki::new();
    let server = pki.leaf("server", "localhost", &["localhost"], false);
    let mut config = tls_config(&server, None);
    config.limits.server.tls_handshake_timeout_ms = 1_000;
    let (d, _) = start(config, &pki).await;
    let good = pki.client(None);

    // 300 connections that never start their handshake, from another address.
    let mut stalled = Vec::new();
    for _ in 0..300 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        stalled.push(socket.connect(d.addr).await.unwrap());
    }
    let opened = Instant::now();

    // Plain HTTP to the TLS port: told where to go, in plain HTTP.
    let mut plain = TcpStream::connect(d.addr).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    plain.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("HTTPS"), "{answer}");

    // A name the certificate does not have: the client refuses the handshake.
    let err = https(&good, d.addr, "other.example", "GET /healthz", &[])
        .await
        .unwrap_err();
    assert!(
        err.contains("certificate") || err.contains("Certificate"),
        "{err}"
    );
    // A good client is served all along.
    assert_eq!(
        https(&good, d.addr, "localhost", "GET /healthz", &[])
            .await
            .unwrap()
            .0,
        200
    );

    // Every stalled connection is dropped within the handshake timeout (and some slack).
    for mut s in stalled {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), s.read(&mut byte)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "still open: {read:?}"
        );
    }
    let took = opened.elapsed();
    assert!(
        took < Duration::from_millis(3_000),
        "dropped after {took:?}"
    );
    assert_eq!(
        https(&good, d.addr, "localhost", "GET /healthz", &[])
            .await
            .unwrap()
            .0,
        200
    );
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_binds_a_key_to_its_certificate_and_refuses_expired_ones() {
    let pki = Pki::new();
    let server = pki.leaf("server", "localhost", &["localhost"], false);
    let svc = pki.leaf("svc", "svc", &[], false);
    let other = pki.leaf("other", "other", &[], false);
    let expired = pki.leaf("old", "svc", &[], true);
    let mut config = tls_config(&server, Some(&pki.ca_path()));
    let mut bound = ApiKey::new("svc".into(), "svc-key-0123456789".into(), false);
    bound.client_cert_subject = Some("CN=svc".into());
    config.api_keys.push(bound);
    let (d, _) = Daemon::start_reloadable(config).await;
    let as_svc = pki.client(Some(&svc));
    ready(&as_svc, d.addr).await;

    let list = |tls: TlsConnector, key: &'static str| async move {
        https(
            &tls,
            d.addr,
            "localhost",
            "GET /api/streams",
            &[("x-api-key", key)],
        )
        .await
    };
    assert_eq!(
        list(as_svc.clone(), "svc-key-0123456789").await.unwrap().0,
        200
    );
    // The same key from another certificate: 403; an unbound key from any certificate: 200.
    let (status, body) = list(pki.client(Some(&other)), "svc-key-0123456789")
        .await
        .unwrap();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    assert_eq!(list(pki.client(Some(&other)), ALICE).await.unwrap().0, 200);
    // No certificate, or an expired one: no handshake.
    assert!(list(pki.client(None), ALICE).await.is_err());
    assert!(list(pki.client(Some(&expired)), ALICE).await.is_err());
    assert_eq!(list(as_svc, "svc-key-0123456789").await.unwrap().0, 200);
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_rotated_by_a_reload_drops_no_connection() {
    let pki = Pki::new();
    let first = pki.leaf("first", "localhost", &["localhost"], false);
    let second = pki.leaf("second", "localhost", &["localhost"], false);
    let config = tls_config(&first, None);
    let (d, reloader) = start(config.clone(), &pki).await;
    let c = client(&pki, d.addr, ALICE).await;
    let id = c.start(None).await.unwrap().stream_id;

    // Ten WSS subscribers, records flowing while the certificate changes.
    let mut sockets = Vec::new();
    for _ in 0..10 {
        let request = format!("wss://localhost:{}/api/stream/{id}/results", d.addr.port());
        let mut request =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(request)
                .unwrap();
        request
            .headers_mut()
            .insert("x-api-key", ALICE.parse().unwrap());
        let tcp = TcpStream::connect(d.addr).await.unwrap();
        let connector = tokio_tungstenite::Connector::Rustls(Arc::new(
            ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(pki.roots())
            .with_no_client_auth(),
        ));
        let (ws, _) =
            tokio_tungstenite::client_async_tls_with_config(request, tcp, None, Some(connector))
                .await
                .unwrap();
        sockets.push(ws);
    }
    let sender = {
        let c = c.clone();
        tokio::spawn(async move {
            for n in 0..200 {
                c.send(id, &json!({ "n": n })).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let mut rotated = config.clone();
    rotated.http.tls = Some(Tls {
        cert: second.cert.clone(),
        key: second.key.clone(),
        client_ca: None,
    });
    reloader.reload(rotated).await.unwrap();
    sender.await.unwrap();

    // Every subscriber got all 200, in order: none was dropped.
    for ws in &mut sockets {
        let mut n = 0;
        while n < 200 {
            let msg = tokio::time::timeout(WAIT, ws.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            if let tokio_tungstenite::tungstenite::Message::Text(text) = msg {
                let f: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(f["data"]["n"], n, "{f}");
                n += 1;
            }
        }
    }
    // The next handshake gets the new certificate.
    let tcp = TcpStream::connect(d.addr).await.unwrap();
    let stream = pki
        .client(None)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let presented = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
    assert_eq!(presented, second.der);
    d.stop().await.unwrap();
}
