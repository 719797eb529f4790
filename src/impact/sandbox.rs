//! A strict local imitation of impact's conversion endpoints, for tests, demos and operators.
//!
//! It serves `POST /Mediapartners/{SID}/PartnerConversions` and
//! `POST /Advertisers/{SID}/Conversions`. It checks Basic auth and that the SID in the path
//! is the credentials' own. It validates the form body as impact's contract says (required
//! fields, digits-only ids, RFC 3339 dates with an offset, `.` decimals that are never
//! negative, contiguous item indices from 1, never `Amount` with items, never a price with a
//! subtotal). It answers as impact does: `QUEUED` + `QueuedUri`, `400` error lists, `401`/`403`,
//! and XML when the client does not ask for JSON. It remembers what it accepted and counts
//! repeated OrderIds.
//!
//! The checks are written from the contract independently of `validate`, so a bug in one
//! shows up against the other. Faults are injected on request (`Faults`, also settable at
//! run time with `PUT /_sandbox/faults`): a share of 5xx, connections dropped *after*
//! accepting, bursts of 429, an outage, latency, an hourly budget, rejected OrderIds.
//! `GET /_sandbox/received` and `GET /_sandbox/stats` show what arrived.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Faults to inject. All off by default.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Share of requests answered 500/502/503 (0.0–1.0).
    pub error_rate: f64,
    /// Share of valid requests accepted and then cut off before the answer is written.
    pub drop_rate: f64,
    /// The next this-many requests are answered 429.
    pub rate_limit_burst: u32,
    /// `Retry-After` seconds sent with 429s (default 1).
    pub retry_after_secs: u64,
    /// Every request answered 503 while set.
    pub outage: bool,
    /// Delay before each answer.
    pub latency_ms: u64,
    /// Requests allowed per hour before 429s (with `X-RateLimit-*-hour` headers); 0 = none.
    pub hourly_limit: u32,
    /// OrderIds impact "rejects" (400, as if their campaign were unknown).
    pub reject_orders: Vec<String>,
    /// Every request answered `200 OK` with an HTML page, as a proxy or captive portal in
    /// front of impact would: nothing reaches impact.
    pub html_200: bool,
}

/// One accepted conversion.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Received {
    pub endpoint: String,
    pub order_id: String,
    pub campaign_id: String,
    pub body: String,
    pub queued_uri: String,
    /// The sale amount impact computes from the body on this endpoint (only the fields the
    /// endpoint defines count), as a decimal string.
    pub sale_amount: Option<String>,
    /// What impact's answer warned about (fields ignored, …).
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// Counters for tests and the demo.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    /// Requests that arrived (counted before any latency, so a test can see them in flight).
    pub arrived: u64,
    pub requests: u64,
    pub accepted: u64,
    /// Accepted again with an OrderId already accepted (impact would flag CONV_DUPLICATE).
    pub duplicates: BTreeMap<String, u64>,
    /// OrderIds accepted and then cut off before the answer.
    pub dropped: BTreeMap<String, u64>,
    pub statuses: BTreeMap<u16, u64>,
}

struct State {
    sid: String,
    token: String,
    faults: Faults,
    received: Vec<Received>,
    seen: HashSet<(String, String)>,
    stats: Stats,
    /// Requests in the current hour window, which began at `hour_started` (tokio time, so
    /// a test with paused time sees the budget refill after an hour).
    hour_count: u32,
    hour_started: tokio::time::Instant,
    rng: rand::rngs::StdRng,
}

/// A running sandbox.
pub struct Sandbox {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: CancellationToken,
}

impl Sandbox {
    /// Starts serving on `addr` (use port 0 for any free port) for one account.
    pub async fn start(
        addr: SocketAddr,
        sid: &str,
        token: &str,
        faults: Faults,
    ) -> std::io::Result<Sandbox> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            sid: sid.to_owned(),
            token: token.to_owned(),
            faults,
            received: Vec::new(),
            seen: HashSet::new(),
            stats: Stats::default(),
            hour_count: 0,
            hour_started: tokio::time::Instant::now(),
            rng: rand::rngs::StdRng::seed_from_u64(0x1a2b_3c4d),
        }));
        let stop = CancellationToken::new();
        let st = state.clone();
        crate::http::spawn_server(listener, stop.clone(), move |req| handle(st.clone(), req));
        Ok(Sandbox { addr, state, stop })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.state
            .lock()
            .map(|s| s.received.clone())
            .unwrap_or_default()
    }

    pub fn stats(&self) -> Stats {
        self.state
            .lock()
            .map(|s| s.stats.clone())
            .unwrap_or_default()
    }

    pub fn set_faults(&self, faults: Faults) {
        if let Ok(mut s) = self.state.lock() {
            s.faults = faults;
        }
    }

    pub fn stop(&self) {
        self.stop.cancel();
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Why a connection is cut instead of answered.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by the sandbox (fault injection)")
    }
}

impl std::error::Error for Dropped {}

type Answer = Response<Full<Bytes>>;

