//! `streamctl serve`: loads the config, applies command-line overrides, makes sure there is a
//! key to authenticate with, and runs the daemon until SIGINT or SIGTERM. SIGHUP reads the
//! config file (and the flags) again and reloads what can change without a restart (see
//! `streamgate::reload`); a config that does not pass is refused whole, in the log, and the
//! running one stays.

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
    /// Log format [default: pretty; from the config file if it sets log.format].
    #[arg(long, value_parser = log_format())]
    pub log_format: Option<LogFormat>,
    /// Check the config (file, flags, key, TLS certificates, a JWKS file) and exit: 0 when
    /// valid, 1 with the reason; a dry run of a start or a reload.
    #[arg(long)]
    pub check: bool,
}

impl Args {
    pub async fn run(self) -> anyhow::Result<()> {
        let (config, key_notice) = self.config()?;
        if self.check {
            streamgate::server::check(&config).await?;
            println!(
                "config OK: listen {}, brokers {}, {} API key(s)",
                config.listen,
                config.brokers,
                config.api_keys.len()
            );
            return Ok(());
        }
        streamgate::logging::init(&config.log);
        if let Some(notice) = key_notice {
            // Through the log, so JSON mode stays one object per line; never the key itself.
            tracing::info!(path = %notice.0.display(), created = notice.1, "local API key file (streamctl commands read it)");
        }
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let (reloader, reloads) = streamgate::reload::Reloader::new();
        self.reload_on_hangup(reloader);
        streamgate::server::run_reloadable(config, listener, shutdown_signal(), Some(reloads))
            .await?;
        Ok(())
    }

    /// On every SIGHUP: the config read again as at start, then handed to the daemon.
    fn reload_on_hangup(&self, reloader: streamgate::reload::Reloader) {
        #[cfg(unix)]
        {
            let args = Args {
                config: self.config.clone(),
                listen: self.listen,
                brokers: self.brokers.clone(),
                api_keys: self.api_keys.clone(),
                log_format: self.log_format,
                check: false,
            };
            tokio::spawn(async move {
                use tokio::signal::unix::{signal, SignalKind};
                let Ok(mut hangups) = signal(SignalKind::hangup()) else {
                    tracing::warn!("cannot listen for SIGHUP: reloads are off");
                    return;
                };
                while hangups.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading the config");
                    let config = match args.config() {
                        Ok((config, _)) => config,
                        Err(e) => {
                            tracing::error!(error = %format!("{e:#}"), "reload refused; the running config stays");
                            continue;
                        }
                    };
                    // The daemon logs the outcome.
                    let _ = reloader.reload(config).await;
                }
            });
        }
        #[cfg(not(unix))]
        let _ = reloader;
    }

    /// The effective config: file (or defaults), then flags, then the local key if no key is
    /// configured anywhere (with the key file's path and whether it was just created).
    fn config(&self) -> anyhow::Result<(Config, Option<(PathBuf, bool)>)> {
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
            config
                .api_keys
                .push(ApiKey::new(format!("cli-{}", i + 1), key.clone(), false));
        }
        if config.api_keys.is_empty() {
            let path = keyfile::default_path()
                .context("no API key configured and no home directory for the local key file; pass --api-key")?;
            let (key, created) = keyfile::load_or_create(&path)?;
            config
                .api_keys
                .push(ApiKey::new(keyfile::KEY_NAME.into(), key, true));
            config.validate()?;
            return Ok((config, Some((path, created))));
        }
        config.validate()?;
        Ok((config, None))
    }
}

/// `--log-format`, with its values listed for help and completions.
fn log_format() -> impl clap::builder::TypedValueParser<Value = LogFormat> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(["pretty", "json"])
        .map(|s| s.parse::<LogFormat>().expect("one of the listed values"))
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
