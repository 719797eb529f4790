//! Reading impact's answers (pure): status, headers and body → what to do with the conversion.
//!
//! 2xx is accepted, whatever the body looks like: a 2xx is never retried, because that would
//! send the conversion twice. 400 and other 4xx are rejected, with impact's reasons read in
//! both casings (`errors[].message` and `Errors[].Message`). 401/403 stop all sending. 404
//! means a wrong account or endpoint and also stops sending. 429 waits as the headers say. 5xx
//! and 408 are retried. A body that is XML, empty or garbage is handled, never a crash.

use std::time::Duration;

use serde_json::Value;

/// What impact's answer means for one conversion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Queued by impact. Keep the QueuedUri and any warnings.
    Accepted {
        queued_uri: Option<String>,
        warnings: Vec<String>,
    },
    /// The conversion is wrong: never retry it as is.
    Rejected { reasons: Vec<String> },
    /// Credentials, permissions or the account path are wrong: stop everything.
    Fatal { status: u16, message: String },
    /// Too many requests: wait this long, then retry.
    RateLimited { wait: Duration },
    /// A transient failure (5xx, a connection refused): retry with backoff, or after
    /// `retry_after` when the server said so.
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// impact may or may not have the conversion: the request went out, but what came back
    /// is not impact's answer (a proxy's or captive portal's page on a 200), or nothing came
    /// back in time (a timeout or a reset after sending). Resent a bounded number of times,
    /// then held for the operator; never recorded as accepted.
    Uncertain { reason: String },
}

/// Rate-limit headers, read on every response for pacing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    /// Time until the window resets.
    pub reset: Option<Duration>,
}

/// The longest stretch of a body quoted in a reason.
const QUOTE: usize = 300;

/// Every header [`interpret`] reads: a client keeps these and no other.
pub const HEADERS_READ: &[&str] = &[
    "Location",
    "Retry-After",
    "X-RateLimit-Limit-hour",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining-hour",
    "X-RateLimit-Remaining",
    "RateLimit-Reset",
    "X-RateLimit-Reset",
];

/// Interprets one response. `header` looks a header up case-insensitively; `now_unix` is
/// used for reset headers written as a Unix time.
pub fn interpret(
    status: u16,
    header: &dyn Fn(&str) -> Option<String>,
    body: &[u8],
    now_unix: u64,
) -> (Answer, Limits) {
    let limits = read_limits(header, now_unix);
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let answer = match status {
        200..=299 => accepted(json.as_ref(), body),
        300..=399 => Answer::Fatal {
            status,
            message: format!(
                "impact answered {status} (a redirect{}), which is never followed for a \
                 conversion: check [impact] base_url",
                header("Location")
                    .map(|l| format!(" to {l}"))
                    .unwrap_or_default()
            ),
        },
        401 | 403 => Answer::Fatal {
            status,
            message: auth_message(status, json.as_ref()),
        },
        404 => Answer::Fatal {
            status,
            message: "impact answered 404 Not Found for the conversions endpoint: check \
                      [impact] account_sid, endpoint (partner or brand) and base_url"
                .into(),
        },
        429 => Answer::RateLimited {
            wait: retry_after(header, now_unix)
                .or(limits.reset)
                .unwrap_or(Duration::from_secs(60)),
        },
        408 | 425 | 500..=599 => Answer::Retry {
            reason: format!(
                "impact answered {status}{}",
                snippet_suffix(json.as_ref(), body)
            ),
            retry_after: retry_after(header, now_unix),
        },
        _ => Answer::Rejected {
            reasons: reasons(status, json.as_ref(), body),
        },
    };
    (answer, limits)
}

