//! Reloading a running daemon's configuration (SIGHUP, through [`Reloader`]): keys, JWT
//! settings, TLS certificates, rate limits and the limits read per request apply to new
//! requests at once; connections whose credential a reload removed are closed (4403 for a
//! key, 4401 for a token it signed); everything else keeps running.
//!
//! A reload is all or nothing. A config that does not validate, a certificate or JWKS file
//! that cannot be read, or a change to a setting that only a restart can apply (the listener,
//! the broker, the topics, processing, the limits the components were built with: see
//! [`RELOADABLE`]) refuses the whole reload with the reason, naming those settings, and the
//! running configuration stays.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};

use crate::api::{self, App, AppState, TlsEdge};
use crate::auth::{Credentials, JwtVerifier, KeyStore};
use crate::config::Config;
use crate::error::Error;
use crate::quota::Limiter;

/// The settings a reload may change (a dotted path, or the start of one); any other
/// difference needs a restart.
pub const RELOADABLE: [&str; 16] = [
    "api_keys",
    "auth",
    "rate_limits",
    "http.allowed_origins",
    "http.tls.cert",
    "http.tls.key",
    "http.tls.client_ca",
    "limits.max_body_bytes",
    "limits.body_read_timeout_ms",
    "limits.ws_max_in_flight",
    "limits.ws_max_message_bytes",
    "limits.ws_ping_interval_ms",
    "limits.max_subscriptions_per_connection",
    "limits.stats_live_bytes_per_s",
    "limits.max_streams_per_key",
    "limits.max_token_ttl_s",
];

/// A reload asked for, and who waits for its outcome.
struct Reload {
    config: Config,
    done: oneshot::Sender<Result<String, Error>>,
}

/// Asks a running daemon to reload; cheap to clone.
#[derive(Clone)]
pub struct Reloader(mpsc::UnboundedSender<Reload>);

/// The daemon's side of a [`Reloader`].
pub struct Reloads(mpsc::UnboundedReceiver<Reload>);

impl Reloader {
    pub fn new() -> (Self, Reloads) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self(tx), Reloads(rx))
    }

    /// Applies `config` to the running daemon: what changed, or why nothing did.
    pub async fn reload(&self, config: Config) -> Result<String, Error> {
        let (done, outcome) = oneshot::channel();
        let gone = || Error::Startup("the daemon is not running".into());
        self.0.send(Reload { config, done }).map_err(|_| gone())?;
        outcome.await.map_err(|_| gone())?
    }
}

/// What a reload replaces, in the running daemon.
pub(crate) struct Edge {
    pub state: Arc<AppState>,
    pub app: App,
    pub tls: Option<Arc<TlsEdge>>,
    /// Client connections the open-files limit allows (server limits are fitted to it).
    pub connections: usize,
    pub stopping: watch::Receiver<bool>,
}

impl Edge {
    /// Applies reloads as they come until the daemon stops.
    pub async fn serve(self, mut reloads: Reloads) {
        let mut stopping = self.stopping.clone();
        loop {
            let reload = tokio::select! {
                _ = stopping.changed() => return,
                reload = reloads.0.recv() => match reload {
                    Some(reload) => reload,
                    None => return,
                },
            };
            let outcome = self.apply(reload.config).await;
            match &outcome {
                Ok(summary) => tracing::info!(changed = %summary, "config reloaded"),
                Err(e) => tracing::error!(error = %e, "reload refused; the running config stays"),
            }
            let _ = reload.done.send(outcome);
        }
    }

    async fn apply(&self, mut new: Config) -> Result<String, Error> {
        new.validate()?;
        new.limits.server = new.limits.server.fitted(self.connections);
        let old = self.state.config();
        let restart = needs_restart(&old, &new);
        if !restart.is_empty() {
            return Err(Error::Config {
                message: format!(
                    "reload refused: {} can only change with a restart; nothing was applied",
                    restart.join(", ")
                ),
            });
        }
        // What can fail, first: nothing is replaced unless all of it loads.
        let credentials = credentials(
            &new,
            Some(&self.state.credentials()),
            &self.state.revocations,
            self.stopping.clone(),
        )
        .await?;
        if let (Some(tls), Some(settings)) = (&self.tls, &new.http.tls) {
            tls.reload(settings)?;
        }
        let changed = changed(&old, &new);
        self.state.credentials.set(credentials);
        if old.rate_limits != new.rate_limits {
            self.state.limiter.set(Limiter::new(&new.rate_limits));
        }
        self.state.config.set(new);
        self.app.set(api::routes(self.state.clone()));
        // Every open connection checks its credential against the new ones.
        self.state.revocations.send_modify(|n| *n += 1);
        Ok(if changed.is_empty() {
            "nothing (certificates read again)".to_string()
        } else {
            changed.join(", ")
        })
    }
}

