//! `impact-drop watch`: the daemon, with its signal handling.

use tokio_util::sync::CancellationToken;

use super::{CommandError, Outcome};
use crate::config::Config;
use crate::pipeline::daemon;

pub fn run(config: Config) -> Result<Outcome, CommandError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(CommandError::Output)?;
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        let s = shutdown.clone();
        tokio::spawn(async move {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::warn!("cannot listen for SIGTERM: {e}");
                        return;
                    }
                };
            let mut signals = 0;
            loop {
                tokio::select! {
                    _ = term.recv() => {}
                    r = tokio::signal::ctrl_c() => if r.is_err() { return },
                }
                signals += 1;
                if signals == 1 {
                    tracing::info!("signal received: stopping (a second signal exits at once)");
                    s.cancel();
                } else {
                    tracing::warn!(
                        "second signal: exiting now; conversions in flight stay pending"
                    );
                    std::process::exit(130);
                }
            }
        });
        daemon::watch(config, shutdown).await?;
        Ok(Outcome::Clean)
    })
}
