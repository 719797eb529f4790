//! Planning (pure): a file's conversions and what the ledger knows → what to send and what
//! every line became.
//!
//! - A new key is sent.
//! - A key impact accepted with the same content is "already sent": nothing goes, whichever
//!   file or line it comes from.
//! - A key accepted with *other* content cannot be amended by a conversion. Its lines are
//!   reported as "order changed after it was sent; adjust it in impact", and the new lines
//!   are named.
//! - A pending key is already on its way.
//! - A rejected key goes again only with new content (the row was fixed) or on a replay.
//! - A replay resends accepted keys only when the operator asks for it explicitly.

use std::collections::{HashMap, HashSet};

use crate::model::{ConversionKey, LineHash, LineRef, Problem};
use crate::state::{ConvRef, ConvState, Known, LineOutcome, NewConversion, NewLine};
use crate::validate::{Conversion, Invalid};

/// Normal processing, or an operator's replay of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Normal,
    Replay { resend_accepted: bool },
}

/// An order that changed after impact accepted it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Changed {
    pub key: ConversionKey,
    /// Lines of this file the ledger had never seen (the new or edited rows).
    pub new_lines: Vec<u64>,
    pub lines: Vec<u64>,
}

#[derive(Debug, Default)]
pub struct Plan {
    /// Conversions to record as pending, then send.
    pub send: Vec<NewConversion>,
    pub lines: Vec<NewLine>,
    pub already_sent: u64,
    pub already_pending: u64,
    pub already_rejected: u64,
    /// Accepted conversions sent again because the operator asked (`--resend-accepted`).
    pub resent_accepted: u64,
    pub changed: Vec<Changed>,
}

/// A short, stable hash of a request body: equal bodies, equal hashes.
pub fn payload_hash(body: &str) -> String {
    hex::encode(&blake3::hash(body.as_bytes()).as_bytes()[..16])
}

/// The rows of a file refused as a whole, and why.
#[derive(Clone, Debug, Default)]
pub struct Refused {
    pub lines: Vec<LineRef>,
    pub problems: Vec<Problem>,
}

