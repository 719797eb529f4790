//! The daemon's health and metrics endpoint (`[http] listen`): `/healthz` and `/metrics`.
//!
//! `/healthz` answers 200 while scanning and sending work, and 503 with the reason while
//! credentials fail or the ledger cannot be written. `/metrics` is Prometheus text: counters
//! since start, and gauges read from the ledger.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::http::{spawn_server, text};
use crate::ledger::{with_ledger, SharedLedger};
use crate::state::{ConvState, FollowState, LineOutcome, StateName};
use crate::submit::Progress;

/// Counters and health of a running daemon.
#[derive(Default)]
pub struct DaemonState {
    pub files_seen: AtomicU64,
    pub files_done: AtomicU64,
    pub files_failed: AtomicU64,
    /// Files refused as a whole (a missing column, …): their rows are recorded invalid.
    pub files_refused: AtomicU64,
    /// Files seen but not ready yet (settling, or waiting for their marker).
    pub files_waiting: AtomicU64,
    pub scans: AtomicU64,
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
    pub retries: AtomicU64,
    pub rate_limited: AtomicU64,
    pub last_accepted_unix: AtomicI64,
    /// Why the daemon is unhealthy (credentials, ledger), if it is.
    problem: Mutex<Option<String>>,
}

impl DaemonState {
    pub fn set_problem(&self, reason: Option<String>) {
        if let Ok(mut p) = self.problem.lock() {
            *p = reason;
        }
    }

    pub fn problem(&self) -> Option<String> {
        self.problem.lock().ok().and_then(|p| p.clone())
    }
}

impl Progress for DaemonState {
    fn answered(&self, accepted: bool) {
        if accepted {
            self.accepted.fetch_add(1, Ordering::Relaxed);
            self.last_accepted_unix
                .store(chrono::Utc::now().timestamp(), Ordering::Relaxed);
        } else {
            self.rejected.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn retried(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }
}

/// Serves `/healthz` and `/metrics` until `stop`.
pub async fn serve(
    addr: SocketAddr,
    state: Arc<DaemonState>,
    ledger: SharedLedger,
    stop: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    // Scrapes read through their own read-only connection (WAL lets it read while the
    // daemon writes), so a scrape never waits for the sender's commits; the daemon's own
    // connection is the fallback if it cannot be opened.
    let path = ledger.lock().ok().map(|l| l.path().to_owned());
    let ledger = match path.map(|p| crate::ledger::Ledger::open_second_reader(&p)) {
        Some(Ok(reader)) => Arc::new(std::sync::Mutex::new(reader)),
        _ => ledger,
    };
    spawn_server(listener, stop, move |req| {
        let (state, ledger) = (state.clone(), ledger.clone());
        async move { Ok::<_, std::convert::Infallible>(answer(req, &state, &ledger).await) }
    });
    Ok(bound)
}

async fn answer(
    req: Request<hyper::body::Incoming>,
    state: &DaemonState,
    ledger: &SharedLedger,
) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/healthz" => match state.problem() {
            None => text(StatusCode::OK, "text/plain", "ok\n".into()),
            Some(reason) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("{reason}\n"),
            ),
        },
        "/metrics" => text(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            metrics(state, ledger).await,
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "try /healthz or /metrics\n".into(),
        ),
    }
}

