//! Pacing and backoff: spread a backlog under impact's hourly limit instead of running into
//! 429s, wait as a 429 says, and retry failures with capped exponential backoff and jitter.
//!
//! The pacer is a token bucket (GCRA) on tokio's clock, so tests control time with
//! `tokio::time::pause`. The configured `requests_per_hour` sets the base rate with a small
//! burst. The `X-RateLimit-Remaining*` and reset headers slow it further when the account's
//! real budget is tighter (other tools share it). A 429 pauses every sender.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use super::response::Limits;

pub struct Pacer {
    state: Mutex<State>,
    /// Senders waiting for a slot right now: while any does, follow-ups get none.
    senders: AtomicUsize,
}

/// How often a follow-up looks again while senders wait.
const SPARE_RECHECK: Duration = Duration::from_millis(250);

/// Counts a sender as waiting for as long as it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

struct State {
    /// Base spacing between requests; `None` when pacing is off.
    base: Option<Duration>,
    /// Spacing the headers ask for, while their window lasts.
    tight: Option<(Duration, Instant)>,
    /// How many requests may go at once after a quiet spell.
    burst: u32,
    /// The theoretical arrival time of the next request (GCRA).
    tat: Instant,
    paused_until: Option<Instant>,
    /// The last rate-limit headers seen: `(remaining, limit)` in the current window.
    last_limits: Option<(u64, Option<u64>)>,
    requests_per_hour: u32,
}

impl Pacer {
    /// `requests_per_hour = 0` turns pacing off (for a local sandbox).
    pub fn new(requests_per_hour: u32) -> Pacer {
        let burst = (requests_per_hour / 100).clamp(1, 20);
        // The burst comes out of the hour's budget: `burst` at once, then one per interval,
        // so no hour (sliding) ever holds more than `requests_per_hour` requests. The
        // interval is rounded up to the nanosecond so rounding never adds one.
        let base = (requests_per_hour > 0).then(|| {
            let slots = u64::from(requests_per_hour.saturating_sub(burst) + 1);
            Duration::from_nanos(3_600_000_000_000u64.div_ceil(slots))
        });
        Pacer {
            state: Mutex::new(State {
                base,
                tight: None,
                burst,
                tat: Instant::now(),
                paused_until: None,
                last_limits: None,
                requests_per_hour,
            }),
            senders: AtomicUsize::new(0),
        }
    }

    /// How long `pending` requests take at the current budget, and the words to say so
    /// (`None` when pacing is off).
    pub fn eta(&self, pending: u64) -> Option<(Duration, String)> {
        let s = self.state.lock().ok()?;
        let eta = backlog_eta(pending, s.requests_per_hour)?;
        let mut text = format!(
            "{pending} pending: about {} at {} requests/hour",
            human_duration(eta),
            grouped(u64::from(s.requests_per_hour))
        );
        if let Some((remaining, _)) = s.last_limits {
            text.push_str(&format!(
                "; impact's headers say {} left this hour",
                grouped(remaining)
            ));
        }
        Some((eta, text))
    }