/// Decides, for one file (or one part of it). `resuming` is the file's id when an earlier
/// run recorded part of its plan.
#[allow(clippy::too_many_arguments)] // each input is a distinct fact of the file or ledger
pub fn plan(
    conversions: &[(Conversion, String)],
    invalid: &[Invalid],
    filtered: &[crate::intake::Filtered],
    strays: &[(LineRef, Vec<Problem>)],
    refused: &Refused,
    known: &HashMap<ConversionKey, Known>,
    known_lines: &HashSet<LineHash>,
    mode: Mode,
    resuming: Option<i64>,
) -> Plan {
    let mut p = Plan::default();
    for (conversion, body) in conversions {
        let hash = payload_hash(body);
        let key = conversion.key();
        let existing = known.get(key);
        let (outcome, conv, reason) = match (existing, mode) {
            // Resuming a file whose plan was recorded in part: what that part queued is this
            // file's own, recorded again as sent (never queued twice).
            (Some(k), Mode::Normal) if resuming == Some(k.file_id) => {
                (LineOutcome::Sent, Some(ConvRef::Existing(k.id)), None)
            }
            (None, _) => (
                LineOutcome::Sent,
                Some(queue(&mut p, key, body, hash, None)),
                None,
            ),
            (
                Some(k),
                Mode::Replay {
                    resend_accepted: true,
                },
            ) if k.state == ConvState::Accepted => {
                p.resent_accepted += 1;
                (
                    LineOutcome::Sent,
                    Some(queue(&mut p, key, body, hash, Some(k.id))),
                    None,
                )
            }
            (Some(k), _) if k.state == ConvState::Accepted && k.payload_hash == hash => {
                p.already_sent += 1;
                (
                    LineOutcome::AlreadySent,
                    Some(ConvRef::Existing(k.id)),
                    None,
                )
            }
            (Some(k), _) if k.state == ConvState::Accepted => {
                let lines: Vec<u64> = conversion.lines().iter().map(|l| l.line).collect();
                let new_lines: Vec<u64> = conversion
                    .lines()
                    .iter()
                    .filter(|l| !known_lines.contains(&l.hash))
                    .map(|l| l.line)
                    .collect();
                let reason =
                    format!(
                    "order changed after it was sent; adjust it in impact (a conversion cannot \
                     be amended){}",
                    if new_lines.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; new or changed lines: {}",
                            new_lines.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
                        )
                    }
                );
                p.changed.push(Changed {
                    key: key.clone(),
                    new_lines,
                    lines,
                });
                (
                    LineOutcome::ChangedAfterSent,
                    Some(ConvRef::Existing(k.id)),
                    Some(reason),
                )
            }
            // Held for the operator (impact may have it): sent again only on a replay.
            (Some(k), Mode::Replay { .. }) if k.state == ConvState::Held => (
                LineOutcome::Sent,
                Some(queue(&mut p, key, body, hash, Some(k.id))),
                None,
            ),
            (Some(k), _) if k.state == ConvState::Pending || k.state == ConvState::Held => {
                p.already_pending += 1;
                (
                    LineOutcome::AlreadyPending,
                    Some(ConvRef::Existing(k.id)),
                    None,
                )
            }
            // Rejected: again on a replay, or when the content changed (a fixed row).
            (Some(k), Mode::Replay { .. }) => (
                LineOutcome::Sent,
                Some(queue(&mut p, key, body, hash, Some(k.id))),
                None,
            ),
            (Some(k), Mode::Normal) if k.payload_hash != hash => (
                LineOutcome::Sent,
                Some(queue(&mut p, key, body, hash, Some(k.id))),
                None,
            ),
            (Some(k), Mode::Normal) => {
                p.already_rejected += 1;
                (
                    LineOutcome::AlreadyRejected,
                    Some(ConvRef::Existing(k.id)),
                    Some(
                        "impact rejected this conversion before, with this same content: fix \
                         the row, or replay the file with `impact-drop send --replay`"
                            .to_owned(),
                    ),
                )
            }
        };
        for l in conversion.lines() {
            p.lines.push(NewLine {
                line: l.line,
                hash: l.hash,
                outcome,
                conversion: conv,
                reason: reason.clone(),
                order_id: None,
            });
        }
    }
    for inv in invalid {
        let reason = describe(&inv.problems);
        for l in &inv.lines {
            p.lines.push(NewLine {
                line: l.line,
                hash: l.hash,
                outcome: LineOutcome::Invalid,
                conversion: None,
                reason: Some(reason.clone()),
                order_id: Some(inv.order_id.clone()).filter(|o| !o.is_empty()),
            });
        }
    }
    for f in filtered {
        for l in &f.lines {
            p.lines.push(NewLine {
                line: l.line,
                hash: l.hash,
                outcome: LineOutcome::Filtered,
                conversion: None,
                reason: Some(f.reason.clone()),
                order_id: None,
            });
        }
    }
    if !refused.lines.is_empty() {
        let reason = format!("the file was refused: {}", describe(&refused.problems));
        for l in &refused.lines {
            p.lines.push(NewLine {
                line: l.line,
                hash: l.hash,
                outcome: LineOutcome::Invalid,
                conversion: None,
                reason: Some(reason.clone()),
                order_id: None,
            });
        }
    }
    for (l, problems) in strays {
        p.lines.push(NewLine {
            line: l.line,
            hash: l.hash,
            outcome: LineOutcome::Invalid,
            conversion: None,
            reason: Some(describe(problems)),
            order_id: None,
        });
    }
    p
}

fn queue(
    p: &mut Plan,
    key: &ConversionKey,
    body: &str,
    hash: String,
    existing: Option<i64>,
) -> ConvRef {
    p.send.push(NewConversion {
        key: key.clone(),
        body: body.to_owned(),
        payload_hash: hash,
        existing,
    });
    ConvRef::Planned(p.send.len() - 1)
}