fn accepted(json: Option<&Value>, body: &[u8]) -> Answer {
    let Some(v) = json else {
        // impact answers XML when the client does not ask for JSON; read what we can. A 2xx
        // that is neither (an HTML page from a proxy or a captive portal) is not impact's
        // answer: nothing says impact has the conversion.
        let text = String::from_utf8_lossy(body);
        return match xml_tag(&text, "QueuedUri") {
            Some(uri) => Answer::Accepted {
                queued_uri: Some(uri),
                warnings: Vec::new(),
            },
            None => Answer::Uncertain {
                reason: format!(
                    "a 2xx answer that is not impact's (no Status or QueuedUri): {}",
                    quote(&text)
                ),
            },
        };
    };
    let is_impacts = get_ci(v, "Status").is_some() || get_ci(v, "QueuedUri").is_some();
    if !is_impacts {
        return Answer::Uncertain {
            reason: format!(
                "a 2xx answer that is not impact's (no Status or QueuedUri): {}",
                quote(&String::from_utf8_lossy(body))
            ),
        };
    }
    if get_ci(v, "Status")
        .and_then(Value::as_str)
        .is_some_and(|s| s.eq_ignore_ascii_case("ERROR"))
    {
        return Answer::Rejected {
            reasons: reasons(200, Some(v), body),
        };
    }
    let queued_uri = get_ci(v, "QueuedUri")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let warnings = get_ci(v, "warnings")
        .and_then(Value::as_array)
        .map(|list| list.iter().map(describe).collect())
        .unwrap_or_default();
    Answer::Accepted {
        queued_uri,
        warnings,
    }
}

/// A JSON key, in whichever casing impact used.
fn get_ci<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

/// `{"field": "OrderId", "message": "…"}` (either casing) → `OrderId: …`.
fn describe(e: &Value) -> String {
    let field = get_ci(e, "field").and_then(Value::as_str);
    let message = get_ci(e, "message")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| e.to_string());
    match field {
        Some(f) if !f.is_empty() => format!("{f}: {message}"),
        _ => message,
    }
}

fn reasons(status: u16, json: Option<&Value>, body: &[u8]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if let Some(v) = json {
        if let Some(list) = get_ci(v, "errors").and_then(Value::as_array) {
            out.extend(list.iter().map(describe));
        }
        if out.is_empty() {
            if let Some(m) = get_ci(v, "Message").and_then(Value::as_str) {
                out.push(m.to_owned());
            }
        }
    }
    if out.is_empty() {
        let text = String::from_utf8_lossy(body);
        out.push(if text.trim().is_empty() {
            format!("impact answered {status} without a reason")
        } else {
            format!("impact answered {status}: {}", quote(&text))
        });
    }
    out
}

fn auth_message(status: u16, json: Option<&Value>) -> String {
    let title = json
        .and_then(|v| get_ci(v, "title"))
        .and_then(Value::as_str)
        .unwrap_or(if status == 401 {
            "Unauthorized"
        } else {
            "Access Denied"
        });
    if status == 401 {
        format!(
            "impact answered 401 {title}: the account SID or auth token is wrong; check \
             IMPACT_AUTH_TOKEN (or [impact] auth_token_file) and [impact] account_sid"
        )
    } else {
        format!(
            "impact answered 403 {title}: the token lacks the permission to create \
             conversions, or the SID in the URL is not the token's account; check the token's \
             scopes in impact (IMPACT_AUTH_TOKEN) and [impact] account_sid"
        )
    }
}

fn snippet_suffix(json: Option<&Value>, body: &[u8]) -> String {
    match json
        .and_then(|v| get_ci(v, "Message"))
        .and_then(Value::as_str)
    {
        Some(m) => format!(": {m}"),
        None if body.is_empty() => String::new(),
        None => format!(": {}", quote(&String::from_utf8_lossy(body))),
    }
}

fn quote(text: &str) -> String {
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(QUOTE) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None => one_line,
    }
}

fn xml_tag(text: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = text.find(&open)? + open.len();
    let end = text[start..].find("</")? + start;
    Some(text[start..end].trim().to_owned())
}

/// Seconds, or (brand's documented-as-seconds header that looks like a Unix time) an instant.
fn seconds_or_instant(value: &str, now_unix: u64) -> Option<Duration> {
    let n: u64 = value.trim().parse().ok()?;
    // Anything past 2001-09-09 is a Unix time, not a delay.
    Some(Duration::from_secs(if n > 1_000_000_000 {
        n.saturating_sub(now_unix)
    } else {
        n
    }))
}

