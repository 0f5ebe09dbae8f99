//! Tokens from an identity provider (`auth.jwt`), checked against a JWKS served by a small
//! server in the test, with RSA and EC keys: good tokens act as their owner (and within their
//! grants on other streams); a wrong audience, an expired token, an unknown key (the JWKS is
//! fetched again once, then not before `min_refresh_s`), `alg: none` and an HS256 token
//! signed with the public key as its secret are all 401 and none crashes; a provider outage
//! stops no token whose key is cached; a key dropped from the JWKS closes the connections its
//! tokens opened (4401).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use streamgate::config::Jwt;
use streamgate_testkit::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ISSUER: &str = "https://idp.test";
const AUDIENCE: &str = "streamgate";

/// A JWKS endpoint: serves what `keys` holds (or 500 while `down`), counting requests.
struct Provider {
    url: String,
    keys: Arc<Mutex<JwkSet>>,
    down: Arc<std::sync::atomic::AtomicBool>,
    fetches: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Provider {
    async fn start(keys: JwkSet) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        let (keys, down, fetches) = (
            Arc::new(Mutex::new(keys)),
            Arc::new(std::sync::atomic::AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
        );
        let (k, dn, f) = (keys.clone(), down.clone(), fetches.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let (k, dn, f) = (k.clone(), dn.clone(), f.clone());
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = socket.read(&mut buf).await;
                    f.fetch_add(1, Ordering::SeqCst);
                    let (status, body) = if dn.load(Ordering::SeqCst) {
                        ("500 Internal Server Error", "{}".to_string())
                    } else {
                        (
                            "200 OK",
                            serde_json::to_string(&*k.lock().unwrap()).unwrap(),
                        )
                    };
                    let answer = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(answer.as_bytes()).await;
                });
            }
        });
        Self {
            url,
            keys,
            down,
            fetches,
            task,
        }
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A signing key of the provider, and its public JWK.
struct Signer {
    kid: &'static str,
    alg: Algorithm,
    key: EncodingKey,
    jwk: Jwk,
    /// The public key as PEM (what a forger would use as an HMAC secret).
    public_pem: String,
}

impl Signer {
    fn new(kid: &'static str, alg: Algorithm) -> Self {
        let (rcgen_alg, from_pem): (_, fn(&[u8]) -> _) = match alg {
            Algorithm::RS256 => (&rcgen::PKCS_RSA_SHA256, EncodingKey::from_rsa_pem),
            _ => (&rcgen::PKCS_ECDSA_P256_SHA256, EncodingKey::from_ec_pem),
        };
        let pair = rcgen::KeyPair::generate_for(rcgen_alg).unwrap();
        let key = from_pem(pair.serialize_pem().as_bytes()).unwrap();
        let mut jwk = Jwk::from_encoding_key(&key, alg).unwrap();
        jwk.common.key_id = Some(kid.into());
        Self {
            kid,
            alg,
            key,
            jwk,
            public_pem: pair.public_key_pem(),
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.into());
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(sub: &str) -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now(), "exp": now() + 600})
}

fn settings(url: &str) -> Jwt {
    serde_yaml::from_str(&format!(
        "issuer: {ISSUER}\naudience: {AUDIENCE}\njwks_url: {url}\nmin_refresh_s: 60\n"
    ))
    .unwrap()
}