    /// Waits for this request's slot.
    pub async fn wait(&self) {
        self.senders.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.senders);
        let slot = {
            let Ok(mut s) = self.state.lock() else {
                return;
            };
            let now = Instant::now();
            let mut earliest = now;
            if let Some(p) = s.paused_until {
                if p > now {
                    earliest = p;
                } else {
                    s.paused_until = None;
                }
            }
            let interval = s.interval(now);
            match interval {
                None => earliest,
                Some(interval) => {
                    let tat = s.tat.max(earliest);
                    let allowance = interval * s.burst.saturating_sub(1);
                    let slot = earliest.max(tat.checked_sub(allowance).unwrap_or(earliest));
                    s.tat = tat + interval;
                    slot
                }
            }
        };
        // A slot that is already here goes at once: a timer rounds up to the next
        // millisecond tick, which cost every request about a millisecond.
        if slot > Instant::now() {
            tokio::time::sleep_until(slot).await;
        }
    }

    /// Waits for a slot that sending leaves, for a follow-up: never while a sender waits
    /// for one, and only when the whole burst is there (the bucket full), taking one slot of
    /// it. So follow-ups go at most at the base rate while nothing is sent, a send that comes
    /// meanwhile still finds the rest of the burst, and a backlog of sends keeps its rate.
    pub async fn wait_spare(&self) {
        loop {
            let wait = {
                let Ok(mut s) = self.state.lock() else {
                    return;
                };
                let now = Instant::now();
                match s.paused_until {
                    Some(p) if p > now => p - now,
                    _ if self.senders.load(Ordering::SeqCst) > 0 => SPARE_RECHECK,
                    _ => match s.interval(now) {
                        None => return,
                        Some(interval) if s.tat <= now => {
                            s.tat = now + interval;
                            return;
                        }
                        Some(_) => s.tat - now,
                    },
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Every sender waits until `until` (a 429, or the hourly budget spent).
    pub fn pause_until(&self, until: Instant) {
        if let Ok(mut s) = self.state.lock() {
            s.paused_until = Some(s.paused_until.map_or(until, |p| p.max(until)));
        }
    }

    /// Adapts to the rate-limit headers of an answer.
    pub fn observe(&self, limits: Limits) {
        if let (Some(remaining), Ok(mut s)) = (limits.remaining, self.state.lock()) {
            s.last_limits = Some((remaining, limits.limit));
        }
        let (Some(remaining), Some(reset)) = (limits.remaining, limits.reset) else {
            return;
        };
        let now = Instant::now();
        if remaining == 0 {
            self.pause_until(now + reset);
            return;
        }
        if let Ok(mut s) = self.state.lock() {
            let spacing = reset / u32::try_from(remaining).unwrap_or(u32::MAX);
            s.tight = Some((spacing, now + reset));
        }
    }
}

impl State {
    fn interval(&mut self, now: Instant) -> Option<Duration> {
        if let Some((_, until)) = self.tight {
            if until <= now {
                self.tight = None;
            }
        }
        match (self.base, self.tight) {
            (Some(b), Some((t, _))) => Some(b.max(t)),
            (b, t) => b.or(t.map(|(t, _)| t)),
        }
    }
}

/// How long a backlog of `pending` requests takes at `per_hour` (`None`: pacing off).
pub fn backlog_eta(pending: u64, per_hour: u32) -> Option<Duration> {
    (per_hour > 0).then(|| Duration::from_secs(pending.saturating_mul(3600) / u64::from(per_hour)))
}

/// A duration rounded for people: "40 s", "29 min", "3.5 h", "2 days".
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s} s"),
        60..=5_399 => format!("{} min", (s + 30) / 60),
        5_400..=172_799 => {
            let tenths = (s * 10 + 1_800) / 3_600;
            if tenths.is_multiple_of(10) {
                format!("{} h", tenths / 10)
            } else {
                format!("{}.{} h", tenths / 10, tenths % 10)
            }
        }
        _ => format!("{} days", (s + 43_200) / 86_400),
    }
}

