//! The states of files, conversions and lines, each defined once: its name in the ledger, its
//! label in reports, and whether it needs the operator. The ledger, plan, status and reports
//! all read these tables, and the ledger's CHECK triggers are generated from them, so a new
//! state is one table row plus its handling.

use crate::model::{ConversionKey, LineHash};

/// A value stored in a state column of the ledger.
pub trait StateName: Copy + Eq + 'static {
    /// Every value, in report order.
    const ALL: &'static [Self];
    /// The ledger column it is stored in (`table.column`), for errors and CHECK triggers.
    const COLUMN: (&'static str, &'static str);
    /// The text stored in the ledger.
    fn sql(self) -> &'static str;

    /// The value stored as `text`; an unknown text is an error, never a default.
    fn parse(text: &str) -> Result<Self, UnknownState> {
        Self::ALL
            .iter()
            .copied()
            .find(|s| s.sql() == text)
            .ok_or_else(|| UnknownState {
                column: format!("{}.{}", Self::COLUMN.0, Self::COLUMN.1),
                value: text.to_owned(),
            })
    }

    /// The SQL list of every stored name: `('a', 'b')`.
    fn sql_list() -> String {
        let names: Vec<String> = Self::ALL.iter().map(|s| format!("'{}'", s.sql())).collect();
        format!("({})", names.join(", "))
    }
}

/// A state column held a value this build does not know (a newer or damaged ledger).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{column} holds \"{value}\", which this build of impact-drop does not know")]
pub struct UnknownState {
    pub column: String,
    pub value: String,
}

macro_rules! state_table {
    (
        $(#[$meta:meta])*
        $name:ident in $table:literal . $column:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $sql:literal, $label:literal, $needs:literal; )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl StateName for $name {
            const ALL: &'static [Self] = &[$($name::$variant),+];
            const COLUMN: (&'static str, &'static str) = ($table, $column);
            fn sql(self) -> &'static str {
                match self { $($name::$variant => $sql,)+ }
            }
        }

        impl $name {
            /// How reports name it.
            pub fn label(self) -> &'static str {
                match self { $($name::$variant => $label,)+ }
            }

            /// Whether something is left for the operator to do.
            pub fn needs_operator(self) -> bool {
                match self { $($name::$variant => $needs,)+ }
            }

            pub fn as_str(self) -> &'static str {
                self.sql()
            }
        }
    };
}

state_table! {
    /// The state of a conversion.
    ConvState in "conversions"."state" {
        /// impact answered 200 (queued).
        Accepted = "accepted", "accepted", false;
        /// impact refused it; the row needs fixing.
        Rejected = "rejected", "rejected by impact", true;
        /// Recorded, not yet answered by impact (sent at the next chance).
        Pending = "pending", "pending", false;
        /// Sent, but impact's answer never came or was not impact's, more than the bounded
        /// number of times: impact may have it already. Held until the operator replays it.
        Held = "held", "held for the operator (impact may have it already)", true;
    }
}

state_table! {
    /// The state of a file.
    FileState in "files"."state" {
        /// Read and planned; its conversions are not all final yet.
        Processing = "processing", "processing", false;
        /// Every conversion final; rejects written and archived where it applies.
        Done = "done", "done", false;
        /// The same content as an earlier file: nothing of it is sent.
        Duplicate = "duplicate", "duplicate", false;
        /// Done, and read again since under the same name with other content (a stalled
        /// upload completed, an append, a re-export): its invalid rows are no longer open
        /// problems; the later reading's are.
        Superseded = "superseded", "superseded by a later reading", false;
    }
}

state_table! {
    /// What became of one line of a file. Report order is the order here; the label is what
    /// reports print after a count of rows.
    LineOutcome in "lines"."outcome" {
        /// Part of a conversion this file sends (its conversion's state says how that went).
        Sent = "sent", "rows sent", false;
        /// Invalid locally; the reason is kept and the row goes to the rejects file.
        Invalid = "invalid", "rows invalid", true;
        /// Its conversion was already accepted, from this content: nothing to do.
        AlreadySent = "already_sent", "rows already sent", false;
        /// Its order was already accepted with other content: cannot be amended.
        ChangedAfterSent = "changed_after_sent",
            "rows of orders changed after they were sent (adjust them in impact)", true;
        /// Its conversion is already being sent from another file.
        AlreadyPending = "already_pending", "rows already on their way", false;
        /// Skipped by a filter (a status the operator does not send).
        Filtered = "filtered", "rows filtered", false;
        /// Its conversion was rejected by impact with this same content before.
        AlreadyRejected = "already_rejected", "rows rejected before with the same content", true;
    }
}