/// `method path` with a bearer token: status and body.
async fn call(d: &Daemon, method: &str, path: &str, token: &str) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let resp = d
        .http
        .request(method, d.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    status_and_json(resp).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_provider_tokens_are_checked_against_its_jwks() {
    let (rsa, ec) = (
        Signer::new("r1", Algorithm::RS256),
        Signer::new("e1", Algorithm::ES256),
    );
    let provider = Provider::start(JwkSet {
        keys: vec![rsa.jwk.clone(), ec.jwk.clone()],
    })
    .await;
    let mut config = test_config();
    config.auth.jwt = Some(settings(&provider.url));
    let d = Daemon::start(config).await;
    assert_eq!(provider.fetches(), 1, "fetched at start");

    // RS256 and ES256 tokens act as their owner, `jwt:` + sub, as a key does.
    let user = rsa.sign(&claims("user-1"));
    let (status, started) = call(&d, "POST", "/api/stream/start", &user).await;
    assert_eq!(status, 201, "{started}");
    let own = started["stream_id"].as_str().unwrap().to_string();
    let (status, list) = call(&d, "GET", "/api/streams", &ec.sign(&claims("user-1"))).await;
    assert_eq!(status, 200);
    assert_eq!(list["streams"][0]["stream_id"], own);
    assert_eq!(
        d.describe(ALICE, &own).await["error"]["code"],
        "stream_not_found"
    );

    // Every refusal is a 401 with the reason, never the token.
    let mut wrong_aud = claims("user-1");
    wrong_aud["aud"] = json!("someone-else");
    let mut expired = claims("user-1");
    expired["exp"] = json!(now() - 120);
    let none = format!(
        "{}.{}.",
        base64_url(r#"{"alg":"none","kid":"r1"}"#),
        base64_url(&claims("user-1").to_string())
    );
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some("r1".into());
    let confused = jsonwebtoken::encode(
        &hs,
        &claims("user-1"),
        &EncodingKey::from_secret(rsa.public_pem.as_bytes()).unwrap(),
    )
    .unwrap();
    for (token, code, why) in [
        (rsa.sign(&wrong_aud), "invalid_token", "audience"),
        (rsa.sign(&expired), "token_expired", "expired"),
        (none, "invalid_token", ""),
        (confused, "invalid_token", "algorithm"),
        ("a.b.c".to_string(), "invalid_token", ""),
    ] {
        let (status, body) = call(&d, "GET", "/api/streams", &token).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some(code)),
            "{body}"
        );
        assert!(
            body["error"]["message"].as_str().unwrap().contains(why),
            "{body}"
        );
        assert!(
            !body.to_string().contains(&token),
            "the token is never echoed"
        );
    }

    // An unknown key: the JWKS is fetched again once, then not again within min_refresh_s.
    let stranger = Signer::new("k9", Algorithm::ES256);
    for _ in 0..3 {
        let (status, body) = call(&d, "GET", "/api/streams", &stranger.sign(&claims("x"))).await;
        assert_eq!(status, 401, "{body}");
    }
    assert_eq!(provider.fetches(), 2, "one refresh for the unknown key");

    // Grants on another owner's stream, within their scope.
    let alices = d.start_stream(ALICE, None).await;
    let other = d.start_stream(ALICE, None).await;
    let mut granted = claims("viewer");
    granted["streamgate"] = json!({"streams": [alices], "scope": ["subscribe"]});
    let viewer = ec.sign(&granted);
    assert_eq!(
        call(&d, "GET", &format!("/api/stream/{alices}"), &viewer)
            .await
            .0,
        200
    );
    assert_eq!(
        call(&d, "GET", &format!("/api/stream/{other}"), &viewer)
            .await
            .0,
        404
    );
    let (status, body) = call(&d, "DELETE", &format!("/api/stream/{alices}"), &viewer).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    let resp = d
        .http
        .post(d.url(&format!("/api/stream/{alices}/send")))
        .bearer_auth(&viewer)
        .json(&json!(1))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403, "subscribe scope only");

    // The provider down: keys already known keep working.
    provider.down.store(true, Ordering::SeqCst);
    assert_eq!(
        call(&d, "GET", "/api/streams", &rsa.sign(&claims("user-1")))
            .await
            .0,
        200
    );
    d.stop().await.unwrap();
}

fn base64_url(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_dropped_from_the_jwks_closes_the_connections_its_tokens_opened() {
    let (rsa, ec) = (
        Signer::new("r1", Algorithm::RS256),
        Signer::new("e1", Algorithm::ES256),
    );
    let provider = Provider::start(JwkSet {
        keys: vec![rsa.jwk.clone(), ec.jwk.clone()],
    })
    .await;
    let mut config = test_config();
    let mut jwt = settings(&provider.url);
    jwt.refresh_s = 1;
    config.auth.jwt = Some(jwt);
    let d = Daemon::start(config).await;
    let (_, started) = call(&d, "POST", "/api/stream/start", &rsa.sign(&claims("u"))).await;
    let id = started["stream_id"].as_str().unwrap().to_string();

    let mut by_rsa = d
        .connect(&format!("Bearer {}", rsa.sign(&claims("u"))))
        .await;
    let mut by_ec = d
        .connect(&format!("Bearer {}", ec.sign(&claims("u"))))
        .await;
    for ws in [&mut by_rsa, &mut by_ec] {
        send_frame(ws, &json!({"type": "subscribe", "stream_id": id})).await;
        next_of(ws, "subscribed").await;
    }
    provider
        .keys
        .lock()
        .unwrap()
        .keys
        .retain(|k| k.common.key_id.as_deref() == Some("e1"));
    let dropped = Instant::now();
    let (code, reason) = next_close(&mut by_rsa).await;
    assert_eq!(
        (code, reason.as_str()),
        (4401, "token revoked: its signing key is gone")
    );
    // Within the refresh period and a second.
    assert!(
        dropped.elapsed() < Duration::from_secs(3),
        "{:?}",
        dropped.elapsed()
    );
    // The other key's connection goes on.
    let (status, _) = {
        let resp = d
            .http
            .post(d.url(&format!("/api/stream/{id}/send")))
            .bearer_auth(ec.sign(&claims("u")))
            .json(&json!("still here"))
            .send()
            .await
            .unwrap();
        status_and_json(resp).await
    };
    assert_eq!(status, 202);
    assert_eq!(next_of(&mut by_ec, "result").await["data"], "still here");
    d.stop().await.unwrap();
}