fn respond(status: StatusCode, content_type: &str, body: String) -> Answer {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn json(status: StatusCode, v: serde_json::Value) -> Answer {
    respond(status, "application/json", v.to_string())
}

async fn handle(state: Arc<Mutex<State>>, req: Request<Incoming>) -> Result<Answer, Dropped> {
    let path = req.uri().path().to_owned();
    if path.starts_with("/_sandbox/") {
        return Ok(control(&state, req).await);
    }
    let latency = state
        .lock()
        .map(|mut s| {
            s.stats.arrived += 1;
            s.faults.latency_ms
        })
        .unwrap_or(0);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let wants_json = req
        .headers()
        .get(hyper::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    let auth = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let content_type = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let method = req.method().clone();
    let body = match Limited::new(req.into_body(), 1024 * 1024).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Ok(json(
                StatusCode::PAYLOAD_TOO_LARGE,
                serde_json::json!({"Status": "ERROR", "Message": "body too large"}),
            ))
        }
    };

    let Ok(mut s) = state.lock() else {
        return Ok(json(
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({}),
        ));
    };
    s.stats.requests += 1;
    let answer = answer(
        &mut s,
        &method,
        &path,
        auth.as_deref(),
        &content_type,
        &body,
        wants_json,
    );
    let status = answer.as_ref().map_or(200, |r| r.status().as_u16());
    *s.stats.statuses.entry(status).or_default() += 1;
    answer
}

