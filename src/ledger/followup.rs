//! Follow-ups: what became of each accepted conversion at impact (`followups`), the facts
//! kept about the account (`meta`), and the counts `status` and `/metrics` read.

use std::collections::BTreeMap;

use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::*;

/// The `meta` key of the last fatal condition.
const LAST_FATAL: &str = "last_fatal";

/// An accepted conversion whose outcome at impact is due to be asked.
#[derive(Clone, Debug)]
pub struct FollowDue {
    pub id: i64,
    pub order_id: String,
    pub file_id: i64,
    pub queued_uri: String,
    pub polls: u32,
    /// Handed to a sender more often than impact's answers were recorded, or answered
    /// uncertainly: a copy may have reached impact before the one accepted.
    pub maybe_sent_before: bool,
}

/// What one follow-up found, to record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FollowUpdate {
    pub id: i64,
    pub state: FollowState,
    /// When to ask again (for `Waiting`).
    pub next_at: Option<String>,
    /// impact's `Status`, or why there is none.
    pub impact_status: Option<String>,
    /// `(ErrorType, ErrorReason)`.
    pub error: Option<(String, String)>,
    pub completed_at: Option<String>,
    /// Whether impact was asked (counts a poll).
    pub asked: bool,
}

/// Follow-up outcomes, by state and (for failures) by impact's `ErrorReason`. JSON: each
/// state's name with its count (every state, 0 when none), and `failed_by_reason`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FollowCounts {
    by_state: BTreeMap<FollowState, u64>,
    /// `ErrorReason` → conversions that failed with it.
    pub failed_by_reason: BTreeMap<String, u64>,
}

impl FollowCounts {
    fn add(&mut self, state: FollowState, n: u64) {
        *self.by_state.entry(state).or_default() += n;
    }

    pub fn get(&self, state: FollowState) -> u64 {
        self.by_state.get(&state).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.by_state.values().sum()
    }
}

impl serde::Serialize for FollowCounts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        for state in FollowState::ALL {
            map.serialize_entry(state.sql(), &self.get(*state))?;
        }
        map.serialize_entry("failed_by_reason", &self.failed_by_reason)?;
        map.end()
    }
}

impl Ledger {
    /// From now on, accepted conversions are followed up, first asked `first_after` their
    /// acceptance; `None`: not followed.
    pub fn set_follow_up(&mut self, first_after: Option<std::time::Duration>) {
        self.follow_up = first_after.and_then(|d| chrono::Duration::from_std(d).ok());
    }

