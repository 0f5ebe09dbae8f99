//! What every handler shares: handles to the components and to the configuration, no logic
//! and no copies. Built by `server.rs` over the broker, or over in-memory stand-ins by the
//! route tests.
//!
//! What a reload (SIGHUP) may change is [`Reloadable`]: the configuration, the credentials
//! and the rate limiter are each replaced whole, new requests see the new ones at once, and
//! [`AppState::revocations`] tells every open connection to check its credential again.

use std::sync::{Arc, RwLock};
use std::time::Instant;

use futures_util::future::BoxFuture;
use tokio::sync::watch;

use super::stats::SharedStats;
use crate::auth::{Credentials, Principal, Revoked};
use crate::config::Config;
use crate::delivery::{Archive, Router};
use crate::ingest::Ingest;
use crate::kafka::BrokerHealth;
use crate::lifecycle::PhaseWatch;
use crate::metrics::Metrics;
use crate::quota::{Limiter, Seats};
use crate::registry::Registry;
use crate::wire::Close;

pub struct AppState {
    /// The configuration the daemon runs with (limits, processing bounds, origins).
    pub config: Reloadable<Config>,
    /// Keys, and the identity provider's verifier.
    pub credentials: Reloadable<Credentials>,
    pub limiter: Reloadable<Limiter>,
    /// Bumped when credentials may have been revoked (a reload, or a JWKS refresh that
    /// dropped a key): every open connection checks its own again.
    pub revocations: watch::Sender<u64>,
    /// The config's named JSON Schemas (`schemas:`), files read at start.
    pub schemas: Arc<crate::schema::Named>,
    /// Results subscribers per key on this instance (`limits.max_subscribers_per_key`).
    pub subscriber_seats: Arc<Seats>,
    pub registry: Arc<Registry>,
    /// Writes records and markers into the input topic.
    pub ingest: Ingest,
    /// This instance's subscribers and the live results they get.
    pub router: Arc<Router>,
    /// Past results, for subscribers that resume.
    pub archive: Arc<dyn Archive>,
    /// Where the broker is and whether it answers.
    pub broker: BrokerHealth,
    pub metrics: Arc<Metrics>,
    /// The stats snapshot shared by every `/api/stats` caller and live watcher.
    pub stats: Arc<SharedStats>,
    /// Where the daemon is in its life: sessions watch it to refuse and close as it stops.
    pub phase: PhaseWatch,
    /// Whether this instance's processing stage is in its group (for `/readyz`).
    pub processing_joined: watch::Receiver<bool>,
    pub started: Instant,
}

impl AppState {
    /// Resolves, with the close a connection of `caller` ends with, when its credential
    /// ends: at its expiry (4401), or at a revocation (a reload removed its key, 4403, or
    /// its token's signing key, 4401; a JWKS refresh dropped its JWT's key, 4401).
    pub fn credential_end(self: &Arc<Self>, caller: &Principal) -> BoxFuture<'static, Close> {
        let state = self.clone();
        let caller = caller.clone();
        let mut revocations = self.revocations.subscribe();
        let expires = caller
            .remaining()
            .map(|left| tokio::time::Instant::now() + left);
        Box::pin(async move {
            loop {
                tokio::select! {
                    _ = sleep_until(expires) => return Close::TokenExpired,
                    changed = revocations.changed() => {
                        if changed.is_err() {
                            // The daemon is going: only the expiry is left.
                            sleep_until(expires).await;
                            return Close::TokenExpired;
                        }
                        match state.revoked(&caller) {
                            Some(Revoked::Key) => return Close::CredentialRevoked,
                            Some(Revoked::Token) => return Close::TokenRevoked,
                            None => {}
                        }
                    }
                }
            }
        })
    }

    /// The configuration now.
    pub fn config(&self) -> Arc<Config> {
        self.config.get()
    }

    /// The credentials now.
    pub fn credentials(&self) -> Arc<Credentials> {
        self.credentials.get()
    }

    /// The rate limiter now.
    pub fn limiter(&self) -> Arc<Limiter> {
        self.limiter.get()
    }

    /// Whether `caller`'s credential was revoked since it authenticated.
    pub fn revoked(&self, caller: &Principal) -> Option<Revoked> {
        self.credentials().revoked(caller)
    }
}

/// A part of the state a reload replaces whole; readers take the current one.
pub struct Reloadable<T>(RwLock<Arc<T>>);

impl<T> Reloadable<T> {
    pub fn new(value: T) -> Self {
        Self(RwLock::new(Arc::new(value)))
    }

    pub fn get(&self) -> Arc<T> {
        self.0.read().expect("reloadable lock").clone()
    }

    pub fn set(&self, value: T) {
        *self.0.write().expect("reloadable lock") = Arc::new(value);
    }
}

/// Resolves at `at`, or never without one.
pub async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