/// `1000` → `1,000`.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// How long to wait before retry number `attempts` (1-based): 1 s doubling to `cap`, with
/// jitter in [50 %, 100 %] so many failed conversions do not retry in lockstep.
pub fn backoff(attempts: u32, cap: Duration) -> Duration {
    let exp = Duration::from_secs(1)
        .checked_mul(1u32 << attempts.saturating_sub(1).min(20))
        .unwrap_or(cap)
        .min(cap);
    let factor = rand::thread_rng().gen_range(0.5..=1.0);
    exp.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn backlogs_are_told_in_time_people_read() {
        // The case: 480 pending under the default 1,000 requests an hour.
        let eta = backlog_eta(480, 1000).unwrap();
        assert_eq!(eta, Duration::from_secs(1728));
        assert_eq!(human_duration(eta), "29 min");
        assert_eq!(human_duration(Duration::from_secs(40)), "40 s");
        assert_eq!(
            human_duration(Duration::from_secs(3 * 3600 + 1800)),
            "3.5 h"
        );
        assert_eq!(human_duration(Duration::from_secs(10 * 3600)), "10 h");
        assert_eq!(human_duration(Duration::from_secs(5 * 86_400)), "5 days");
        assert_eq!(backlog_eta(480, 0), None);
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1234567), "1,234,567");
        assert_eq!(grouped(940), "940");
    }

    #[tokio::test(start_paused = true)]
    async fn the_eta_names_the_budget_and_what_the_headers_say() {
        let p = Pacer::new(1000);
        assert_eq!(
            p.eta(480).unwrap().1,
            "480 pending: about 29 min at 1,000 requests/hour"
        );
        p.observe(Limits {
            limit: Some(1000),
            remaining: Some(940),
            reset: Some(Duration::from_secs(3000)),
        });
        assert_eq!(
            p.eta(480).unwrap().1,
            "480 pending: about 29 min at 1,000 requests/hour; impact's headers say 940 left this hour"
        );
        assert!(Pacer::new(0).eta(480).is_none());
    }

    /// Over one hour of controlled time, the pacer uses at least 95 % of the budget and
    /// never more than it (so impact never answers 429 for the account's own requests).
    #[tokio::test(start_paused = true)]
    async fn an_hour_uses_at_least_95_percent_of_the_budget_and_never_more() {
        let p = Pacer::new(1000);
        let start = Instant::now();
        let mut sent = 0u32;
        let mut in_any_hour_window = std::collections::VecDeque::new();
        while Instant::now() - start < Duration::from_secs(3600) {
            p.wait().await;
            let now = Instant::now();
            if now - start >= Duration::from_secs(3600) {
                break;
            }
            sent += 1;
            in_any_hour_window.push_back(now);
            while in_any_hour_window
                .front()
                .is_some_and(|t| now - *t >= Duration::from_secs(3600))
            {
                in_any_hour_window.pop_front();
            }
            assert!(in_any_hour_window.len() <= 1000, "over budget");
        }
        assert!(sent >= 950, "only {sent} of 1,000 used");
        assert!(sent <= 1000, "{sent} sent in an hour of 1,000");
    }

    async fn times(p: &Pacer, n: usize) -> Vec<u64> {
        let start = Instant::now();
        let mut out = Vec::new();
        for _ in 0..n {
            p.wait().await;
            out.push((Instant::now() - start).as_millis() as u64);
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn requests_are_spread_after_a_small_burst() {
        // 100/h = one every 36 s, no burst.
        let p = Pacer::new(100);
        assert_eq!(times(&p, 3).await, vec![0, 36_000, 72_000]);
        // 1000/h (impact's default): a burst of 10 out of the hour's budget, then one every
        // 3,600 s / 991 ≈ 3.633 s, so the first hour holds 1,000 requests, not 1,010.
        let p = Pacer::new(1000);
        let t = times(&p, 12).await;
        assert_eq!(&t[..10], &[0; 10]);
        assert_eq!(&t[10..], &[3_633, 7_266]);
        // 360_000/h: a burst of 20, then just over 10 ms apart (tokio's clock rounds a
        // sleep up to the millisecond).
        let p = Pacer::new(360_000);
        let t = times(&p, 25).await;
        assert_eq!(&t[..20], &[0; 20]);
        assert_eq!(&t[20..], &[11, 21, 31, 41, 51]);
    }

    #[tokio::test(start_paused = true)]
    async fn off_means_no_waiting_and_a_pause_holds_everyone() {
        let p = Pacer::new(0);
        assert_eq!(times(&p, 3).await, vec![0, 0, 0]);
        p.pause_until(Instant::now() + Duration::from_secs(5));
        assert_eq!(times(&p, 2).await, vec![5000, 5000]);
    }

    #[tokio::test(start_paused = true)]
    async fn headers_slow_the_pace_when_the_budget_is_tight() {
        let p = Pacer::new(0);
        p.observe(Limits {
            limit: Some(1000),
            remaining: Some(10),
            reset: Some(Duration::from_secs(100)),
        });
        assert_eq!(times(&p, 3).await, vec![0, 10_000, 20_000]);
        let p = Pacer::new(0);
        p.observe(Limits {
            limit: Some(1000),
            remaining: Some(0),
            reset: Some(Duration::from_secs(30)),
        });
        assert_eq!(times(&p, 1).await, vec![30_000]);
    }

    /// With sends waiting, a follow-up gets no slot; once they are done, it waits for the
    /// whole burst to come back and takes one slot per interval, so a send arriving then
    /// still finds the rest of the burst at once.
    #[tokio::test(start_paused = true)]
    async fn follow_ups_take_only_the_slots_sending_leaves() {
        // 1,000/h: a burst of 10, then one every ~3.633 s.
        let p = Arc::new(Pacer::new(1000));
        let start = Instant::now();
        let sends = {
            let p = p.clone();
            tokio::spawn(async move {
                let mut at = Vec::new();
                for _ in 0..14 {
                    p.wait().await;
                    at.push((Instant::now() - start).as_millis() as u64);
                }
                at
            })
        };
        tokio::task::yield_now().await;
        let spare = {
            let p = p.clone();
            tokio::spawn(async move {
                p.wait_spare().await;
                (Instant::now() - start).as_millis() as u64
            })
        };
        let sent = sends.await.unwrap();
        // The sends keep the pacer's rate: the burst, then one per interval.
        assert_eq!(&sent[..10], &[0; 10]);
        for (i, at) in sent[10..].iter().enumerate() {
            let expected = 3_600_000.0 / 991.0 * (i + 1) as f64;
            assert!(
                (*at as f64 - expected).abs() <= 1.5,
                "send {} at {at} ms",
                i + 10
            );
        }
        // The follow-up waited for the last send and then for the bucket to fill again
        // (14 slots used: the bucket is full again at 14 × 3.6327 s).
        let got = spare.await.unwrap();
        assert!(
            got >= 14_531,
            "a follow-up went at {got} ms, before the sends were done"
        );
        assert!(
            (50_857..=50_859).contains(&got),
            "a follow-up went at {got} ms"
        );
        // Right after, a send still goes at once (the rest of the burst is there).
        let t = Instant::now();
        p.wait().await;
        assert_eq!(Instant::now(), t);
        // Pacing off: a follow-up goes at once when no sender waits.
        let off = Pacer::new(0);
        let t = Instant::now();
        off.wait_spare().await;
        assert_eq!(Instant::now(), t);
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let cap = Duration::from_secs(300);
        for attempt in 1..12 {
            let full = Duration::from_secs(1u64 << (attempt - 1)).min(cap);
            let b = backoff(attempt, cap);
            assert!(b >= full / 2 && b <= full, "attempt {attempt}: {b:?}");
        }
        assert!(backoff(60, cap) <= cap);
    }
}