    /// Follow-ups due at `now`, earliest first.
    pub fn due_followups(&self, now: &str, limit: usize) -> Result<Vec<FollowDue>> {
        let read = sql(&self.path, "list follow-ups due");
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT c.id AS id, c.order_id AS order_id, f.file_id AS file_id,
                    COALESCE(c.queued_uri, '') AS queued_uri, f.polls AS polls,
                    (c.dispatches > c.attempts OR c.uncertain > 0) AS before
                 FROM followups f INDEXED BY followups_due
                 JOIN conversions c ON c.id = f.conversion_id
                 WHERE f.state = 'waiting' AND f.next_at <= ?1
                 ORDER BY f.next_at LIMIT ?2",
            )
            .map_err(&read)?;
        let rows = stmt
            .query_map(params![now, limit as i64], |r| {
                Ok(FollowDue {
                    id: r.get("id")?,
                    order_id: r.get("order_id")?,
                    file_id: r.get("file_id")?,
                    queued_uri: r.get("queued_uri")?,
                    polls: r.get::<_, i64>("polls")?.max(0) as u32,
                    maybe_sent_before: r.get("before")?,
                })
            })
            .map_err(&read)?;
        rows.collect::<std::result::Result<_, _>>().map_err(&read)
    }

    /// When the next waiting follow-up is due, if any is waiting.
    pub fn next_followup(&self) -> Result<Option<String>> {
        self.conn
            .query_row(
                "SELECT MIN(next_at) FROM followups INDEXED BY followups_due
                 WHERE state = 'waiting'",
                [],
                |r| r.get(0),
            )
            .map_err(sql(&self.path, "find the next follow-up"))
    }

    /// Records what follow-ups found, in one transaction; returns the files that got a new
    /// failure.
    pub fn record_followups(&mut self, updates: &[FollowUpdate]) -> Result<Vec<i64>> {
        let path = self.path.clone();
        let now = now_text();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(&path, "begin"))?;
        let mut files = Vec::new();
        {
            let mut update = tx
                .prepare_cached(
                    "UPDATE followups SET state = ?2, next_at = ?3,
                        impact_status = COALESCE(?4, impact_status), error_type = ?5,
                        error_reason = ?6, completed_at = ?7, polls = polls + ?8,
                        updated_at = ?9
                     WHERE conversion_id = ?1 AND state = 'waiting'
                     RETURNING file_id",
                )
                .map_err(sql(&path, "record follow-ups"))?;
            for u in updates {
                let file: Option<i64> = update
                    .query_row(
                        params![
                            u.id,
                            u.state.sql(),
                            u.next_at,
                            u.impact_status,
                            u.error.as_ref().map(|e| &e.0),
                            u.error.as_ref().map(|e| &e.1),
                            u.completed_at,
                            i64::from(u.asked),
                            now
                        ],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(sql(&path, "record follow-ups"))?;
                if let (Some(f), FollowState::Failed) = (file, u.state) {
                    if !files.contains(&f) {
                        files.push(f);
                    }
                }
            }
        }
        tx.commit().map_err(sql(&path, "commit follow-ups"))?;
        Ok(files)
    }

    /// Waiting follow-ups of conversions accepted before `cutoff` end `unknown` (no question
    /// needed); returns how many.
    pub fn expire_followups(&mut self, cutoff: &str, why: &str) -> Result<u64> {
        self.conn
            .execute(
                "UPDATE followups SET state = 'unknown', next_at = NULL, impact_status = ?2,
                    updated_at = ?3
                 WHERE state = 'waiting' AND (SELECT COALESCE(c.accepted_at, c.updated_at)
                    FROM conversions c WHERE c.id = followups.conversion_id) < ?1",
                params![cutoff, why, now_text()],
            )
            .map(|n| n as u64)
            .map_err(sql(&self.path, "give up old follow-ups"))
    }

    /// Every waiting follow-up becomes `unavailable` (impact offers none to this account).
    pub fn followups_unavailable(&mut self) -> Result<u64> {
        self.conn
            .execute(
                "UPDATE followups SET state = 'unavailable', next_at = NULL, updated_at = ?1
                 WHERE state = 'waiting'",
                [now_text()],
            )
            .map(|n| n as u64)
            .map_err(sql(&self.path, "record follow-ups unavailable"))
    }

    /// A fact kept about the account (`followup.partner` …).
    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(sql(&self.path, "read a fact"))
    }

    pub fn clear_meta(&mut self, key: &str) -> Result<()> {
        self.conn
            .execute("DELETE FROM meta WHERE key = ?1", [key])
            .map(|_| ())
            .map_err(sql(&self.path, "clear a fact"))
    }

    /// Records the fatal condition that stopped sending (`None`: sending works again), for
    /// `status`.
    pub fn set_last_fatal(&mut self, message: Option<&str>) -> Result<()> {
        match message {
            Some(m) => self.set_meta(LAST_FATAL, &format!("{}\t{m}", now_text())),
            None => self.clear_meta(LAST_FATAL),
        }
    }

    /// `(when, message)` of the fatal condition that stopped sending last, if it still holds.
    pub fn last_fatal(&self) -> Result<Option<(String, String)>> {
        Ok(self.meta(LAST_FATAL)?.and_then(|v| {
            let (at, m) = v.split_once('\t')?;
            Some((at.to_owned(), m.to_owned()))
        }))
    }

    pub fn set_meta(&mut self, key: &str, value: &str) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [key, value],
            )
            .map(|_| ())
            .map_err(sql(&self.path, "record a fact"))
    }

    /// Follow-up outcomes of one file, or of all (from the tallies, plus the failures by
    /// reason from their own index).
    pub fn follow_counts(&self, file_id: Option<i64>) -> Result<FollowCounts> {
        let read = sql(&self.path, "count follow-ups");
        let mut out = FollowCounts::default();
        match file_id {
            None => {
                for (s, n) in self.counts_by_state::<FollowState>()? {
                    out.add(s, n);
                }
            }
            Some(id) => {
                let mut stmt = self
                    .conn
                    .prepare_cached(
                        "SELECT state, COUNT(*) AS n FROM followups WHERE file_id = ?1
                         GROUP BY state",
                    )
                    .map_err(&read)?;
                let rows = stmt
                    .query_map([id], |r| {
                        Ok((state::<FollowState>(r, "state")?, r.get::<_, i64>("n")?))
                    })
                    .map_err(&read)?;
                for row in rows {
                    let (s, n) = row.map_err(&read)?;
                    out.add(s, n.max(0) as u64);
                }
            }
        }
        if out.get(FollowState::Failed) > 0 {
            let mut stmt = self
                .conn
                .prepare_cached(
                    "SELECT COALESCE(NULLIF(error_reason, ''), error_type, '') AS reason,
                        COUNT(*) AS n
                     FROM followups INDEXED BY followups_failed
                     WHERE state = 'failed' AND (?1 IS NULL OR file_id = ?1)
                     GROUP BY reason",
                )
                .map_err(&read)?;
            let rows = stmt
                .query_map([file_id], |r| {
                    Ok((r.get::<_, String>("reason")?, r.get::<_, i64>("n")?))
                })
                .map_err(&read)?;
            for row in rows {
                let (reason, n) = row.map_err(&read)?;
                out.failed_by_reason.insert(reason, n.max(0) as u64);
            }
        }
        Ok(out)
    }

    /// The lines of a file whose conversions failed at impact, with the reason, for its
    /// `.failed-at-impact` file.
    pub fn failed_at_impact_lines(&self, file_id: i64) -> Result<Vec<(u64, String)>> {
        let read = sql(&self.path, "list rows failed at impact");
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT l.line AS line, 'failed at impact: ' ||
                    COALESCE(NULLIF(f.error_type, ''), 'error') || ': ' ||
                    COALESCE(f.error_reason, '') AS reason
                 FROM followups f JOIN lines l
                   ON l.conversion_id = f.conversion_id AND l.file_id = f.file_id
                 WHERE f.file_id = ?1 AND f.state = 'failed' AND l.outcome = 'sent'
                 ORDER BY l.line",
            )
            .map_err(&read)?;
        let rows = stmt
            .query_map([file_id], |r| {
                Ok((r.get::<_, i64>("line")?.max(0) as u64, r.get("reason")?))
            })
            .map_err(&read)?;
        rows.collect::<std::result::Result<_, _>>().map_err(&read)
    }

    /// Where a file is now (`archived_to`, or its path) and where its failed-at-impact file
    /// was written, with its content hash and state.
    pub fn file_places(&self, file_id: i64) -> Result<Option<FilePlaces>> {
        self.conn
            .query_row(
                "SELECT path, archived_to, failed_path, content_hash, state FROM files
                 WHERE id = ?1",
                [file_id],
                |r| {
                    Ok(FilePlaces {
                        path: r.get("path")?,
                        archived_to: r.get("archived_to")?,
                        failed_path: r.get("failed_path")?,
                        content_hash: r.get("content_hash")?,
                        state: state(r, "state")?,
                    })
                },
            )
            .optional()
            .map_err(sql(&self.path, "read a file's places"))
    }

    pub fn set_failed_path(&mut self, file_id: i64, failed: &str) -> Result<()> {
        self.conn
            .execute(
                "UPDATE files SET failed_path = ?2 WHERE id = ?1",
                params![file_id, failed],
            )
            .map(|_| ())
            .map_err(sql(&self.path, "record a failed-at-impact file"))
    }
}

/// Where a file's content can be read again.
#[derive(Clone, Debug)]
pub struct FilePlaces {
    pub path: String,
    pub archived_to: Option<String>,
    pub failed_path: Option<String>,
    pub content_hash: String,
    pub state: FileState,
}
