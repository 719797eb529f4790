//! The ledger's schema as an ordered list of migrations, applied by `PRAGMA user_version`.
//!
//! Rules (cargo's): never remove or edit a migration that has shipped; only append. Each runs
//! with the version bump inside one exclusive transaction, so a crash leaves the old version.

use rusqlite::{Connection, TransactionBehavior};

use crate::state::{ConvState, FileState, FollowState, LineOutcome, StateName};

pub const MIGRATIONS: &[&str] = &[
    // 1: files, conversions, lines, runs, replays.
    r#"
    CREATE TABLE files (
        id             INTEGER PRIMARY KEY,
        content_hash   TEXT NOT NULL,
        path           TEXT NOT NULL,
        size           INTEGER NOT NULL,
        mtime          TEXT,
        state          TEXT NOT NULL CHECK (state IN ('processing', 'done', 'duplicate')),
        duplicate_of   INTEGER REFERENCES files(id),
        rows           INTEGER NOT NULL DEFAULT 0,
        skipped_lines  INTEGER NOT NULL DEFAULT 0,
        invalid_orders INTEGER NOT NULL DEFAULT 0,
        archived_to    TEXT,
        rejects_path   TEXT,
        first_seen     TEXT NOT NULL,
        finished_at    TEXT
    );
    CREATE INDEX files_by_hash ON files(content_hash);
    CREATE INDEX files_by_state ON files(state);

    CREATE TABLE conversions (
        id              INTEGER PRIMARY KEY,
        campaign_id     TEXT NOT NULL,
        event_field     TEXT NOT NULL,
        event_id        TEXT NOT NULL,
        order_id        TEXT NOT NULL,
        state           TEXT NOT NULL CHECK (state IN ('pending', 'accepted', 'rejected')),
        body            TEXT NOT NULL,
        payload_hash    TEXT NOT NULL,
        file_id         INTEGER NOT NULL REFERENCES files(id),
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT,
        last_error      TEXT,
        queued_uri      TEXT,
        warnings        TEXT,
        created_at      TEXT NOT NULL,
        updated_at      TEXT NOT NULL,
        accepted_at     TEXT,
        UNIQUE (campaign_id, event_field, event_id, order_id)
    );
    CREATE INDEX conversions_due ON conversions(state, next_attempt_at);

    CREATE TABLE lines (
        file_id       INTEGER NOT NULL REFERENCES files(id),
        line          INTEGER NOT NULL,
        hash          BLOB NOT NULL,
        conversion_id INTEGER REFERENCES conversions(id),
        outcome       TEXT NOT NULL,
        reason        TEXT,
        PRIMARY KEY (file_id, line)
    ) WITHOUT ROWID;
    CREATE INDEX lines_by_hash ON lines(hash);
    CREATE INDEX lines_by_conversion ON lines(conversion_id);

    CREATE TABLE runs (
        id          INTEGER PRIMARY KEY,
        command     TEXT NOT NULL,
        user        TEXT NOT NULL,
        args        TEXT NOT NULL,
        started_at  TEXT NOT NULL,
        finished_at TEXT,
        summary     TEXT
    );

    CREATE TABLE replays (
        id              INTEGER PRIMARY KEY,
        run_id          INTEGER NOT NULL REFERENCES runs(id),
        file_id         INTEGER NOT NULL REFERENCES files(id),
        user            TEXT NOT NULL,
        at              TEXT NOT NULL,
        resend_accepted INTEGER NOT NULL,
        queued          INTEGER NOT NULL
    );
    "#,
    // 2: state columns without fixed CHECK lists: the states are the tables in
    // core/src/state.rs, enforced by triggers generated from them (`state_checks`), so a new
    // state needs no table rebuild. Run with foreign keys off (see `migrate`).
    r#"
    CREATE TABLE files_v2 (
        id             INTEGER PRIMARY KEY,
        content_hash   TEXT NOT NULL,
        path           TEXT NOT NULL,
        size           INTEGER NOT NULL,
        mtime          TEXT,
        state          TEXT NOT NULL,
        duplicate_of   INTEGER REFERENCES files(id),
        rows           INTEGER NOT NULL DEFAULT 0,
        skipped_lines  INTEGER NOT NULL DEFAULT 0,
        invalid_orders INTEGER NOT NULL DEFAULT 0,
        archived_to    TEXT,
        rejects_path   TEXT,
        first_seen     TEXT NOT NULL,
        finished_at    TEXT
    );
    INSERT INTO files_v2 SELECT * FROM files;
    DROP TABLE files;
    ALTER TABLE files_v2 RENAME TO files;
    CREATE INDEX files_by_hash ON files(content_hash);
    CREATE INDEX files_by_state ON files(state);
    CREATE INDEX files_by_path ON files(path);

    CREATE TABLE conversions_v2 (
        id              INTEGER PRIMARY KEY,
        campaign_id     TEXT NOT NULL,
        event_field     TEXT NOT NULL,
        event_id        TEXT NOT NULL,
        order_id        TEXT NOT NULL,
        state           TEXT NOT NULL,
        body            TEXT NOT NULL,
        payload_hash    TEXT NOT NULL,
        file_id         INTEGER NOT NULL REFERENCES files(id),
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT,
        last_error      TEXT,
        queued_uri      TEXT,
        warnings        TEXT,
        created_at      TEXT NOT NULL,
        updated_at      TEXT NOT NULL,
        accepted_at     TEXT,
        UNIQUE (campaign_id, event_field, event_id, order_id)
    );
    INSERT INTO conversions_v2 SELECT * FROM conversions;
    DROP TABLE conversions;
    ALTER TABLE conversions_v2 RENAME TO conversions;
    CREATE INDEX conversions_due ON conversions(state, next_attempt_at);
    "#,
    // 3: rows whose line details were pruned, per file, so `status` tells pruned rows from
    // unaccounted ones.
    r#"
    ALTER TABLE files ADD COLUMN pruned_rows INTEGER NOT NULL DEFAULT 0;
    "#,
    // 4: how many times a conversion's answer was uncertain (see `ConvState::Held`).
    r#"
    ALTER TABLE conversions ADD COLUMN uncertain INTEGER NOT NULL DEFAULT 0;
    "#,
    // 5: counts by state kept as rows change (by triggers, see `state_checks`), so `status`
    // and `/metrics` read a few rows instead of scanning `lines`; the age of the oldest
    // pending conversion from an index of the pending ones only. A later migration that
    // rebuilds one of these tables must recount its tallies.
    r#"
    CREATE TABLE tallies (
        tbl   TEXT NOT NULL,
        state TEXT NOT NULL,
        n     INTEGER NOT NULL,
        PRIMARY KEY (tbl, state)
    ) WITHOUT ROWID;
    INSERT INTO tallies SELECT 'files', state, COUNT(*) FROM files GROUP BY state;
    INSERT INTO tallies SELECT 'conversions', state, COUNT(*) FROM conversions GROUP BY state;
    INSERT INTO tallies SELECT 'lines', outcome, COUNT(*) FROM lines GROUP BY outcome;
    CREATE INDEX conversions_pending_since ON conversions(created_at) WHERE state = 'pending';
    "#,
    // 6: what became of each accepted conversion at impact (`followups`, one row per
    // conversion followed, its state in `FollowState`); how often each conversion was handed
    // to a sender (`dispatches`: more than its recorded answers means one went out and its
    // answer was lost to a stop, so a later CONV_DUPLICATE is impact's dedup at work); the
    // failed-at-impact file of each file; small facts (`meta`) such as "this account has no
    // follow-up".
    r#"
    ALTER TABLE conversions ADD COLUMN dispatches INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE files ADD COLUMN failed_path TEXT;
    CREATE TABLE followups (
        conversion_id INTEGER PRIMARY KEY REFERENCES conversions(id),
        file_id       INTEGER NOT NULL REFERENCES files(id),
        state         TEXT NOT NULL,
        polls         INTEGER NOT NULL DEFAULT 0,
        next_at       TEXT,
        impact_status TEXT,
        error_type    TEXT,
        error_reason  TEXT,
        completed_at  TEXT,
        updated_at    TEXT NOT NULL
    );
    CREATE INDEX followups_due ON followups(next_at) WHERE state = 'waiting';
    CREATE INDEX followups_by_file ON followups(file_id, state);
    CREATE INDEX followups_failed ON followups(error_reason) WHERE state = 'failed';
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
    "#,
    // 7: the order of an invalid row, so `status` shows it fixed once a later file gets the
    // order accepted (a rejects file corrected and dropped again), found by order id among
    // accepted conversions only: a full index of conversions by order id made every plan's
    // big transaction write ten times the pages (its statement journals).
    r#"
    ALTER TABLE lines ADD COLUMN order_id TEXT;
    CREATE INDEX conversions_accepted_by_order ON conversions(order_id)
        WHERE state = 'accepted';
    "#,
    // 8: a large file's plan is recorded in parts as it is read (its first conversions go
    // out while the rest is read); 0 until its last part is recorded, so a run that stopped
    // in between reads the file again and records the rest.
    r#"
    ALTER TABLE files ADD COLUMN plan_complete INTEGER NOT NULL DEFAULT 1;
    "#,
    // 9: a compact ledger. A body is kept only until impact accepts its conversion (nothing
    // reads it again: dedup needs the key and payload hash, replay reads the file, follow-up
    // the QueuedUri), in a table of its own so the space it frees is reused; and lines are no
    // longer indexed by hash: the new lines of an order changed after it was sent are found
    // among that conversion's own lines (`lines_by_conversion`); the index of due
    // conversions holds the pending ones only.
    r#"
    CREATE TABLE bodies (
        conversion_id INTEGER PRIMARY KEY REFERENCES conversions(id),
        body          TEXT NOT NULL
    );
    INSERT INTO bodies (conversion_id, body)
        SELECT id, body FROM conversions WHERE state != 'accepted' AND body != '';
    ALTER TABLE conversions DROP COLUMN body;
    DROP INDEX IF EXISTS lines_by_hash;
    DROP INDEX IF EXISTS conversions_due;
    CREATE INDEX conversions_due ON conversions(next_attempt_at, id) WHERE state = 'pending';
    "#,
];