/// The credentials `config` names. An unchanged `auth.jwt` keeps the verifier it had (and
/// its cached keys); a new one is started, refreshed on its schedule, and tells open
/// connections (through `revocations`) when a refresh drops a key.
pub(crate) async fn credentials(
    config: &Config,
    previous: Option<&Credentials>,
    revocations: &watch::Sender<u64>,
    stopping: watch::Receiver<bool>,
) -> Result<Credentials, Error> {
    let keys = KeyStore::new(&config.api_keys);
    let Some(settings) = &config.auth.jwt else {
        return Ok(Credentials { keys, jwt: None });
    };
    let kept = previous
        .and_then(|p| p.jwt.clone())
        .filter(|jwt| jwt.settings() == settings);
    let jwt = match kept {
        Some(jwt) => jwt,
        None => {
            let jwt = JwtVerifier::start(settings)
                .await
                .map_err(|e| Error::Config {
                    message: format!("auth.jwt: {e}"),
                })?;
            jwt.refresh_on_schedule(stopping);
            let mut changes = jwt.changes();
            let revocations = revocations.clone();
            tokio::spawn(async move {
                // Ends with the verifier (its sender dropped).
                while changes.changed().await.is_ok() {
                    revocations.send_modify(|n| *n += 1);
                }
            });
            jwt
        }
    };
    Ok(Credentials {
        keys,
        jwt: Some(jwt),
    })
}

/// The settings that differ between `old` and `new` and only a restart can change.
pub fn needs_restart(old: &Config, new: &Config) -> Vec<String> {
    changed(old, new)
        .into_iter()
        .filter(|path| {
            !RELOADABLE
                .iter()
                .any(|r| path == r || path.starts_with(&format!("{r}.")))
        })
        .collect()
}

/// Every setting (a dotted path) whose value differs.
fn changed(old: &Config, new: &Config) -> Vec<String> {
    let (old, new) = (flatten(old), flatten(new));
    let mut paths: Vec<String> = old
        .keys()
        .chain(new.keys())
        .filter(|k| old.get(*k) != new.get(*k))
        .cloned()
        .collect();
    paths.sort();
    paths.dedup();
    // Paths only: a value (a key, say) is never quoted.
    paths
}

/// The config as `path → value`, objects flattened, arrays kept whole.
fn flatten(config: &Config) -> BTreeMap<String, Value> {
    fn walk(prefix: &str, value: Value, out: &mut BTreeMap<String, Value>) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (k, v) in map {
                    let path = if prefix.is_empty() {
                        k
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&path, v, out);
                }
            }
            other => {
                out.insert(prefix.to_string(), other);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(
        "",
        serde_json::to_value(config).unwrap_or(Value::Null),
        &mut out,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ApiKey;

    #[test]
    fn what_needs_a_restart_is_named_and_the_rest_reloads() {
        let old = Config::default();
        let mut new = old.clone();
        new.api_keys
            .push(ApiKey::new("a".into(), "key-aaaaaaaa".into(), false));
        new.rate_limits.per_ip = None;
        new.limits.websocket.ws_max_in_flight += 1;
        new.limits.tokens.max_token_ttl_s += 1;
        new.http.allowed_origins = vec!["https://app.example".into()];
        assert!(
            needs_restart(&old, &new).is_empty(),
            "{:?}",
            needs_restart(&old, &new)
        );

        new.listen = "127.0.0.1:9999".parse().unwrap();
        new.topics.partitions += 1;
        new.limits.delivery.subscriber_queue += 1;
        new.http.tls = Some(crate::config::Tls {
            cert: "c.pem".into(),
            key: "k.pem".into(),
            client_ca: None,
        });
        assert_eq!(
            needs_restart(&old, &new),
            [
                "http.tls",
                "limits.subscriber_queue",
                "listen",
                "topics.partitions"
            ]
        );
    }
}
