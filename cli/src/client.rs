//! Talking to a daemon: the connection settings every client command shares, turned into a
//! `streamgate_client::Client` (the library streamctl is the first user of: its HTTP calls,
//! its one `/api/connect` connection, its retries).
//!
//! Precedence, highest first: `--url`/`--api-key` flags, then `STREAMCTL_URL` /
//! `STREAMCTL_API_KEY`, then the defaults: `http://127.0.0.1:8080` and the key file that
//! zero-config `streamctl serve` writes (see `streamgate::keyfile`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use streamgate::keyfile;
use streamgate::wire::ErrorCode;

pub use streamgate_client::{retry_after, server_error, Client, Credential, Error as ClientError};

/// Where the daemon is and how to authenticate.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectionArgs {
    /// Daemon URL.
    #[arg(long, env = "STREAMCTL_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API key [default: the key file written by `streamctl serve`].
    #[arg(long, env = "STREAMCTL_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// PEM file of CA certificates to trust besides the public roots, for a daemon whose
    /// certificate a private CA signed (`https://` URLs).
    #[arg(long, env = "STREAMCTL_CACERT", value_name = "FILE", value_hint = clap::ValueHint::FilePath)]
    pub cacert: Option<std::path::PathBuf>,
}

/// A client of the daemon `args` name, which says once on stderr when it waits on the
/// daemon.
pub fn connect(args: &ConnectionArgs) -> anyhow::Result<Client> {
    let key = match &args.api_key {
        Some(k) => k.clone(),
        None => {
            let path = keyfile::default_path()
                .context("no API key: pass --api-key or set STREAMCTL_API_KEY")?;
            keyfile::read(&path).with_context(|| {
                format!(
                    "no API key: pass --api-key, set STREAMCTL_API_KEY, or start `streamctl serve` \
                     once so it creates {}",
                    path.display()
                )
            })?
        }
    };
    let base = args.url.trim_end_matches('/');
    if !base.starts_with("http://") && !base.starts_with("https://") {
        anyhow::bail!("--url: `{}` must start with http:// or https://", args.url);
    }
    let mut builder =
        Client::builder(base, Credential::ApiKey(key)).on_wait(Arc::new(waiting_notice));
    if let Some(path) = &args.cacert {
        let pem = std::fs::read(path)
            .with_context(|| format!("--cacert: cannot read {}", path.display()))?;
        builder = builder.root_certificates(&pem);
    }
    Ok(builder.build()?)
}

/// Says once per run that a command waits on the daemon (`code`: why).
pub fn waiting_notice(code: &ErrorCode, wait: Duration) {
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        let why = match code {
            ErrorCode::NotReady => "the daemon is starting",
            ErrorCode::BacklogFull => "the daemon's processing backlog (limits.max_unprocessed_*)",
            ErrorCode::BrokerUnavailable => "the broker, which is unavailable",
            _ => "the daemon's rate limit (rate_limits in its config)",
        };
        eprintln!(
            "streamctl: waiting on {why}; retrying in {:.1}s as it asks (Retry-After)",
            wait.as_secs_f64()
        );
    });
}