/// Applies the migrations the database lacks.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    // Table rebuilds need foreign keys off; the pragma has no effect inside a transaction,
    // so it is set around it, and the keys are checked before the commit.
    let fk: i64 = conn.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    let result = migrate_in_transaction(conn);
    conn.pragma_update(None, "foreign_keys", fk)?;
    result
}

fn migrate_in_transaction(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
    }
    let broken: i64 = tx.query_row("SELECT COUNT(*) FROM pragma_foreign_key_check", [], |r| {
        r.get(0)
    })?;
    if broken > 0 {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT),
            Some(format!("{broken} rows break a foreign key after migrating")),
        ));
    }
    tx.commit()
}

/// Refuses any value outside its table in every state column, with triggers generated from
/// the state tables (SQLite cannot add a CHECK to an existing column), and keeps the
/// `tallies` (counts by state) with triggers on the same columns. They are recreated at
/// every writable open, so a new state is one row of its table and nothing here.
pub fn state_checks(conn: &Connection) -> rusqlite::Result<()> {
    let mut sql = String::from("BEGIN IMMEDIATE;\n");
    for (table, column, list) in [
        (
            FileState::COLUMN.0,
            FileState::COLUMN.1,
            FileState::sql_list(),
        ),
        (
            ConvState::COLUMN.0,
            ConvState::COLUMN.1,
            ConvState::sql_list(),
        ),
        (
            LineOutcome::COLUMN.0,
            LineOutcome::COLUMN.1,
            LineOutcome::sql_list(),
        ),
        (
            FollowState::COLUMN.0,
            FollowState::COLUMN.1,
            FollowState::sql_list(),
        ),
    ] {
        for event in ["INSERT", "UPDATE"] {
            let name = format!("check_{table}_{column}_{}", event.to_lowercase());
            sql.push_str(&format!(
                "DROP TRIGGER IF EXISTS {name};\n\
                 CREATE TRIGGER {name} BEFORE {event} ON {table}\n\
                 WHEN NEW.{column} NOT IN {list}\n\
                 BEGIN SELECT RAISE(ABORT, '{table}.{column}: unknown state'); END;\n"
            ));
        }
        // The tallies follow every insert, delete and change of state, in the same
        // transaction as the change itself.
        let add = format!(
            "INSERT INTO tallies (tbl, state, n) VALUES ('{table}', NEW.{column}, 1)\n\
             ON CONFLICT (tbl, state) DO UPDATE SET n = n + 1;"
        );
        let remove =
            format!("UPDATE tallies SET n = n - 1 WHERE tbl = '{table}' AND state = OLD.{column};");
        sql.push_str(&format!(
            "DROP TRIGGER IF EXISTS tally_{table}_insert;\n\
             CREATE TRIGGER tally_{table}_insert AFTER INSERT ON {table}\n\
             BEGIN {add} END;\n\
             DROP TRIGGER IF EXISTS tally_{table}_delete;\n\
             CREATE TRIGGER tally_{table}_delete AFTER DELETE ON {table}\n\
             BEGIN {remove} END;\n\
             DROP TRIGGER IF EXISTS tally_{table}_update;\n\
             CREATE TRIGGER tally_{table}_update AFTER UPDATE OF {column} ON {table}\n\
             WHEN OLD.{column} IS NOT NEW.{column}\n\
             BEGIN {remove} {add} END;\n"
        ));
    }
    sql.push_str("COMMIT;");
    conn.execute_batch(&sql)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_1_ledger_keeps_its_rows_through_migration_2() {
        let mut c = Connection::open_in_memory().unwrap();
        c.pragma_update(None, "foreign_keys", "ON").unwrap();
        c.execute_batch(MIGRATIONS[0]).unwrap();
        c.pragma_update(None, "user_version", 1).unwrap();
        c.execute_batch(
            "INSERT INTO files (content_hash, path, size, state, first_seen)
               VALUES ('h', 'drop/a.csv', 10, 'done', 't');
             INSERT INTO conversions (campaign_id, event_field, event_id, order_id, state, body,
               payload_hash, file_id, created_at, updated_at)
               VALUES ('1', 'ActionTrackerId', '2', 'A', 'accepted', 'b', 'p', 1, 't', 't');
             INSERT INTO lines (file_id, line, hash, conversion_id, outcome)
               VALUES (1, 2, x'00', 1, 'sent');",
        )
        .unwrap();
        migrate(&mut c).unwrap();
        state_checks(&c).unwrap();
        let n = |sql: &str| c.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
        assert_eq!(n("PRAGMA user_version"), MIGRATIONS.len() as i64);
        assert_eq!(n("SELECT COUNT(*) FROM files"), 1);
        assert_eq!(n("SELECT COUNT(*) FROM conversions WHERE file_id = 1"), 1);
        assert_eq!(
            n("SELECT COUNT(*) FROM lines l JOIN conversions c ON c.id = l.conversion_id"),
            1
        );
        assert_eq!(n("PRAGMA foreign_keys"), 1);
        c.execute("UPDATE files SET state = 'superseded'", [])
            .unwrap();
        assert!(c.execute("UPDATE files SET state = 'bogus'", []).is_err());
        // The tallies start from the rows migrated and follow every change after.
        let tally = |tbl: &str, state: &str| {
            c.query_row(
                "SELECT COALESCE(SUM(n), 0) FROM tallies WHERE tbl = ?1 AND state = ?2",
                [tbl, state],
                |r| r.get::<_, i64>(0),
            )
            .unwrap()
        };
        assert_eq!(tally("files", "done"), 0);
        assert_eq!(tally("files", "superseded"), 1);
        assert_eq!(tally("conversions", "accepted"), 1);
        assert_eq!(tally("lines", "sent"), 1);
        c.execute("DELETE FROM lines", []).unwrap();
        assert_eq!(tally("lines", "sent"), 0);
    }

    #[test]
    fn an_unknown_state_is_refused_by_the_database() {
        let mut c = Connection::open_in_memory().unwrap();
        migrate(&mut c).unwrap();
        state_checks(&c).unwrap();
        state_checks(&c).unwrap();
        c.execute(
            "INSERT INTO files (content_hash, path, size, state, first_seen)
             VALUES ('h', 'p', 1, 'processing', 'now')",
            [],
        )
        .unwrap();
        let e = c
            .execute("UPDATE files SET state = 'finished'", [])
            .unwrap_err();
        assert!(e.to_string().contains("files.state: unknown state"), "{e}");
        let e = c
            .execute(
                "INSERT INTO lines (file_id, line, hash, outcome) VALUES (1, 2, x'00', 'lost')",
                [],
            )
            .unwrap_err();
        assert!(
            e.to_string().contains("lines.outcome: unknown state"),
            "{e}"
        );
    }

    #[test]
    fn migrations_apply_once_and_set_the_version() {
        let mut c = Connection::open_in_memory().unwrap();
        migrate(&mut c).unwrap();
        migrate(&mut c).unwrap();
        let v: i64 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
    }
}
