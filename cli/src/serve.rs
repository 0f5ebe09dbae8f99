//! `streamctl serve`: loads the config, applies command-line overrides, makes sure there is a
//! key to authenticate with, and runs the daemon until SIGINT or SIGTERM.

use std::path::PathBuf;

use anyhow::Context;
use streamgate::config::{ApiKey, Brokers, Config, LogFormat};
use streamgate::keyfile;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// YAML config file (see config.example.yaml); without it, built-in defaults.
    #[arg(long, short, env = "STREAMGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// `embedded` or HOST:PORT[,HOST:PORT...] [default: embedded].
    #[arg(long)]
    pub brokers: Option<Brokers>,
    /// Accept this API key (repeatable); adds to the keys of the config file.
    #[arg(long = "api-key", value_name = "KEY")]
    pub api_keys: Vec<String>,
    /// Log format: pretty or json.
    #[arg(long)]
    pub log_format: Option<LogFormat>,
}

impl Args {
    pub async fn run(self) -> anyhow::Result<()> {
        let config = self.config()?;
        streamgate::logging::init(&config.log);
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        streamgate::server::run(config, listener, shutdown_signal()).await?;
        Ok(())
    }

    /// The effective config: file (or defaults), then flags, then the local key if no key is
    /// configured anywhere.
    fn config(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(brokers) = &self.brokers {
            config.brokers = brokers.clone();
        }
        if let Some(format) = self.log_format {
            config.log.format = format;
        }
        for (i, key) in self.api_keys.iter().enumerate() {
            config.api_keys.push(ApiKey {
                name: format!("cli-{}", i + 1),
                key: key.clone(),
                admin: false,
            });
        }
        if config.api_keys.is_empty() {
            let path = keyfile::default_path()
                .context("no API key configured and no home directory for the local key file; pass --api-key")?;
            let (key, created) = keyfile::load_or_create(&path)?;
            if created {
                eprintln!("Created API key {key}");
                eprintln!(
                    "Stored in {} (mode 0600); streamctl commands read it from there.",
                    path.display()
                );
            } else {
                eprintln!("Using the API key stored in {}", path.display());
            }
            config.api_keys.push(ApiKey {
                name: keyfile::KEY_NAME.into(),
                key,
                admin: true,
            });
        }
        config.validate()?;
        Ok(config)
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
