//! Reporting: what `status`, the run report and `/metrics` read from the ledger, and pruning.

use std::collections::BTreeMap;

use rusqlite::{params, TransactionBehavior};

use super::*;
use crate::state::RowState;

/// Everything `status` and the run report say about one file.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct FileStats {
    pub id: i64,
    pub path: String,
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate_of: Option<i64>,
    pub rows: u64,
    pub skipped_lines: u64,
    pub invalid_orders: u64,
    /// Rows by what became of them (`rows_<state>` in JSON); they add up to `rows` for a
    /// finished file.
    #[serde(flatten)]
    pub by_state: RowCounts,
    /// Distinct conversions of this file by state (`conversions_<state>` in JSON).
    #[serde(flatten)]
    pub conversions: ConvCounts,
    /// Rows whose line details were pruned (older than `keep_days`): accounted for, no
    /// longer itemised.
    #[serde(rename = "rows_pruned")]
    pub pruned_rows: u64,
    pub first_seen: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archived_to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejects_path: Option<String>,
    /// What impact did with this file's accepted conversions, as follow-ups found.
    pub at_impact: super::FollowCounts,
    /// The file's rows that failed at impact, with the reason (rejects format).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_at_impact_path: Option<String>,
}

/// Rows counted by [`RowState`]; every state is present (0 when none).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RowCounts(BTreeMap<RowState, u64>);

impl RowCounts {
    pub fn get(&self, s: RowState) -> u64 {
        self.0.get(&s).copied().unwrap_or(0)
    }

    pub fn add(&mut self, s: RowState, n: u64) {
        *self.0.entry(s).or_default() += n;
    }

    /// `(state, count)` for every state with rows, in report order.
    pub fn nonzero(&self) -> impl Iterator<Item = (RowState, u64)> + '_ {
        RowState::all()
            .map(|s| (s, self.get(s)))
            .filter(|(_, n)| *n > 0)
    }

    /// Rows with a recorded outcome.
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// Rows left for the operator or the next run.
    pub fn needing_attention(&self) -> u64 {
        self.nonzero()
            .filter(|(s, _)| s.needs_operator())
            .map(|(_, n)| n)
            .sum()
    }
}

impl serde::Serialize for RowCounts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        for state in RowState::all() {
            map.serialize_entry(&format!("rows_{}", state.name()), &self.get(state))?;
        }
        map.end()
    }
}

/// Distinct conversions counted by state; JSON `conversions_<state>` for every state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConvCounts(BTreeMap<ConvState, u64>);

impl ConvCounts {
    pub fn get(&self, s: ConvState) -> u64 {
        self.0.get(&s).copied().unwrap_or(0)
    }

    pub fn add(&mut self, s: ConvState, n: u64) {
        *self.0.entry(s).or_default() += n;
    }
}

impl serde::Serialize for ConvCounts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        for c in ConvState::ALL {
            map.serialize_entry(&format!("conversions_{}", c.sql()), &self.get(*c))?;
        }
        map.end()
    }
}

impl FileStats {
    /// Rows with a recorded outcome.
    pub fn accounted(&self) -> u64 {
        self.by_state.total() + self.pruned_rows
    }
}

/// What pruning did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pruned {
    /// Line records and conversion bodies removed.
    Done { lines: u64, bodies: u64 },
    /// Nothing pruned: every record is older than `keep_days`, so the clock looks wrong.
    Refused { newest: String, now: String },
}

/// A row that was not sent, with why: invalid, filtered, changed after it was sent.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct NotSent {
    pub file: String,
    pub line: u64,
    pub outcome: String,
    pub reason: String,
    /// The later file its order was accepted from (the row was fixed), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixed_by: Option<String>,
}

/// A replay, as `send --replay` recorded it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Replay {
    pub at: String,
    pub user: String,
    pub file: String,
    pub resend_accepted: bool,
    /// Conversions it queued.
    pub queued: u64,
}

