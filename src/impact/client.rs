//! The HTTP client for impact's Conversions API: one POST per conversion.
//!
//! reqwest with rustls and one keep-alive connection pool; Basic auth (SID, token);
//! `Accept: application/json`; a User-Agent with the version; a connect timeout, and an
//! overall timeout counted in time the process ran; redirects never followed; at most 1 MiB
//! of any answer read. A failure before the request went out is [`Answer::Retry`]; after
//! it (a timeout, a reset), [`Answer::Uncertain`]: never an error that stops the caller. The token is only ever in the
//! `Authorization` header: never in the URL, a log line or an error.

use std::time::Duration;

use super::response::{interpret, interpret_submission, Answer, Limits, Submission, HEADERS_READ};
use crate::config::{Endpoint, ImpactConfig, Secret};

/// The most of an answer read; a larger body is cut (and still interpreted by its status).
pub const MAX_ANSWER_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot set up the HTTP client: {0}")]
    Build(String),
}

pub struct Client {
    http: reqwest::Client,
    url: String,
    /// Parsed once: parsing the URL for every request showed in profiles.
    parsed: reqwest::Url,
    /// `Basic base64(sid:token)`, built once and marked sensitive (never printed).
    authorization: reqwest::header::HeaderValue,
    /// `[impact] timeout_secs`, counted in time this process actually ran (see `post`).
    timeout: Duration,
}

/// The step in which a request's time is counted.
const TICK: Duration = Duration::from_millis(100);

/// The conversions URL for an account.
pub fn conversions_url(base_url: &str, endpoint: Endpoint, sid: &str) -> String {
    match endpoint {
        Endpoint::Partner => format!("{base_url}/Mediapartners/{sid}/PartnerConversions"),
        Endpoint::Brand => format!("{base_url}/Advertisers/{sid}/Conversions"),
    }
}

impl Client {
    pub fn new(impact: &ImpactConfig, sid: &str, token: Secret) -> Result<Client, ClientError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("impact-drop/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(impact.connect_timeout_secs))
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(impact.max_in_flight.max(1))
            .build()
            .map_err(|e| ClientError::Build(e.to_string()))?;
        let url = conversions_url(&impact.base_url, impact.endpoint, sid);
        let parsed =
            reqwest::Url::parse(&url).map_err(|e| ClientError::Build(format!("{url}: {e}")))?;
        let authorization = {
            use base64::Engine as _;
            let raw = format!("{sid}:{}", token.expose());
            let mut v = reqwest::header::HeaderValue::from_str(&format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(raw)
            ))
            .map_err(|_| {
                ClientError::Build(
                    "the account SID or token holds characters a header cannot carry".into(),
                )
            })?;
            v.set_sensitive(true);
            v
        };
        Ok(Client {
            http,
            url,
            parsed,
            authorization,
            timeout: Duration::from_secs(impact.timeout_secs),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// POSTs one conversion body and interprets the answer, within `timeout_secs` of time
    /// this process actually ran: the time is counted in ticks, so a process stopped
    /// (SIGSTOP, a suspended VM) past the timeout still reads the answer that arrived
    /// meanwhile instead of taking it for lost (and sending the conversion again).
    pub async fn post(&self, body: &str) -> (Answer, Limits) {
        let ticks = (self.timeout.as_millis() / TICK.as_millis()).max(1) as u64;
        let ran_out = async {
            let mut every = tokio::time::interval(TICK);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            every.tick().await;
            for _ in 0..ticks {
                every.tick().await;
            }
        };
        tokio::select! {
            // An answer that is there wins over a timeout counted at the same moment.
            biased;
            answer = self.post_untimed(body) => answer,
            _ = ran_out => (
                Answer::Uncertain {
                    reason: format!(
                        "impact: timed out after {}s (the request went out; impact may have it)",
                        self.timeout.as_secs()
                    ),
                },
                Limits::default(),
            ),
        }
    }

    async fn post_untimed(&self, body: &str) -> (Answer, Limits) {
        let sent = self
            .http
            .post(self.parsed.clone())
            .header(reqwest::header::AUTHORIZATION, self.authorization.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded; charset=utf-8",
            )
            .body(body.to_owned())
            .send()
            .await;
        let mut resp = match sent {
            Ok(r) => r,
            // Not connected: impact never saw it. Otherwise the request may have reached
            // impact before the timeout or reset: uncertain.
            Err(e) if e.is_connect() => return (retry(describe(&e)), Limits::default()),
            Err(e) => {
                return (
                    Answer::Uncertain {
                        reason: describe(&e),
                    },
                    Limits::default(),
                )
            }
        };
        let status = resp.status().as_u16();
        let headers = Headers::of(&resp);
        let mut bytes = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    let room = MAX_ANSWER_BYTES - bytes.len();
                    bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if bytes.len() >= MAX_ANSWER_BYTES {
                        break;
                    }
                }
                Ok(None) => break,
                // The status line arrived: a 2xx is accepted even if the body broke off.
                Err(e) if !(200..300).contains(&status) => {
                    return (retry(describe(&e)), Limits::default())
                }
                Err(_) => break,
            }
        }
        interpret(status, &|n| headers.get(n), &bytes, unix_now())
    }
}

impl Client {
    /// Asks impact what became of one accepted conversion: `GET` its QueuedUri (a path on
    /// impact's host, or a URL on the same origin as `base_url`; any other host is refused,
    /// so the credentials never leave for it). Idempotent, so any failure is simply asked
    /// again later.
    pub async fn submission(&self, queued_uri: &str) -> (Submission, Limits) {
        let url = match self.parsed.join(queued_uri.trim()) {
            Ok(u) if u.origin() == self.parsed.origin() => u,
            _ => return (Submission::OtherHost, Limits::default()),
        };
        let sent = self
            .http
            .get(url)
            .header(reqwest::header::AUTHORIZATION, self.authorization.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(self.timeout)
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                return (
                    Submission::Retry {
                        reason: describe(&e),
                    },
                    Limits::default(),
                )
            }
        };
        let status = resp.status().as_u16();
        let headers = Headers::of(&resp);
        let bytes = match read_capped(resp).await {
            Ok(b) => b,
            Err(e) => {
                return (
                    Submission::Retry {
                        reason: describe(&e),
                    },
                    Limits::default(),
                )
            }
        };
        interpret_submission(status, &|n| headers.get(n), &bytes, unix_now())
    }
}

/// The headers the core's interpreters read, and no other (not a copy of them all).
struct Headers(Vec<(&'static str, String)>);

impl Headers {
    fn of(resp: &reqwest::Response) -> Headers {
        Headers(
            HEADERS_READ
                .iter()
                .filter_map(|name| {
                    let v = resp.headers().get(*name)?.to_str().ok()?;
                    Some((*name, v.to_owned()))
                })
                .collect(),
        )
    }

    fn get(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }
}

/// At most [`MAX_ANSWER_BYTES`] of an answer.
async fn read_capped(mut resp: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut bytes = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = MAX_ANSWER_BYTES - bytes.len();
        bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if bytes.len() >= MAX_ANSWER_BYTES {
            break;
        }
    }
    Ok(bytes)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn retry(reason: String) -> Answer {
    Answer::Retry {
        reason,
        retry_after: None,
    }
}

/// A network error in words, without the URL's query (there is none) or any header.
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "the answer broke off"
    } else {
        "the request failed"
    };
    let mut detail = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        format!("impact: {kind}")
    } else {
        format!("impact: {kind} ({detail})")
    }
}
