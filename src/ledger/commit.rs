//! The commit protocol: files and plans are recorded before anything is sent; outcomes of
//! POSTs are committed after their answers; finished files are closed.

use std::collections::{HashMap, HashSet};

use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::*;
use crate::model::{ConversionKey, LineHash};

impl Ledger {
    /// The first file recorded with this content (not counting duplicates).
    pub fn file_by_hash(&self, content_hash: &str) -> Result<Option<FileRecord>> {
        self.conn
            .query_row(
                "SELECT id, content_hash, path, state, first_seen, plan_complete FROM files
                 WHERE content_hash = ?1 AND state != 'duplicate' ORDER BY id LIMIT 1",
                [content_hash],
                file_record,
            )
            .optional()
            .map_err(sql(&self.path, "look up a file"))
    }

    pub fn file(&self, id: i64) -> Result<Option<FileRecord>> {
        self.conn
            .query_row(
                "SELECT id, content_hash, path, state, first_seen, plan_complete FROM files WHERE id = ?1",
                [id],
                file_record,
            )
            .optional()
            .map_err(sql(&self.path, "look up a file"))
    }

    /// Files still being processed (their conversions not all final, or not yet archived).
    pub fn open_files(&self) -> Result<Vec<FileRecord>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, content_hash, path, state, first_seen, plan_complete FROM files
                 WHERE state = 'processing' ORDER BY id",
            )
            .map_err(sql(&self.path, "list open files"))?;
        let rows = stmt
            .query_map([], file_record)
            .map_err(sql(&self.path, "list open files"))?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(sql(&self.path, "list open files"))
    }

    /// Records a new file as `processing`.
    pub fn insert_file(
        &mut self,
        content_hash: &str,
        path: &str,
        size: u64,
        mtime: Option<&str>,
    ) -> Result<i64> {
        self.conn
            .execute(
                "INSERT INTO files (content_hash, path, size, mtime, state, first_seen)
                 VALUES (?1, ?2, ?3, ?4, 'processing', ?5)",
                params![content_hash, path, size as i64, mtime, now_text()],
            )
            .map_err(sql(&self.path, "record a file"))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Records a file whose content was seen before: nothing of it is sent.
    pub fn insert_duplicate(
        &mut self,
        content_hash: &str,
        path: &str,
        size: u64,
        of: i64,
    ) -> Result<i64> {
        let now = now_text();
        self.conn
            .execute(
                "INSERT INTO files (content_hash, path, size, state, duplicate_of, first_seen, finished_at)
                 VALUES (?1, ?2, ?3, 'duplicate', ?4, ?5, ?5)",
                params![content_hash, path, size as i64, of, now],
            )
            .map_err(sql(&self.path, "record a duplicate file"))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// What the ledger knows of each key.
    pub fn known(&self, keys: &[&ConversionKey]) -> Result<HashMap<ConversionKey, Known>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, state, payload_hash, file_id FROM conversions
                 WHERE campaign_id = ?1 AND event_field = ?2 AND event_id = ?3 AND order_id = ?4",
            )
            .map_err(sql(&self.path, "look up conversions"))?;
        let mut out = HashMap::new();
        for key in keys {
            let found = stmt
                .query_row(
                    params![key.campaign_id, key.event_field, key.event_id, key.order_id],
                    |r| {
                        Ok(Known {
                            id: r.get("id")?,
                            state: state(r, "state")?,
                            payload_hash: r.get("payload_hash")?,
                            file_id: r.get("file_id")?,
                        })
                    },
                )
                .optional()
                .map_err(sql(&self.path, "look up conversions"))?;
            if let Some(k) = found {
                out.insert((*key).clone(), k);
            }
        }
        Ok(out)
    }

    /// The hashes of every line, in any file, of these conversions.
    pub fn known_lines(&self, conversions: &[i64]) -> Result<HashSet<LineHash>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT hash FROM lines WHERE conversion_id = ?1")
            .map_err(sql(&self.path, "look up lines"))?;
        let mut out = HashSet::new();
        for id in conversions {
            let hashes = stmt
                .query_map([id], |r| r.get::<_, Vec<u8>>(0))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(sql(&self.path, "look up lines"))?;
            for h in hashes {
                if let Ok(h) = <[u8; 16]>::try_from(h.as_slice()) {
                    out.insert(LineHash(h));
                }
            }
        }
        Ok(out)
    }

    /// Records a file's plan in one transaction: conversions become `pending` (new rows, or
    /// existing rows to send again), every line points at its outcome, and the file's counts
    /// are stored. Nothing is POSTed before this commits.
    pub fn record_plan(
        &mut self,
        file: &PlanFile,
        conversions: &[NewConversion],
        lines: &[NewLine],
        counts: &FileCounts,
    ) -> Result<(i64, Vec<i64>)> {
        self.record_plan_part(file, conversions, lines, Some(counts))
    }

    /// Records one part of a file's plan in one transaction, as [`Ledger::record_plan`]
    /// does for a whole one. A new file's first part records the file with its plan not
    /// complete; the last part (the one with `counts`) completes it.
    pub fn record_plan_part(
        &mut self,
        file: &PlanFile,
        conversions: &[NewConversion],
        lines: &[NewLine],
        counts: Option<&FileCounts>,
    ) -> Result<(i64, Vec<i64>)> {
        let path = self.path.clone();
        let now = now_text();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(&path, "begin"))?;
        // The file's record and its plan commit together: a file is either fully planned in
        // the ledger or not there at all (a failed commit, e.g. a full disk, leaves nothing
        // that a later run could mistake for a planned file).
        let file_id = match file {
            PlanFile::Existing(id) => *id,
            PlanFile::New {
                content_hash,
                path: shown,
                size,
                mtime,
            } => {
                tx.execute(
                    "INSERT INTO files (content_hash, path, size, mtime, state, first_seen,
                        plan_complete)
                     VALUES (?1, ?2, ?3, ?4, 'processing', ?5, ?6)",
                    params![
                        content_hash,
                        shown,
                        *size as i64,
                        mtime,
                        now,
                        counts.is_some()
                    ],
                )
                .map_err(sql(&path, "record a file"))?;
                let id = tx.last_insert_rowid();
                // An earlier reading of the same file (a stalled upload, an append, a
                // re-export under the same name) no longer holds open problems.
                tx.execute(
                    "UPDATE files SET state = 'superseded'
                     WHERE path = ?1 AND id < ?2 AND state = 'done'",
                    params![shown, id],
                )
                .map_err(sql(&path, "supersede earlier readings"))?;
                id
            }
        };
        let mut ids = Vec::with_capacity(conversions.len());
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO conversions (campaign_id, event_field, event_id, order_id, state,
                        payload_hash, file_id, created_at, updated_at, next_attempt_at)
                     VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?6, ?7, ?7, ?7)",
                )
                .map_err(sql(&path, "record conversions"))?;
            let mut body = tx
                .prepare_cached(
                    "INSERT INTO bodies (conversion_id, body) VALUES (?1, ?2)
                     ON CONFLICT (conversion_id) DO UPDATE SET body = excluded.body",
                )
                .map_err(sql(&path, "record conversions"))?;
            let mut resend = tx
                .prepare_cached(
                    "UPDATE conversions SET state = 'pending', payload_hash = ?2,
                        file_id = ?3, attempts = 0, last_error = NULL, next_attempt_at = ?4,
                        updated_at = ?4, uncertain = 0
                     WHERE id = ?1",
                )
                .map_err(sql(&path, "record conversions"))?;
            for c in conversions {
                match c.existing {
                    Some(id) => {
                        resend
                            .execute(params![id, c.payload_hash, file_id, now])
                            .and_then(|_| body.execute(params![id, c.body]))
                            .map_err(sql(&path, "record conversions"))?;
                        ids.push(id);
                    }
                    None => {
                        insert
                            .execute(params![
                                c.key.campaign_id,
                                c.key.event_field,
                                c.key.event_id,
                                c.key.order_id,
                                c.payload_hash,
                                file_id,
                                now
                            ])
                            .map_err(sql(&path, "record conversions"))?;
                        let id = tx.last_insert_rowid();
                        body.execute(params![id, c.body])
                            .map_err(sql(&path, "record conversions"))?;
                        ids.push(id);
                    }
                }
            }
            let mut line = tx
                .prepare_cached(
                    // An upsert, not INSERT OR REPLACE: a replacing delete fires no trigger,
                    // and the tallies follow triggers.
                    // A line this file sent keeps `sent` when a replay finds its conversion
                    // already accepted: the file's own account is not rewritten.
                    "INSERT INTO lines (file_id, line, hash, conversion_id, outcome, reason,
                        order_id)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (file_id, line) DO UPDATE SET hash = excluded.hash,
                        conversion_id = excluded.conversion_id,
                        outcome = CASE WHEN lines.outcome = 'sent'
                            AND excluded.outcome = 'already_sent'
                            AND lines.conversion_id IS excluded.conversion_id
                          THEN 'sent' ELSE excluded.outcome END,
                        reason = excluded.reason, order_id = excluded.order_id",
                )
                .map_err(sql(&path, "record lines"))?;
            for l in lines {
                let conv = match l.conversion {
                    Some(ConvRef::Planned(i)) => ids.get(i).copied(),
                    Some(ConvRef::Existing(id)) => Some(id),
                    None => None,
                };
                line.execute(params![
                    file_id,
                    l.line as i64,
                    &l.hash.0[..],
                    conv,
                    l.outcome.as_str(),
                    l.reason,
                    l.order_id
                ])
                .map_err(sql(&path, "record lines"))?;
            }
            if let Some(counts) = counts {
                tx.execute(
                    "UPDATE files SET rows = ?2, skipped_lines = ?3, invalid_orders = ?4,
                        plan_complete = 1
                     WHERE id = ?1",
                    params![
                        file_id,
                        counts.rows as i64,
                        counts.skipped_lines as i64,
                        counts.invalid_orders as i64
                    ],
                )
                .map_err(sql(&path, "record file counts"))?;
            }
        }
        tx.commit().map_err(sql(&path, "commit a file's plan"))?;
        Ok((file_id, ids))
    }

    /// Pending conversions due now, oldest first, not counting those in `exclude`.
    /// Pending conversions due at `now`, and any scheduled after `latest` (a retry time
    /// further out than the retry cap can only come from a clock that was ahead when it was
    /// set: once the clock is corrected, it is released).
    ///
    /// The conversions returned are handed to senders: their `dispatches` count goes up in
    /// the same transaction, before any of them is sent, so after a stop a later
    /// `CONV_DUPLICATE` is known to be impact's dedup of a copy that was in flight.
    pub fn due(
        &mut self,
        now: &str,
        latest: &str,
        limit: usize,
        exclude: &HashSet<i64>,
    ) -> Result<Vec<Due>> {
        let out = self.select_due(now, latest, limit, exclude)?;
        if out.is_empty() {
            return Ok(out);
        }
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(&path, "begin"))?;
        {
            let mut claim = tx
                .prepare_cached("UPDATE conversions SET dispatches = dispatches + 1 WHERE id = ?1")
                .map_err(sql(&path, "hand conversions to senders"))?;
            for d in &out {
                claim
                    .execute([d.id])
                    .map_err(sql(&path, "hand conversions to senders"))?;
            }
        }
        tx.commit()
            .map_err(sql(&path, "hand conversions to senders"))?;
        Ok(out)
    }

    fn select_due(
        &self,
        now: &str,
        latest: &str,
        limit: usize,
        exclude: &HashSet<i64>,
    ) -> Result<Vec<Due>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                // A pending conversion always has its body; were one missing, an empty body
                // goes and impact's refusal says so (never a conversion silently skipped).
                "SELECT c.id AS id, c.order_id AS order_id, COALESCE(b.body, '') AS body,
                        c.attempts AS attempts, c.file_id AS file_id
                 FROM conversions c LEFT JOIN bodies b ON b.conversion_id = c.id
                 WHERE c.state = 'pending'
                   AND (c.next_attempt_at IS NULL OR c.next_attempt_at <= ?1
                        OR c.next_attempt_at > ?3)
                 ORDER BY c.next_attempt_at, c.id LIMIT ?2",
            )
            .map_err(sql(&self.path, "list pending conversions"))?;
        let rows = stmt
            .query_map(params![now, (limit + exclude.len()) as i64, latest], |r| {
                Ok(Due {
                    id: r.get("id")?,
                    order_id: r.get("order_id")?,
                    body: r.get("body")?,
                    attempts: r.get::<_, i64>("attempts")? as u32,
                    file_id: r.get("file_id")?,
                })
            })
            .map_err(sql(&self.path, "list pending conversions"))?;
        let mut out = Vec::new();
        for r in rows {
            let d = r.map_err(sql(&self.path, "list pending conversions"))?;
            if !exclude.contains(&d.id) {
                out.push(d);
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// When the next pending conversion is due, if any is pending.
    pub fn next_due(&self) -> Result<Option<String>> {
        self.conn
            .query_row(
                "SELECT MIN(next_attempt_at) FROM conversions WHERE state = 'pending'",
                [],
                |r| r.get::<_, Option<String>>(0),
            )
            .map_err(sql(&self.path, "find the next retry"))
    }

    /// Commits the outcomes of many POSTs in one transaction (group commit).
    pub fn record_outcomes(&mut self, outcomes: &[Outcome]) -> Result<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        let now_utc = chrono::Utc::now();
        let follow_up = self.follow_up;
        let now = time_text(now_utc);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(&path, "begin"))?;
        {
            let mut accepted = tx
                .prepare_cached(
                    "UPDATE conversions SET state = 'accepted', queued_uri = ?2, warnings = ?3,
                        attempts = attempts + 1, last_error = NULL, next_attempt_at = NULL,
                        updated_at = ?4, accepted_at = ?4
                     WHERE id = ?1",
                )
                .map_err(sql(&path, "record outcomes"))?;
            let mut rejected = tx
                .prepare_cached(
                    "UPDATE conversions SET state = 'rejected', last_error = ?2,
                        attempts = attempts + 1, next_attempt_at = NULL, updated_at = ?3
                     WHERE id = ?1",
                )
                .map_err(sql(&path, "record outcomes"))?;
            let mut retry = tx
                .prepare_cached(
                    "UPDATE conversions SET last_error = ?2, attempts = attempts + 1,
                        next_attempt_at = ?3, updated_at = ?4
                     WHERE id = ?1 AND state = 'pending'",
                )
                .map_err(sql(&path, "record outcomes"))?;
            // Nothing reads an accepted conversion's body again.
            let mut drop_body = tx
                .prepare_cached("DELETE FROM bodies WHERE conversion_id = ?1")
                .map_err(sql(&path, "record outcomes"))?;
            let mut unsent = tx
                .prepare_cached(
                    "UPDATE conversions SET dispatches = MAX(dispatches - 1, 0) WHERE id = ?1",
                )
                .map_err(sql(&path, "record outcomes"))?;
            // Followed from its acceptance on (again after a replay's resend).
            let mut follow = tx
                .prepare_cached(
                    "INSERT INTO followups (conversion_id, file_id, state, next_at, updated_at)
                     SELECT id, file_id, 'waiting', ?2, ?3 FROM conversions WHERE id = ?1
                     ON CONFLICT (conversion_id) DO UPDATE SET state = 'waiting', polls = 0,
                        next_at = excluded.next_at, impact_status = NULL, error_type = NULL,
                        error_reason = NULL, completed_at = NULL, updated_at = excluded.updated_at",
                )
                .map_err(sql(&path, "record outcomes"))?;
            let mut uncertain = tx
                .prepare_cached(
                    "UPDATE conversions SET last_error = ?2, attempts = attempts + 1,
                        next_attempt_at = ?3, updated_at = ?4, uncertain = uncertain + 1,
                        state = CASE WHEN uncertain + 1 >= ?5 THEN 'held' ELSE 'pending' END
                     WHERE id = ?1 AND state = 'pending'",
                )
                .map_err(sql(&path, "record outcomes"))?;
            for o in outcomes {
                match o {
                    Outcome::Uncertain { id, error, next_at } => {
                        uncertain.execute(params![id, error, next_at, now, super::UNCERTAIN_LIMIT])
                    }
                    Outcome::Accepted {
                        id,
                        queued_uri,
                        warnings,
                    } => {
                        let w = (!warnings.is_empty()).then(|| warnings.join("\n"));
                        let n = accepted
                            .execute(params![id, queued_uri, w, now])
                            .and_then(|n| drop_body.execute([id]).map(|_| n));
                        match (follow_up, queued_uri) {
                            (Some(first), Some(_)) => n.and_then(|_| {
                                follow.execute(params![id, time_text(now_utc + first), now])
                            }),
                            _ => n,
                        }
                    }
                    Outcome::Unsent { id } => unsent.execute(params![id]),
                    Outcome::Rejected { id, reasons } => {
                        rejected.execute(params![id, reasons.join("\n"), now])
                    }
                    Outcome::Retry { id, error, next_at } => {
                        retry.execute(params![id, error, next_at, now])
                    }
                }
                .map_err(sql(&path, "record outcomes"))?;
            }
        }
        tx.commit().map_err(sql(&path, "commit outcomes"))
    }

    /// How many of a file's conversions are still pending.
    pub fn pending_in_file(&self, file_id: i64) -> Result<u64> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM conversions c
                 WHERE c.state = 'pending' AND c.id IN
                   (SELECT conversion_id FROM lines WHERE file_id = ?1 AND outcome = 'sent')",
                [file_id],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(sql(&self.path, "count pending conversions"))
    }

    /// The lines of a file that go to its rejects file, with their reasons: invalid rows and
    /// the rows of conversions impact rejected.
    pub fn rejected_lines(&self, file_id: i64) -> Result<Vec<(u64, String)>> {
        let own_reason: Vec<String> = LineOutcome::ALL
            .iter()
            .filter(|o| o.goes_to_rejects())
            .map(|o| format!("'{}'", o.sql()))
            .collect();
        let own_reason = own_reason.join(", ");
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT l.line AS line, CASE
                    WHEN l.outcome IN ({own_reason}) THEN l.reason
                    ELSE 'rejected by impact: ' || COALESCE(c.last_error, '') END AS reason
                 FROM lines l LEFT JOIN conversions c ON c.id = l.conversion_id
                 WHERE l.file_id = ?1 AND (l.outcome IN ({own_reason})
                    OR (l.outcome = 'sent' AND c.state = 'rejected'))
                 ORDER BY l.line"
            ))
            .map_err(sql(&self.path, "list rejected lines"))?;
        let rows = stmt
            .query_map([file_id], |r| {
                Ok((
                    r.get::<_, i64>("line")? as u64,
                    r.get::<_, Option<String>>("reason")?.unwrap_or_default(),
                ))
            })
            .map_err(sql(&self.path, "list rejected lines"))?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(sql(&self.path, "list rejected lines"))
    }

    /// Marks a file done, with where it was moved and its rejects file.
    pub fn finish_file(
        &mut self,
        file_id: i64,
        archived_to: Option<&str>,
        rejects: Option<&str>,
    ) -> Result<()> {
        // A plan never completed (the file changed or went away before its last part was
        // read) is closed under a hash no content has: the same content dropped again is
        // read as new, never taken for a duplicate of a part.
        self.conn
            .execute(
                "UPDATE files SET finished_at = ?2, archived_to = COALESCE(?3, archived_to),
                    content_hash = CASE WHEN plan_complete = 0
                      THEN 'partial:' || content_hash ELSE content_hash END,
                    plan_complete = 1,
                    rejects_path = COALESCE(?4, rejects_path),
                    state = CASE WHEN EXISTS (SELECT 1 FROM files later
                        WHERE later.path = files.path AND later.id > files.id
                          AND later.state != 'duplicate')
                      THEN 'superseded' ELSE 'done' END
                 WHERE id = ?1",
                params![file_id, now_text(), archived_to, rejects],
            )
            .map_err(sql(&self.path, "finish a file"))?;
        Ok(())
    }

    /// Notes where a duplicate file was moved.
    pub fn set_archived(&mut self, file_id: i64, archived_to: &str) -> Result<()> {
        self.conn
            .execute(
                "UPDATE files SET archived_to = ?2 WHERE id = ?1",
                params![file_id, archived_to],
            )
            .map_err(sql(&self.path, "record an archive path"))?;
        Ok(())
    }

    /// Starts a run record (each `run`, `send`, `watch`, `demo`).
    pub fn start_run(&mut self, command: &str, args: &str) -> Result<i64> {
        self.conn
            .execute(
                "INSERT INTO runs (command, user, args, started_at) VALUES (?1, ?2, ?3, ?4)",
                params![command, current_user(), args, now_text()],
            )
            .map_err(sql(&self.path, "record a run"))?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn finish_run(&mut self, run: i64, summary: &str) -> Result<()> {
        self.conn
            .execute(
                "UPDATE runs SET finished_at = ?2, summary = ?3 WHERE id = ?1",
                params![run, now_text(), summary],
            )
            .map_err(sql(&self.path, "finish a run"))?;
        Ok(())
    }

    /// Records a replay: who, when, which file, what was asked, what it queued.
    pub fn record_replay(
        &mut self,
        run: i64,
        file_id: i64,
        resend_accepted: bool,
        queued: u64,
    ) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO replays (run_id, file_id, user, at, resend_accepted, queued)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    run,
                    file_id,
                    current_user(),
                    now_text(),
                    resend_accepted,
                    queued as i64
                ],
            )
            .map_err(sql(&self.path, "record a replay"))?;
        Ok(())
    }
}
