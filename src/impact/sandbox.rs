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

use std::collections::{BTreeMap, HashMap, HashSet};
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

/// Every request the sandbox serves (the README documents each).
pub const ENDPOINTS: &[&str] = &[
    "POST /Mediapartners/{SID}/PartnerConversions",
    "POST /Advertisers/{SID}/Conversions",
    "GET /Mediapartners/{SID}/APISubmissions/{BatchId}",
    "GET /Advertisers/{SID}/APISubmissions/{BatchId}",
    "GET /_sandbox/received",
    "GET /_sandbox/stats",
    "GET /_sandbox/asked",
    "PUT /_sandbox/faults",
];

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
    /// How long a queued conversion takes to reach `Complete` at `APISubmissions` (the first
    /// half `Queued`, the second `In Progress`); 0 = complete at once.
    pub complete_after_ms: u64,
    /// A repeated OrderId (same CampaignId) completes with `CONV_DUPLICATE` when it arrives
    /// within this many seconds of the first; later it makes a second action, as at impact.
    /// `None`: every repeat is a duplicate.
    pub duplicate_window_secs: Option<u64>,
    /// OrderIds accepted (200) that then fail during processing, with the `ErrorReason`
    /// (`CAMPAIGN_NOT_FOUND`, `OUTSIDE_ASSOCIATION_WINDOW`, …).
    pub fail_orders: BTreeMap<String, String>,
    /// The partner path's `APISubmissions` answers 404, as for an account without it.
    pub no_partner_submissions: bool,
    /// A late answer: a conversion is recorded (impact has it), then its answer waits this
    /// long before it is written; a client stopped meanwhile never learns it was accepted.
    pub answer_delay_ms: u64,
}

/// One `GET …/APISubmissions/{BatchId}`, as it arrived.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Asked {
    pub endpoint: String,
    pub batch_id: String,
    /// The status answered (200, or 404 for an unknown id or a partner account without it).
    pub status: u16,
    /// impact's `Status` in the answer, when there was one.
    pub impact_status: Option<String>,
    /// Milliseconds since the sandbox started.
    pub at_ms: u64,
}

/// One conversion as `APISubmissions` keeps it.
#[derive(Clone, Debug)]
struct Submission {
    endpoint: &'static str,
    payload: String,
    order_id: String,
    campaign_id: String,
    submitted: tokio::time::Instant,
    submitted_at: chrono::DateTime<chrono::Utc>,
    /// `(ErrorType, ErrorReason)` it completes with, if it fails.
    error: Option<(String, String)>,
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
    /// Milliseconds since the sandbox started.
    #[serde(default)]
    pub at_ms: u64,
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
    /// When each `(CampaignId, OrderId)` was first accepted, for the duplicate window.
    first_seen: HashMap<(String, String), tokio::time::Instant>,
    submissions: HashMap<String, Submission>,
    /// Every follow-up question, in order.
    asked: Vec<Asked>,
    started: std::time::Instant,
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
            first_seen: HashMap::new(),
            submissions: HashMap::new(),
            asked: Vec::new(),
            started: std::time::Instant::now(),
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