/// Everything but the body read and the latency: decides the answer under the state lock.
fn answer(
    s: &mut State,
    method: &Method,
    path: &str,
    auth: Option<&str>,
    content_type: &str,
    body: &[u8],
    wants_json: bool,
) -> Result<Answer, Dropped> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (endpoint, path_sid) = match parts.as_slice() {
        ["Mediapartners", sid, "PartnerConversions"] => ("partner", *sid),
        ["Advertisers", sid, "Conversions"] => ("brand", *sid),
        _ => {
            return Ok(json(
                StatusCode::NOT_FOUND,
                serde_json::json!({"status": 404, "title": "Not Found"}),
            ))
        }
    };
    if method != Method::POST {
        return Ok(json(
            StatusCode::METHOD_NOT_ALLOWED,
            serde_json::json!({"status": 405, "title": "Method Not Allowed"}),
        ));
    }
    let creds = auth
        .and_then(|a| a.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|d| String::from_utf8(d).ok());
    let Some((user, pass)) = creds.as_deref().and_then(|c| c.split_once(':')) else {
        return Ok(json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({"status": 401, "title": "Unauthorized"}),
        ));
    };
    if user != s.sid || pass != s.token {
        return Ok(json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({"status": 401, "title": "Unauthorized"}),
        ));
    }
    if path_sid != user {
        return Ok(json(
            StatusCode::FORBIDDEN,
            serde_json::json!({"status": 403, "title": "Access Denied"}),
        ));
    }
    if s.faults.html_200 {
        return Ok(respond(
            StatusCode::OK,
            "text/html",
            "<html><body><h1>Welcome</h1><p>Please accept the terms to use this network.</p></body></html>".into(),
        ));
    }
    if s.faults.outage {
        return Ok(json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"Status": "ERROR", "Message": "Service Unavailable (sandbox outage)"}),
        ));
    }
    if s.faults.rate_limit_burst > 0 {
        s.faults.rate_limit_burst -= 1;
        let mut r = json(
            StatusCode::TOO_MANY_REQUESTS,
            serde_json::json!({"status": 429, "title": "Too Many Requests"}),
        );
        let wait = s.faults.retry_after_secs.max(1).to_string();
        if let Ok(v) = wait.parse() {
            r.headers_mut().insert(hyper::header::RETRY_AFTER, v);
        }
        return Ok(r);
    }
    let limit = s.faults.hourly_limit;
    let hour = Duration::from_secs(3600);
    let now = tokio::time::Instant::now();
    if now.duration_since(s.hour_started) >= hour {
        s.hour_started = now;
        s.hour_count = 0;
    }
    // What the reset headers say: the seconds left in this hour window (rounded up).
    let reset = (hour - now.duration_since(s.hour_started))
        .as_secs_f64()
        .ceil() as u64;
    if limit > 0 {
        s.hour_count += 1;
        if s.hour_count > limit {
            let mut r = json(
                StatusCode::TOO_MANY_REQUESTS,
                serde_json::json!({"status": 429, "title": "Too Many Requests"}),
            );
            add_rate_headers(&mut r, limit, 0, reset);
            return Ok(r);
        }
    }
    let roll: f64 = s.rng.gen();
    if roll < s.faults.error_rate {
        let code = [
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::BAD_GATEWAY,
            StatusCode::SERVICE_UNAVAILABLE,
        ][s.rng.gen_range(0..3)];
        return Ok(respond(
            code,
            "text/html",
            "<html><body>upstream error</body></html>".into(),
        ));
    }
    if !content_type.starts_with("application/x-www-form-urlencoded") {
        return Ok(error(wants_json, vec![("".into(), format!("unsupported Content-Type {content_type:?}: send application/x-www-form-urlencoded"))]));
    }
    let fields: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
    let (errors, warnings) = crate::contract::check(endpoint, &fields);
    if !errors.is_empty() {
        return Ok(error(wants_json, errors));
    }
    let get = |k: &str| {
        fields
            .iter()
            .find(|(f, _)| f == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let order_id = get("OrderId");
    let campaign_id = get("CampaignId");
    if s.faults.reject_orders.contains(&order_id) {
        return Ok(error(wants_json, vec![("CampaignId".into(), format!("CAMPAIGN_NOT_FOUND: campaign {campaign_id} is not set up for this order (sandbox rejection)"))]));
    }
    let queued_uri = format!(
        "/{}/{}/APISubmissions/A-{:016x}",
        if endpoint == "partner" {
            "Mediapartners"
        } else {
            "Advertisers"
        },
        s.sid,
        s.rng.gen::<u64>()
    );
    if !s.seen.insert((campaign_id.clone(), order_id.clone())) {
        *s.stats.duplicates.entry(order_id.clone()).or_default() += 1;
    }
    s.stats.accepted += 1;
    s.received.push(Received {
        endpoint: endpoint.into(),
        order_id: order_id.clone(),
        campaign_id,
        body: String::from_utf8_lossy(body).into_owned(),
        queued_uri: queued_uri.clone(),
        sale_amount: crate::contract::sale_amount(endpoint, &fields)
            .map(|d| d.normalize().to_string()),
        warnings: warnings.iter().map(|(f, m)| format!("{f}: {m}")).collect(),
    });
    let roll: f64 = s.rng.gen();
    if roll < s.faults.drop_rate {
        *s.stats.dropped.entry(order_id).or_default() += 1;
        return Err(Dropped);
    }
    let mut r = if wants_json {
        let mut v = serde_json::json!({"Status": "QUEUED", "QueuedUri": queued_uri});
        if !warnings.is_empty() {
            v["warnings"] = warnings
                .iter()
                .map(|(f, m)| serde_json::json!({"field": f, "level": "WARN", "message": m}))
                .collect();
        }
        json(StatusCode::OK, v)
    } else {
        respond(
            StatusCode::OK,
            "application/xml",
            format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><ImpactRadiusResponse><Status>QUEUED</Status><QueuedUri>{queued_uri}</QueuedUri></ImpactRadiusResponse>"),
        )
    };
    if limit > 0 {
        add_rate_headers(&mut r, limit, limit.saturating_sub(s.hour_count), reset);
    }
    Ok(r)
}

fn add_rate_headers(r: &mut Answer, limit: u32, remaining: u32, reset_secs: u64) {
    let h = r.headers_mut();
    for (k, v) in [
        ("X-RateLimit-Limit-hour", limit.to_string()),
        ("X-RateLimit-Remaining-hour", remaining.to_string()),
        ("RateLimit-Reset", reset_secs.to_string()),
    ] {
        if let (Ok(k), Ok(v)) = (
            hyper::header::HeaderName::from_bytes(k.as_bytes()),
            v.parse(),
        ) {
            h.insert(k, v);
        }
    }
}

fn error(wants_json: bool, errors: Vec<(String, String)>) -> Answer {
    if wants_json {
        let list: Vec<_> = errors
            .iter()
            .map(|(f, m)| serde_json::json!({"field": f, "level": "ERROR", "message": m}))
            .collect();
        json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"Status": "ERROR", "errors": list}),
        )
    } else {
        let items: String = errors
            .iter()
            .map(|(f, m)| format!("<Error><Field>{f}</Field><Message>{m}</Message></Error>"))
            .collect();
        respond(
            StatusCode::BAD_REQUEST,
            "application/xml",
            format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><ImpactRadiusResponse><Status>ERROR</Status><Errors>{items}</Errors></ImpactRadiusResponse>"),
        )
    }
}

async fn control(state: &Arc<Mutex<State>>, req: Request<Incoming>) -> Answer {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let Ok(mut s) = state.lock() else {
        return json(StatusCode::INTERNAL_SERVER_ERROR, serde_json::json!({}));
    };
    match (method, path.as_str()) {
        (Method::GET, "/_sandbox/received") => json(
            StatusCode::OK,
            serde_json::to_value(&s.received).unwrap_or_default(),
        ),
        (Method::GET, "/_sandbox/stats") => json(
            StatusCode::OK,
            serde_json::to_value(&s.stats).unwrap_or_default(),
        ),
        (Method::PUT, "/_sandbox/faults") => match serde_json::from_slice::<Faults>(&body) {
            Ok(f) => {
                s.faults = f;
                json(
                    StatusCode::OK,
                    serde_json::to_value(&s.faults).unwrap_or_default(),
                )
            }
            Err(e) => json(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"error": e.to_string()}),
            ),
        },
        _ => json(StatusCode::NOT_FOUND, serde_json::json!({"status": 404})),
    }
}