fn retry_after(header: &dyn Fn(&str) -> Option<String>, now_unix: u64) -> Option<Duration> {
    let v = header("Retry-After")?;
    seconds_or_instant(&v, now_unix).or_else(|| {
        let at = chrono::DateTime::parse_from_rfc2822(v.trim()).ok()?;
        Some(Duration::from_secs(
            (at.timestamp().max(0) as u64).saturating_sub(now_unix),
        ))
    })
}

fn read_limits(header: &dyn Fn(&str) -> Option<String>, now_unix: u64) -> Limits {
    let num = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| header(n).and_then(|v| v.trim().parse::<u64>().ok()))
    };
    Limits {
        limit: num(&["X-RateLimit-Limit-hour", "X-RateLimit-Limit"]),
        remaining: num(&["X-RateLimit-Remaining-hour", "X-RateLimit-Remaining"]),
        reset: ["RateLimit-Reset", "X-RateLimit-Reset"]
            .iter()
            .find_map(|n| header(n).and_then(|v| seconds_or_instant(&v, now_unix))),
    }
}

/// What `GET …/APISubmissions/{BatchId}` said about one accepted conversion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Submission {
    /// `Queued` or `In Progress`: ask again later.
    Waiting { status: String },
    /// `Complete`; `error` is `(ErrorType, ErrorReason)` when it failed at impact.
    Complete {
        error: Option<(String, String)>,
        completed_at: Option<String>,
    },
    /// 404 or 405: impact does not offer this (partner), or no longer knows the submission.
    Gone { status: u16 },
    /// The QueuedUri names another host than impact's: not asked (the credentials never
    /// leave for another host).
    OtherHost,
    /// 401 or 403: the credentials or permissions do not allow it.
    Denied { status: u16, message: String },
    /// 429: wait this long.
    RateLimited { wait: Duration },
    /// Anything else (5xx, a body that is not impact's): ask again later.
    Retry { reason: String },
}

/// Interprets an `APISubmissions` answer (JSON, or the XML impact sends without `Accept`).
pub fn interpret_submission(
    status: u16,
    header: &dyn Fn(&str) -> Option<String>,
    body: &[u8],
    now_unix: u64,
) -> (Submission, Limits) {
    let limits = read_limits(header, now_unix);
    let answer = match status {
        200..=299 => read_submission(body),
        401 | 403 => {
            let json: Option<Value> = serde_json::from_slice(body).ok();
            Submission::Denied {
                status,
                message: auth_message(status, json.as_ref()),
            }
        }
        404 | 405 => Submission::Gone { status },
        429 => Submission::RateLimited {
            wait: retry_after(header, now_unix)
                .or(limits.reset)
                .unwrap_or(Duration::from_secs(60)),
        },
        _ => Submission::Retry {
            reason: format!(
                "impact answered {status} to a follow-up{}",
                snippet_suffix(serde_json::from_slice(body).ok().as_ref(), body)
            ),
        },
    };
    (answer, limits)
}