    /// Every follow-up question (`GET …/APISubmissions/…`) so far, in order.
    pub fn asked(&self) -> Vec<Asked> {
        self.state
            .lock()
            .map(|s| s.asked.clone())
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

    let (answer, delay) = {
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
        (answer, s.faults.answer_delay_ms)
    };
    // A late answer: recorded already, written only now.
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
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
    let not_found = || {
        json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"status": 404, "title": "Not Found"}),
        )
    };
    let (endpoint, path_sid, batch) = match parts.as_slice() {
        ["Mediapartners", sid, "PartnerConversions"] => ("partner", *sid, None),
        ["Advertisers", sid, "Conversions"] => ("brand", *sid, None),
        ["Mediapartners", sid, "APISubmissions", id] => ("partner", *sid, Some(*id)),
        ["Advertisers", sid, "APISubmissions", id] => ("brand", *sid, Some(*id)),
        _ => return Ok(not_found()),
    };
    let wanted = if batch.is_some() {
        Method::GET
    } else {
        Method::POST
    };
    if method != wanted {
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
    if let Some(id) = batch {
        let answer = submission(s, endpoint, id);
        let impact_status = answer.as_ref().and_then(|(_, status)| status.clone());
        let at_ms = s.started.elapsed().as_millis() as u64;
        s.asked.push(Asked {
            endpoint: endpoint.into(),
            batch_id: id.into(),
            status: if answer.is_some() { 200 } else { 404 },
            impact_status,
            at_ms,
        });
        return Ok(answer.map(|(a, _)| a).unwrap_or_else(not_found));
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
    let now = tokio::time::Instant::now();
    let first = s
        .first_seen
        .get(&(campaign_id.clone(), order_id.clone()))
        .copied();
    let repeat = first.is_some_and(|first| match s.faults.duplicate_window_secs {
        None => true,
        Some(w) => now.duration_since(first) < Duration::from_secs(w),
    });
    if first.is_none() {
        s.first_seen
            .insert((campaign_id.clone(), order_id.clone()), now);
    }
    let error = if repeat {
        Some(("Validation".to_owned(), "CONV_DUPLICATE".to_owned()))
    } else {
        s.faults.fail_orders.get(&order_id).map(|reason| {
            let kind = if reason.starts_with("CONTRACT") {
                "Contract Error"
            } else {
                "Validation"
            };
            (kind.to_owned(), reason.clone())
        })
    };
    let batch_id = queued_uri.rsplit('/').next().unwrap_or_default().to_owned();
    s.submissions.insert(
        batch_id,
        Submission {
            endpoint: if endpoint == "partner" {
                "partner"
            } else {
                "brand"
            },
            payload: String::from_utf8_lossy(body).into_owned(),
            order_id: order_id.clone(),
            campaign_id: campaign_id.clone(),
            submitted: now,
            submitted_at: chrono::Utc::now(),
            error,
        },
    );
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
        at_ms: s.started.elapsed().as_millis() as u64,
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

/// `GET …/APISubmissions/{BatchId}` as impact's submissions spec describes it: `Queued`, then
/// `In Progress`, then `Complete` with `CompletionDate` and, for a failure, `ErrorType` and
/// `ErrorReason`. `None` (404) for an unknown id, another endpoint's id, or the partner path
/// when `no_partner_submissions` is set.
fn submission(s: &State, endpoint: &str, id: &str) -> Option<(Answer, Option<String>)> {
    if endpoint == "partner" && s.faults.no_partner_submissions {
        return None;
    }
    let sub = s
        .submissions
        .get(id)
        .filter(|sub| sub.endpoint == endpoint)?;
    let total = Duration::from_millis(s.faults.complete_after_ms);
    let elapsed = tokio::time::Instant::now().duration_since(sub.submitted);
    let status = if elapsed >= total {
        "Complete"
    } else if elapsed * 2 >= total {
        "In Progress"
    } else {
        "Queued"
    };
    let root = if endpoint == "partner" {
        "Mediapartners"
    } else {
        "Advertisers"
    };
    let completion = (status == "Complete").then(|| {
        let at = sub.submitted_at + chrono::Duration::from_std(total).unwrap_or_default();
        at.to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
    });
    let error = sub.error.as_ref().filter(|_| status == "Complete");
    let field = |k: &str| {
        form_urlencoded::parse(sub.payload.as_bytes())
            .find(|(f, _)| f == k)
            .map(|(_, v)| v.into_owned())
    };
    let number = |k: &str| field(k).and_then(|v| v.parse::<u64>().ok());
    Some((
        json(
            StatusCode::OK,
            serde_json::json!({
                "BatchId": id,
                "SubmissionDate": sub.submitted_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
                "CampaignId": sub.campaign_id.parse::<u64>().ok(),
                "ActionTrackerId": number("ActionTrackerId"),
                "MediaPartnerId": number("MediaPartnerId"),
                "EventCode": field("EventTypeCode"),
                "OrderId": sub.order_id,
                "Payload": sub.payload,
                "Type": "Conversion",
                "Status": status,
                "CompletionDate": completion,
                "ErrorType": error.map(|e| e.0.as_str()),
                "ErrorReason": error.map(|e| e.1.as_str()),
                "Uri": format!("/{root}/{}/APISubmissions/{id}", s.sid),
            }),
        ),
        Some(status.to_owned()),
    ))
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
        (Method::GET, "/_sandbox/asked") => json(
            StatusCode::OK,
            serde_json::to_value(&s.asked).unwrap_or_default(),
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

#[cfg(test)]
mod tests {
    use super::*;

    const SID: &str = "IRSUBMISSIONS00000000000001";
    const TOKEN: &str = "submissions-token";

    /// `(status, JSON)` of a request to the sandbox.
    async fn call(
        client: &reqwest::Client,
        method: reqwest::Method,
        url: String,
        body: &str,
    ) -> (u16, serde_json::Value) {
        let r = client
            .request(method, url)
            .basic_auth(SID, Some(TOKEN))
            .header("Accept", "application/json")
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let bytes = r.bytes().await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or_default())
    }

    #[tokio::test(start_paused = true)]
    async fn api_submissions_queue_then_complete_with_impacts_outcome() {
        let faults = Faults {
            complete_after_ms: 60_000,
            duplicate_window_secs: Some(3600),
            fail_orders: [("F-1".to_owned(), "CAMPAIGN_NOT_FOUND".to_owned())].into(),
            ..Faults::default()
        };
        let sandbox = Sandbox::start(([127, 0, 0, 1], 0).into(), SID, TOKEN, faults)
            .await
            .unwrap();
        let base = sandbox.base_url();
        let client = reqwest::Client::new();
        let post = |endpoint: &str, order: &str| {
            let (path, keys) = if endpoint == "brand" {
                (
                    format!("{base}/Advertisers/{SID}/Conversions"),
                    "EventTypeCode=SALE&ClickId=c",
                )
            } else {
                (
                    format!("{base}/Mediapartners/{SID}/PartnerConversions"),
                    "ActionTrackerId=2&MediaPartnerId=3",
                )
            };
            let body = format!(
                "CampaignId=1&{keys}&OrderId={order}&EventDate=2025-01-01T00:00:00Z&Amount=1.00&CurrencyCode=USD"
            );
            (path, body)
        };
        let mut uris = BTreeMap::new();
        for (endpoint, order) in [
            ("brand", "OK-1"),
            ("brand", "F-1"),
            ("brand", "OK-1"),
            ("partner", "P-1"),
        ] {
            let (url, body) = post(endpoint, order);
            let (status, v) = call(&client, reqwest::Method::POST, url, &body).await;
            assert_eq!(status, 200, "{v}");
            let uri = v["QueuedUri"].as_str().unwrap().to_owned();
            uris.entry(order).or_insert_with(Vec::new).push(uri);
        }
        let get = |uri: &str| call(&client, reqwest::Method::GET, format!("{base}{uri}"), "");
        let (status, v) = get(&uris["OK-1"][0]).await;
        assert_eq!((status, v["Status"].as_str()), (200, Some("Queued")), "{v}");
        assert!(v["CompletionDate"].is_null() && v["ErrorReason"].is_null());
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(get(&uris["OK-1"][0]).await.1["Status"], "In Progress");
        tokio::time::advance(Duration::from_secs(30)).await;
        let (_, v) = get(&uris["OK-1"][0]).await;
        assert_eq!(v["Status"], "Complete");
        assert!(
            v["ErrorType"].is_null() && v["CompletionDate"].is_string(),
            "{v}"
        );
        assert_eq!(v["OrderId"], "OK-1");
        assert!(v["Payload"].as_str().unwrap().contains("OrderId=OK-1"));
        let (_, v) = get(&uris["F-1"][0]).await;
        assert_eq!(
            (v["ErrorType"].as_str(), v["ErrorReason"].as_str()),
            (Some("Validation"), Some("CAMPAIGN_NOT_FOUND"))
        );
        let (_, v) = get(&uris["OK-1"][1]).await;
        assert_eq!(
            v["ErrorReason"], "CONV_DUPLICATE",
            "the repeat within the window"
        );
        let (status, v) = get(&uris["P-1"][0]).await;
        assert_eq!((status, v["Status"].as_str()), (200, Some("Complete")));
        // Outside the window the same OrderId is a second action; another account's path,
        // the wrong endpoint's path, and a switched-off partner path are 404.
        tokio::time::advance(Duration::from_secs(3600)).await;
        let (url, body) = post("brand", "OK-1");
        let (_, v) = call(&client, reqwest::Method::POST, url, &body).await;
        tokio::time::advance(Duration::from_secs(60)).await;
        let (_, late) = get(v["QueuedUri"].as_str().unwrap()).await;
        assert!(late["ErrorReason"].is_null(), "{late}");
        let wrong = uris["P-1"][0].replace("Mediapartners", "Advertisers");
        assert_eq!(get(&wrong).await.0, 404);
        assert_eq!(
            get(&format!("/Advertisers/{SID}/APISubmissions/A-nope"))
                .await
                .0,
            404
        );
        sandbox.state.lock().unwrap().faults.no_partner_submissions = true;
        assert_eq!(get(&uris["P-1"][0]).await.0, 404);
        sandbox.stop();
    }
}