/// A recent error, for `status`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RecentError {
    pub order_id: String,
    pub state: String,
    pub error: String,
    pub at: String,
}

impl Ledger {
    /// Per-file statistics: one file, or all files (newest first, at most `limit`).
    pub fn file_stats(&self, file_id: Option<i64>, limit: usize) -> Result<Vec<FileStats>> {
        let read = sql(&self.path, "read file statistics");
        let mut files = self
            .conn
            .prepare_cached(
                "SELECT id, path, state, duplicate_of, rows, skipped_lines, invalid_orders,
                    first_seen, finished_at, archived_to, rejects_path, pruned_rows, failed_path
                 FROM files WHERE ?1 IS NULL OR id = ?1 ORDER BY id DESC LIMIT ?2",
            )
            .map_err(&read)?;
        let mut out: Vec<FileStats> = files
            .query_map(params![file_id, limit as i64], |r| {
                let n = |c: &str| r.get::<_, i64>(c).map(|v| v.max(0) as u64);
                let state: FileState = state(r, "state")?;
                Ok(FileStats {
                    id: r.get("id")?,
                    path: r.get("path")?,
                    state: state.sql().to_owned(),
                    duplicate_of: r.get("duplicate_of")?,
                    rows: n("rows")?,
                    skipped_lines: n("skipped_lines")?,
                    invalid_orders: n("invalid_orders")?,
                    first_seen: r.get("first_seen")?,
                    finished_at: r.get("finished_at")?,
                    archived_to: r.get("archived_to")?,
                    rejects_path: r.get("rejects_path")?,
                    pruned_rows: n("pruned_rows")?,
                    failed_at_impact_path: r.get("failed_path")?,
                    ..FileStats::default()
                })
            })
            .map_err(&read)?
            .collect::<std::result::Result<_, _>>()
            .map_err(&read)?;
        let mut counts = self
            .conn
            .prepare_cached(
                "SELECT l.outcome AS outcome, c.state AS conv_state, COUNT(*) AS lines,
                    COUNT(DISTINCT c.id) AS conversions
                 FROM lines l LEFT JOIN conversions c ON c.id = l.conversion_id
                 WHERE l.file_id = ?1 GROUP BY l.outcome, c.state",
            )
            .map_err(&read)?;
        for f in &mut out {
            f.at_impact = self.follow_counts(Some(f.id))?;
            let rows = counts
                .query_map([f.id], |r| {
                    let outcome: LineOutcome = state(r, "outcome")?;
                    let conv = match r.get::<_, Option<String>>("conv_state")? {
                        Some(_) => Some(state::<ConvState>(r, "conv_state")?),
                        None => None,
                    };
                    let n = |c: &str| r.get::<_, i64>(c).map(|v| v.max(0) as u64);
                    Ok((outcome, conv, n("lines")?, n("conversions")?))
                })
                .map_err(&read)?;
            for row in rows {
                let (outcome, conv, lines, conversions) = row.map_err(&read)?;
                f.by_state.add(RowState::of(outcome, conv), lines);
                if let (LineOutcome::Sent, Some(c)) = (outcome, conv) {
                    f.conversions.add(c, conversions);
                }
            }
        }
        Ok(out)
    }

    /// How many files, conversions or lines are in each state (states with none left out),
    /// from the tallies the ledger keeps as rows change: a few rows read, never a scan.
    pub fn counts_by_state<S: StateName>(&self) -> Result<Vec<(S, u64)>> {
        let read = sql(&self.path, "count by state");
        let mut stmt = self
            .conn
            .prepare_cached("SELECT state, n FROM tallies WHERE tbl = ?1 AND n > 0")
            .map_err(&read)?;
        let found: Vec<(S, u64)> = stmt
            .query_map([S::COLUMN.0], |r| {
                Ok((state::<S>(r, "state")?, r.get::<_, i64>("n")? as u64))
            })
            .map_err(&read)?
            .collect::<std::result::Result<_, _>>()
            .map_err(&read)?;
        Ok(S::ALL
            .iter()
            .filter_map(|s| found.iter().find(|(f, _)| f == s).copied())
            .collect())
    }