/// The Prometheus text of `/metrics` (public for the test that the README names every metric).
pub async fn metrics(state: &DaemonState, ledger: &SharedLedger) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, String)]| {
        let _ = writeln!(
            out,
            "# HELP impact_drop_{name} {help}\n# TYPE impact_drop_{name} {kind}"
        );
        for (labels, value) in samples {
            let _ = writeln!(out, "impact_drop_{name}{labels} {value}");
        }
    };
    let n = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
    metric(
        "files_seen_total",
        "counter",
        "Files taken in since start.",
        &[("", n(&state.files_seen))],
    );
    metric(
        "files_done_total",
        "counter",
        "Files finished (all conversions final) since start.",
        &[("", n(&state.files_done))],
    );
    metric(
        "files_failed_total",
        "counter",
        "Files that could not be read since start.",
        &[("", n(&state.files_failed))],
    );
    metric(
        "files_refused_total",
        "counter",
        "Files refused as a whole (a missing column, …) since start; their rows are in rejects files.",
        &[("", n(&state.files_refused))],
    );
    metric(
        "files_waiting",
        "gauge",
        "Files seen but not ready (settling or waiting for a marker).",
        &[("", n(&state.files_waiting))],
    );
    metric(
        "scans_total",
        "counter",
        "Scans of the drop folder since start.",
        &[("", n(&state.scans))],
    );
    metric(
        "answers_total",
        "counter",
        "Final answers from impact since start.",
        &[
            ("{outcome=\"accepted\"}", n(&state.accepted)),
            ("{outcome=\"rejected\"}", n(&state.rejected)),
        ],
    );
    metric(
        "retries_total",
        "counter",
        "Failed POSTs to be retried (5xx, timeouts, resets) since start.",
        &[("", n(&state.retries))],
    );
    metric(
        "rate_limited_total",
        "counter",
        "429 answers since start.",
        &[("", n(&state.rate_limited))],
    );
    metric(
        "last_accepted_timestamp_seconds",
        "gauge",
        "Unix time of the last accepted conversion (0: none since start).",
        &[(
            "",
            state.last_accepted_unix.load(Ordering::Relaxed).to_string(),
        )],
    );
    metric(
        "healthy",
        "gauge",
        "1 while scanning and sending work.",
        &[("", u8::from(state.problem().is_none()).to_string())],
    );
    let from_ledger = with_ledger(ledger, |l| {
        Ok((
            l.counts_by_state::<ConvState>()?,
            l.count_lines(LineOutcome::Invalid)?,
            l.oldest_pending()?,
            l.size_on_disk(),
            l.follow_counts(None)?,
        ))
    })
    .await;
    if let Ok((by_state, invalid, oldest, size, at_impact)) = from_ledger {
        let samples: Vec<(String, String)> = FollowState::ALL
            .iter()
            .map(|s| {
                (
                    format!("{{state=\"{}\"}}", s.sql()),
                    at_impact.get(*s).to_string(),
                )
            })
            .collect();
        let refs = borrowed(&samples);
        metric(
            "at_impact",
            "gauge",
            "Accepted conversions by what impact did with them, as follow-ups found (waiting: still queued at impact).",
            &refs,
        );
        let samples: Vec<(String, String)> = at_impact
            .failed_by_reason
            .iter()
            .map(|(r, n)| (format!("{{reason=\"{}\"}}", label_value(r)), n.to_string()))
            .collect();
        let refs = borrowed(&samples);
        metric(
            "failed_at_impact",
            "gauge",
            "Conversions impact accepted and then failed in processing, by impact's ErrorReason.",
            &refs,
        );
        let samples: Vec<(String, String)> = ConvState::ALL
            .iter()
            .map(|s| {
                let v = by_state.iter().find(|(k, _)| k == s).map_or(0, |(_, v)| *v);
                (format!("{{state=\"{}\"}}", s.sql()), v.to_string())
            })
            .collect();
        let refs = borrowed(&samples);
        metric(
            "conversions",
            "gauge",
            "Conversions in the ledger by state.",
            &refs,
        );
        metric(
            "invalid_rows",
            "gauge",
            "Rows in the ledger that were invalid locally.",
            &[("", invalid.to_string())],
        );
        let age = oldest
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
            .map_or(0, |t| {
                (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
                    .num_seconds()
                    .max(0)
            });
        metric(
            "oldest_pending_age_seconds",
            "gauge",
            "Age of the oldest pending conversion (0: none).",
            &[("", age.to_string())],
        );
        metric(
            "ledger_bytes",
            "gauge",
            "Size of the ledger on disk.",
            &[("", size.to_string())],
        );
    }
    out
}

/// A Prometheus label value: backslash, double quote and line feed escaped.
fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `(labels, value)` samples with borrowed labels, as `metric` takes them.
fn borrowed(samples: &[(String, String)]) -> Vec<(&str, String)> {
    samples
        .iter()
        .map(|(l, v)| (l.as_str(), v.clone()))
        .collect()
}