state_table! {
    /// What became of an accepted conversion at impact, as its follow-up found
    /// (`APISubmissions`). Report order is the order here.
    FollowState in "followups"."state" {
        /// Still `Queued` or `In Progress` at impact (or not asked yet).
        Waiting = "waiting", "still queued at impact", false;
        /// `Complete` without an error: impact tracked it.
        Processed = "processed", "processed by impact", false;
        /// `Complete` with an error (`ErrorType`, `ErrorReason`): impact did not track it.
        Failed = "failed", "failed at impact", true;
        /// `CONV_DUPLICATE` on a conversion that may have reached impact before (sent again
        /// after a stop with it in flight, or after an uncertain answer): impact's dedup
        /// absorbed the second copy; the first one counts.
        Absorbed = "absorbed", "absorbed by impact's dedup (sent again after a stop)", false;
        /// No final answer within `[follow_up] give_up_after_days`, or impact no longer knows
        /// the submission: look it up in impact's UI.
        Unknown = "unknown", "outcome unknown (follow-up gave up)", true;
        /// Not followed: impact offers no follow-up for this account (partner).
        Unavailable = "unavailable", "not followed (impact offers no follow-up to this account)", false;
    }
}

/// What a row ended as, for reports: a sent row takes its conversion's state, any other row
/// its line outcome. Every row of a finished file has exactly one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RowState {
    Conversion(ConvState),
    Line(LineOutcome),
}

impl RowState {
    /// Every row state, in report order.
    pub fn all() -> impl Iterator<Item = RowState> {
        ConvState::ALL
            .iter()
            .map(|c| RowState::Conversion(*c))
            .chain(
                LineOutcome::ALL
                    .iter()
                    .filter(|o| **o != LineOutcome::Sent)
                    .map(|o| RowState::Line(*o)),
            )
    }

    /// The row state of a line with this outcome whose conversion (if any) is in `conv`.
    pub fn of(outcome: LineOutcome, conv: Option<ConvState>) -> RowState {
        match (outcome, conv) {
            (LineOutcome::Sent, Some(c)) => RowState::Conversion(c),
            (LineOutcome::Sent, None) => RowState::Conversion(ConvState::Pending),
            (o, _) => RowState::Line(o),
        }
    }

    /// Its stored name (`accepted`, `invalid`, …), used as the JSON key `rows_<name>`.
    pub fn name(self) -> &'static str {
        match self {
            RowState::Conversion(c) => c.sql(),
            RowState::Line(o) => o.sql(),
        }
    }

    /// What reports print after a count of rows.
    pub fn label(self) -> String {
        match self {
            RowState::Conversion(c) => format!("rows {}", c.label()),
            RowState::Line(o) => o.label().to_owned(),
        }
    }

    pub fn needs_operator(self) -> bool {
        match self {
            RowState::Conversion(c) => c.needs_operator() || c == ConvState::Pending,
            RowState::Line(o) => o.needs_operator(),
        }
    }
}

impl LineOutcome {
    /// Outcomes whose reason is listed by `status` as a row not sent.
    pub fn listed_as_not_sent(self) -> bool {
        !matches!(
            self,
            LineOutcome::Sent | LineOutcome::AlreadySent | LineOutcome::AlreadyPending
        )
    }

    /// Outcomes whose rows go to the file's rejects file (with their reason).
    pub fn goes_to_rejects(self) -> bool {
        matches!(self, LineOutcome::Invalid | LineOutcome::ChangedAfterSent)
    }
}

/// What the ledger knows of a conversion key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Known {
    pub id: i64,
    pub state: ConvState,
    pub payload_hash: String,
    /// The file whose plan last queued it.
    pub file_id: i64,
}

/// A conversion to record as pending.
#[derive(Clone, Debug)]
pub struct NewConversion {
    pub key: ConversionKey,
    pub body: String,
    pub payload_hash: String,
    /// An existing row to send again (replay, or fixed content after a rejection).
    pub existing: Option<i64>,
}

/// One line to record, pointing at a conversion by its index in the plan's `send`, or at an
/// existing conversion id.
#[derive(Clone, Debug)]
pub struct NewLine {
    pub line: u64,
    pub hash: LineHash,
    pub outcome: LineOutcome,
    pub conversion: Option<ConvRef>,
    pub reason: Option<String>,
    /// The order an invalid row belongs to, so a later file that gets the order accepted
    /// shows the row as fixed (`None` for other rows).
    pub order_id: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvRef {
    Planned(usize),
    Existing(i64),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_round_trips_and_unknown_text_is_an_error() {
        for s in LineOutcome::ALL {
            assert_eq!(LineOutcome::parse(s.sql()), Ok(*s));
        }
        for s in ConvState::ALL {
            assert_eq!(ConvState::parse(s.sql()), Ok(*s));
        }
        for s in FileState::ALL {
            assert_eq!(FileState::parse(s.sql()), Ok(*s));
        }
        let e = ConvState::parse("queued").unwrap_err();
        assert_eq!(
            e.to_string(),
            "conversions.state holds \"queued\", which this build of impact-drop does not know"
        );
        assert_eq!(
            ConvState::sql_list(),
            "('accepted', 'rejected', 'pending', 'held')"
        );
    }
}