    /// How many rows of a table are in one state (from the tallies).
    fn tally<S: StateName>(&self, s: S) -> Result<u64> {
        Ok(self
            .counts_by_state::<S>()?
            .into_iter()
            .find(|(f, _)| *f == s)
            .map_or(0, |(_, n)| n))
    }

    /// Prunes what is older than `keep_days` and no longer needed: the line details of
    /// finished files and the bodies of final conversions. A conversion's key, payload hash
    /// and state are never pruned: an accepted order is never forgotten, so it can never be
    /// paid twice, however late it comes again. File records stay too (their hashes keep an
    /// ancient export recognised). Refuses when the clock looks wrong: when every record
    /// would be older than `keep_days` (a clock far ahead), nothing is pruned.
    pub fn prune(&mut self, keep_days: u32) -> Result<Pruned> {
        let now = chrono::Utc::now();
        let cutoff = time_text(now - chrono::Duration::days(i64::from(keep_days)));
        let path = self.path.clone();
        let newest: Option<String> = self
            .conn
            .query_row(
                "SELECT MAX(t) FROM (
                    SELECT MAX(updated_at) AS t FROM conversions
                    UNION ALL SELECT MAX(COALESCE(finished_at, first_seen)) FROM files)",
                [],
                |r| r.get(0),
            )
            .map_err(sql(&path, "read the newest record"))?;
        let Some(newest) = newest else {
            return Ok(Pruned::Done {
                lines: 0,
                bodies: 0,
            });
        };
        if newest < cutoff {
            return Ok(Pruned::Refused {
                newest,
                now: time_text(now),
            });
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(&path, "begin"))?;
        const OLD_LINES: &str = "file_id IN
                (SELECT id FROM files WHERE state != 'processing'
                   AND COALESCE(finished_at, first_seen) < ?1)
             AND (conversion_id IS NULL OR conversion_id NOT IN
                (SELECT id FROM conversions WHERE state = 'pending'))";
        tx.execute(
            &format!(
                "UPDATE files SET pruned_rows = pruned_rows +
                    (SELECT COUNT(*) FROM lines WHERE lines.file_id = files.id AND {})
                 WHERE id IN (SELECT DISTINCT file_id FROM lines WHERE {})",
                OLD_LINES.replace("file_id IN", "lines.file_id IN"),
                OLD_LINES
            ),
            [&cutoff],
        )
        .map_err(sql(&path, "count pruned rows"))?;
        let lines = tx
            .execute(&format!("DELETE FROM lines WHERE {OLD_LINES}"), [&cutoff])
            .map_err(sql(&path, "prune lines"))?;
        let bodies = tx
            .execute(
                "DELETE FROM bodies WHERE conversion_id IN (SELECT id FROM conversions
                    WHERE state != 'pending' AND updated_at < ?1)",
                [&cutoff],
            )
            .map_err(sql(&path, "prune bodies"))?;
        tx.commit().map_err(sql(&path, "commit pruning"))?;
        Ok(Pruned::Done {
            lines: lines as u64,
            bodies: bodies as u64,
        })
    }

    /// Rows recorded with this outcome (e.g. `invalid`), across all files.
    pub fn count_lines(&self, outcome: LineOutcome) -> Result<u64> {
        self.tally(outcome)
    }

    /// How many conversions are pending.
    pub fn pending_count(&self) -> Result<u64> {
        self.tally(ConvState::Pending)
    }

    /// When the oldest pending conversion was recorded.
    pub fn oldest_pending(&self) -> Result<Option<String>> {
        self.conn
            .query_row(
                // The partial index of pending conversions, named: the planner would otherwise
                // walk every pending row through `conversions_due`.
                "SELECT MIN(created_at) FROM conversions INDEXED BY conversions_pending_since
                 WHERE state = 'pending'",
                [],
                |r| r.get(0),
            )
            .map_err(sql(&self.path, "find the oldest pending conversion"))
    }

    /// The most recent errors (rejections and retry reasons).
    pub fn recent_errors(&self, limit: usize) -> Result<Vec<RecentError>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT order_id, state, last_error, updated_at FROM conversions
                 WHERE last_error IS NOT NULL ORDER BY updated_at DESC LIMIT ?1",
            )
            .map_err(sql(&self.path, "list recent errors"))?;
        let rows = stmt
            .query_map([limit as i64], |r| {
                let state: ConvState = state(r, "state")?;
                Ok(RecentError {
                    order_id: r.get("order_id")?,
                    state: state.sql().to_owned(),
                    error: r.get("last_error")?,
                    at: r.get("updated_at")?,
                })
            })
            .map_err(sql(&self.path, "list recent errors"))?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(sql(&self.path, "list recent errors"))
    }

    /// The latest rows that were not sent for a reason of their own (invalid, filtered,
    /// changed after sent, rejected before), newest files first.
    pub fn not_sent(&self, limit: usize) -> Result<Vec<NotSent>> {
        let listed: Vec<String> = LineOutcome::ALL
            .iter()
            .filter(|o| o.listed_as_not_sent())
            .map(|o| format!("'{}'", o.sql()))
            .collect();
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT f.path AS file, l.line AS line, l.outcome AS outcome,
                    COALESCE(l.reason, '') AS reason,
                    (SELECT later.path FROM conversions c INDEXED BY conversions_accepted_by_order
                       JOIN files later ON later.id = c.file_id
                     WHERE l.order_id IS NOT NULL AND c.order_id = l.order_id
                       AND c.state = 'accepted' AND c.file_id > l.file_id
                     ORDER BY c.file_id LIMIT 1) AS fixed_by
                 FROM lines l JOIN files f ON f.id = l.file_id
                 WHERE f.state != 'superseded' AND l.outcome IN ({})
                 ORDER BY l.file_id DESC, l.line LIMIT ?1",
                listed.join(", ")
            ))
            .map_err(sql(&self.path, "list rows not sent"))?;
        let rows = stmt
            .query_map([limit as i64], |r| {
                let outcome: LineOutcome = state(r, "outcome")?;
                Ok(NotSent {
                    file: r.get("file")?,
                    line: r.get::<_, i64>("line")? as u64,
                    outcome: outcome.sql().to_owned(),
                    reason: r.get("reason")?,
                    fixed_by: r.get("fixed_by")?,
                })
            })
            .map_err(sql(&self.path, "list rows not sent"))?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(sql(&self.path, "list rows not sent"))
    }

    /// The latest replays, newest first.
    pub fn replays(&self, limit: usize) -> Result<Vec<Replay>> {
        let read = sql(&self.path, "list replays");
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT r.at AS at, r.user AS user, f.path AS file,
                    r.resend_accepted AS resend, r.queued AS queued
                 FROM replays r JOIN files f ON f.id = r.file_id
                 ORDER BY r.id DESC LIMIT ?1",
            )
            .map_err(&read)?;
        let rows = stmt
            .query_map([limit as i64], |r| {
                Ok(Replay {
                    at: r.get("at")?,
                    user: r.get("user")?,
                    file: r.get("file")?,
                    resend_accepted: r.get::<_, i64>("resend")? != 0,
                    queued: r.get::<_, i64>("queued")?.max(0) as u64,
                })
            })
            .map_err(&read)?;
        rows.collect::<std::result::Result<_, _>>().map_err(&read)
    }

    /// Bytes on disk: the database and its write-ahead log.
    pub fn size_on_disk(&self) -> u64 {
        let mut wal = self.path.as_os_str().to_owned();
        wal.push("-wal");
        [self.path.clone(), PathBuf::from(wal)]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }
}