fn read_submission(body: &[u8]) -> Submission {
    let text = String::from_utf8_lossy(body);
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let field = |k: &str| -> Option<String> {
        let v = match &json {
            Some(v) => get_ci(v, k).and_then(Value::as_str).map(str::to_owned),
            None => xml_tag(&text, k),
        };
        v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
    };
    let Some(status) = field("Status") else {
        return Submission::Retry {
            reason: format!("a follow-up answer without a Status: {}", quote(&text)),
        };
    };
    if status.eq_ignore_ascii_case("Complete") {
        let error = match (field("ErrorType"), field("ErrorReason")) {
            (None, None) => None,
            (t, r) => Some((t.unwrap_or_default(), r.unwrap_or_default())),
        };
        Submission::Complete {
            error,
            completed_at: field("CompletionDate"),
        }
    } else {
        Submission::Waiting { status }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpret_reads_no_header_outside_headers_read() {
        let asked = std::cell::RefCell::new(Vec::new());
        let lookup = |name: &str| {
            asked.borrow_mut().push(name.to_owned());
            None
        };
        for status in [
            200, 201, 202, 301, 302, 400, 401, 403, 404, 408, 422, 429, 500, 502, 503,
        ] {
            interpret(status, &lookup, b"{}", 1_700_000_000);
        }
        let asked = asked.into_inner();
        assert!(asked.iter().any(|n| n == "Retry-After"), "{asked:?}");
        for name in &asked {
            assert!(
                HEADERS_READ.contains(&name.as_str()),
                "{name} is read but not in HEADERS_READ"
            );
        }
    }

    #[test]
    fn submissions_read_as_impact_documents_them() {
        let none = |_: &str| None;
        let read =
            |status: u16, body: &str| interpret_submission(status, &none, body.as_bytes(), 0).0;
        assert_eq!(
            read(200, r#"{"Status":"Queued","CompletionDate":null}"#),
            Submission::Waiting {
                status: "Queued".into()
            }
        );
        assert_eq!(
            read(200, r#"{"Status":"In Progress"}"#),
            Submission::Waiting {
                status: "In Progress".into()
            }
        );
        assert_eq!(
            read(
                200,
                r#"{"Status":"Complete","CompletionDate":"2026-12-01T10:11:15-07:00","ErrorType":null,"ErrorReason":""}"#
            ),
            Submission::Complete {
                error: None,
                completed_at: Some("2026-12-01T10:11:15-07:00".into())
            }
        );
        assert_eq!(
            read(
                200,
                r#"{"status":"Complete","errorType":"Contract Error","errorReason":"CONTRACT_NOT_FOUND RESTRICTED_PROMOCODE"}"#
            ),
            Submission::Complete {
                error: Some((
                    "Contract Error".into(),
                    "CONTRACT_NOT_FOUND RESTRICTED_PROMOCODE".into()
                )),
                completed_at: None
            }
        );
        // XML, as impact answers without `Accept: application/json`.
        assert_eq!(
            read(200, "<APISubmission><Status>Complete</Status><ErrorType>Validation</ErrorType><ErrorReason>CONV_DUPLICATE</ErrorReason></APISubmission>"),
            Submission::Complete { error: Some(("Validation".into(), "CONV_DUPLICATE".into())), completed_at: None }
        );
        assert_eq!(read(404, ""), Submission::Gone { status: 404 });
        assert_eq!(read(405, ""), Submission::Gone { status: 405 });
        assert!(matches!(
            read(403, "{}"),
            Submission::Denied { status: 403, .. }
        ));
        assert!(matches!(
            read(401, "{}"),
            Submission::Denied { status: 401, .. }
        ));
        assert!(matches!(read(503, "down"), Submission::Retry { .. }));
        assert!(matches!(
            read(200, "<html>portal</html>"),
            Submission::Retry { .. }
        ));
        assert_eq!(
            read(429, ""),
            Submission::RateLimited {
                wait: Duration::from_secs(60)
            }
        );
    }

    fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> (Answer, Limits) {
        let lookup = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.to_string())
        };
        interpret(status, &lookup, body.as_bytes(), 1_700_000_000)
    }

    #[test]
    fn queued_with_uri_and_warnings() {
        let (a, _) = answer(
            200,
            &[],
            r#"{"Status":"QUEUED","QueuedUri":"/Mediapartners/IR1/APISubmissions/A-1","warnings":[{"field":"CardBin","level":"WARN","message":"ignored"}]}"#,
        );
        assert_eq!(
            a,
            Answer::Accepted {
                queued_uri: Some("/Mediapartners/IR1/APISubmissions/A-1".into()),
                warnings: vec!["CardBin: ignored".into()]
            }
        );
    }

    #[test]
    fn xml_is_accepted_and_a_2xx_that_is_not_impacts_is_uncertain() {
        let (a, _) = answer(200, &[], "<ImpactRadiusResponse><Status>QUEUED</Status><QueuedUri>/x/A-2</QueuedUri></ImpactRadiusResponse>");
        assert_eq!(
            a,
            Answer::Accepted {
                queued_uri: Some("/x/A-2".into()),
                warnings: vec![]
            }
        );
        for body in [
            "\u{0}\u{1}garbage",
            "<html><body>Please log in to the hotel Wi-Fi</body></html>",
            "{\"ok\":true}",
        ] {
            let (a, _) = answer(200, &[], body);
            assert!(matches!(a, Answer::Uncertain { .. }), "{body}: {a:?}");
        }
    }

    #[test]
    fn both_error_casings_are_read() {
        let (a, _) = answer(
            400,
            &[],
            r#"{"Status":"ERROR","errors":[{"field":"OrderId","level":"ERROR","message":"is required"}]}"#,
        );
        assert_eq!(
            a,
            Answer::Rejected {
                reasons: vec!["OrderId: is required".into()]
            }
        );
        let (a, _) = answer(
            400,
            &[],
            r#"{"Status":"ERROR","Message":"Bad","Errors":[{"Field":"EventDate","Message":"invalid"}]}"#,
        );
        assert_eq!(
            a,
            Answer::Rejected {
                reasons: vec!["EventDate: invalid".into()]
            }
        );
        let (a, _) = answer(
            400,
            &[],
            r#"{"Status":"ERROR","Message":"Something is off"}"#,
        );
        assert_eq!(
            a,
            Answer::Rejected {
                reasons: vec!["Something is off".into()]
            }
        );
        let (a, _) = answer(400, &[], "");
        assert_eq!(
            a,
            Answer::Rejected {
                reasons: vec!["impact answered 400 without a reason".into()]
            }
        );
    }

    #[test]
    fn auth_failures_are_fatal_and_say_what_to_check() {
        let (a, _) = answer(401, &[], r#"{"status":401,"title":"Unauthorized"}"#);
        let Answer::Fatal {
            status: 401,
            message,
        } = a
        else {
            panic!("{a:?}")
        };
        assert!(message.contains("IMPACT_AUTH_TOKEN"));
        let (a, _) = answer(403, &[], "");
        assert!(matches!(a, Answer::Fatal { status: 403, .. }));
        let (a, _) = answer(404, &[], "");
        assert!(matches!(a, Answer::Fatal { status: 404, .. }));
    }

    #[test]
    fn rate_limit_waits_as_told() {
        let (a, _) = answer(429, &[("Retry-After", "7")], "");
        assert_eq!(
            a,
            Answer::RateLimited {
                wait: Duration::from_secs(7)
            }
        );
        let (a, _) = answer(429, &[("RateLimit-Reset", "12")], "");
        assert_eq!(
            a,
            Answer::RateLimited {
                wait: Duration::from_secs(12)
            }
        );
        // Brand's reset header, documented as seconds, sometimes a Unix time.
        let (a, _) = answer(429, &[("X-RateLimit-Reset", "1700000030")], "");
        assert_eq!(
            a,
            Answer::RateLimited {
                wait: Duration::from_secs(30)
            }
        );
        let (a, _) = answer(429, &[], "");
        assert_eq!(
            a,
            Answer::RateLimited {
                wait: Duration::from_secs(60)
            }
        );
    }

    #[test]
    fn server_errors_are_retried() {
        let (a, _) = answer(503, &[("Retry-After", "3")], "<html>down</html>");
        assert_eq!(
            a,
            Answer::Retry {
                reason: "impact answered 503: <html>down</html>".into(),
                retry_after: Some(Duration::from_secs(3))
            }
        );
    }

    #[test]
    fn limits_are_read_from_either_header_family() {
        let (_, l) = answer(
            200,
            &[
                ("X-RateLimit-Limit-hour", "1000"),
                ("X-RateLimit-Remaining-hour", "12"),
                ("RateLimit-Reset", "600"),
            ],
            "{}",
        );
        assert_eq!(
            l,
            Limits {
                limit: Some(1000),
                remaining: Some(12),
                reset: Some(Duration::from_secs(600))
            }
        );
        let (_, l) = answer(200, &[("X-RateLimit-Remaining", "5")], "{}");
        assert_eq!(l.remaining, Some(5));
    }

    #[test]
    fn long_bodies_are_quoted_short() {
        let big = "x".repeat(10_000);
        let (a, _) = answer(418, &[], &big);
        let Answer::Rejected { reasons } = a else {
            panic!()
        };
        assert!(reasons[0].chars().count() < 400);
    }
}