/// Problems as one line for a rejects file's reason column.
pub fn describe(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Field, FieldSet, OrderDraft};
    use crate::settings::Endpoint;
    use crate::validate::{validate, Rules};

    fn conversion(order: &str, sku: &str, line: u64) -> (Conversion, String) {
        let mut rules = Rules::new(Endpoint::Partner);
        rules.defaults = vec![
            (Field::CAMPAIGN_ID, "1".into()),
            (Field::ACTION_TRACKER_ID, "2".into()),
            (Field::MEDIA_PARTNER_ID, "3".into()),
            (Field::CURRENCY_CODE, "USD".into()),
        ];
        let draft = OrderDraft {
            order_id: order.into(),
            campaign_id: Some("1".into()),
            event: Some((Field::ACTION_TRACKER_ID, "2".into())),
            order: FieldSet::from_pairs([
                (Field::ORDER_ID, order),
                (Field::EVENT_DATE, "2025-01-01T00:00:00Z"),
            ]),
            items: vec![(
                line,
                FieldSet::from_pairs([(Field::ITEM_SKU, sku), (Field::ITEM_SUBTOTAL, "1")]),
            )],
            lines: vec![LineRef {
                line,
                hash: LineHash::of(format!("{order}{sku}").as_bytes()),
            }],
            problems: vec![],
        };
        let c = validate(draft, &rules).unwrap();
        let body = crate::form::encode(&c);
        (c, body)
    }

    fn known(
        c: &(Conversion, String),
        state: ConvState,
        same: bool,
    ) -> HashMap<ConversionKey, Known> {
        let payload_hash = if same {
            payload_hash(&c.1)
        } else {
            "other".into()
        };
        HashMap::from([(
            c.0.key().clone(),
            Known {
                id: 7,
                state,
                payload_hash,
                file_id: 1,
            },
        )])
    }

    fn decide(c: &(Conversion, String), k: &HashMap<ConversionKey, Known>, mode: Mode) -> Plan {
        plan(
            std::slice::from_ref(c),
            &[],
            &[],
            &[],
            &Refused::default(),
            k,
            &HashSet::new(),
            mode,
            None,
        )
    }

    #[test]
    fn a_resumed_file_keeps_what_its_recorded_part_queued_as_its_own() {
        let c = conversion("A", "X", 2);
        for state in [ConvState::Pending, ConvState::Accepted, ConvState::Rejected] {
            let k = known(&c, state, true);
            let own = |resuming| {
                plan(
                    std::slice::from_ref(&c),
                    &[],
                    &[],
                    &[],
                    &Refused::default(),
                    &k,
                    &HashSet::new(),
                    Mode::Normal,
                    resuming,
                )
            };
            // The same file, resumed: its own line, not queued again.
            let p = own(Some(1));
            assert!(p.send.is_empty(), "{state:?}");
            assert_eq!(p.lines[0].outcome, LineOutcome::Sent, "{state:?}");
            assert_eq!(p.lines[0].conversion, Some(ConvRef::Existing(7)));
            // Another file with the same order: as before.
            let p = own(Some(2));
            assert_ne!(p.lines[0].outcome, LineOutcome::Sent, "{state:?}");
        }
    }

    #[test]
    fn new_keys_are_sent() {
        let c = conversion("A", "X", 2);
        let p = decide(&c, &HashMap::new(), Mode::Normal);
        assert_eq!(p.send.len(), 1);
        assert!(p.send[0].existing.is_none());
        assert_eq!(p.lines[0].outcome, LineOutcome::Sent);
    }

    #[test]
    fn accepted_with_the_same_content_is_never_sent_again() {
        let c = conversion("A", "X", 2);
        let p = decide(&c, &known(&c, ConvState::Accepted, true), Mode::Normal);
        assert!(p.send.is_empty());
        assert_eq!(p.already_sent, 1);
        // Not on a plain replay either.
        let p = decide(
            &c,
            &known(&c, ConvState::Accepted, true),
            Mode::Replay {
                resend_accepted: false,
            },
        );
        assert!(p.send.is_empty());
        // Only when explicitly asked.
        let p = decide(
            &c,
            &known(&c, ConvState::Accepted, true),
            Mode::Replay {
                resend_accepted: true,
            },
        );
        assert_eq!(p.send.len(), 1);
        assert_eq!(p.send[0].existing, Some(7));
        assert_eq!(p.resent_accepted, 1);
    }

    #[test]
    fn accepted_with_new_content_is_reported_not_sent() {
        let c = conversion("A", "Y", 5);
        let p = decide(&c, &known(&c, ConvState::Accepted, false), Mode::Normal);
        assert!(p.send.is_empty());
        assert_eq!(p.changed.len(), 1);
        assert_eq!(p.changed[0].new_lines, vec![5]);
        assert_eq!(p.lines[0].outcome, LineOutcome::ChangedAfterSent);
        assert!(p.lines[0]
            .reason
            .as_deref()
            .unwrap()
            .starts_with("order changed after it was sent; adjust it in impact"));
    }

    #[test]
    fn rejected_goes_again_only_when_fixed_or_replayed() {
        let c = conversion("A", "X", 2);
        let same = known(&c, ConvState::Rejected, true);
        assert!(decide(&c, &same, Mode::Normal).send.is_empty());
        assert_eq!(decide(&c, &same, Mode::Normal).already_rejected, 1);
        assert_eq!(
            decide(
                &c,
                &same,
                Mode::Replay {
                    resend_accepted: false
                }
            )
            .send
            .len(),
            1
        );
        assert_eq!(
            decide(&c, &known(&c, ConvState::Rejected, false), Mode::Normal)
                .send
                .len(),
            1
        );
    }

    #[test]
    fn pending_is_left_to_its_sender() {
        let c = conversion("A", "X", 2);
        let p = decide(
            &c,
            &known(&c, ConvState::Pending, false),
            Mode::Replay {
                resend_accepted: true,
            },
        );
        assert!(p.send.is_empty());
        assert_eq!(p.already_pending, 1);
    }
}
