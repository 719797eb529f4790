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
        super::stop_on_signals(shutdown.clone());
        daemon::watch(config, shutdown).await?;
        Ok(Outcome::Clean)
    })
}
