//! Incoming sync (Close → Hull) logic shared by ingest, the worker and the scheduler: the Close
//! webhook subscription (events, delivery path) and the translation of Close events (webhook
//! deliveries or the event log) into the work they call for.

use serde_json::Value;

use crate::jobs::{EntityKind, Job};

/// The `(object_type, action)` pairs a connector subscribes to.
pub const WEBHOOK_EVENTS: &[(&str, &str)] = &[
    ("lead", "created"),
    ("lead", "updated"),
    ("lead", "deleted"),
    ("lead", "merged"),
    ("contact", "created"),
    ("contact", "updated"),
    ("contact", "deleted"),
];

/// The `(object_type, action)` pairs read from the event log during incremental fetches (the
/// safety net for deletions and merges; creations and updates are found by the lead search).
pub const EVENT_LOG_ACTIONS: &[(&str, &str)] = &[
    ("lead", "deleted"),
    ("lead", "merged"),
    ("contact", "deleted"),
];

/// Path (under ingest's public URL) that receives a connector's Close webhooks.
pub fn webhook_path(connector_id: &str) -> String {
    format!("/webhooks/close/{connector_id}")
}

/// The full delivery URL of a connector's webhooks for ingest's public base URL.
pub fn webhook_url(public_url: &str, connector_id: &str) -> String {
    format!(
        "{}{}",
        public_url.trim_end_matches('/'),
        webhook_path(connector_id)
    )
}

/// What a Close event asks of the incoming sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseChange {
    /// The lead (or one of its contacts) changed: read it again and write it to Hull.
    Refresh {
        /// Close lead id.
        lead_id: String,
    },
    /// A lead or contact is gone.
    Deleted {
        /// `Account` for a lead, `User` for a contact.
        kind: EntityKind,
        /// Close id.
        close_id: String,
        /// When (the event's `date_updated`, else `date_created`).
        at: String,
        /// For a lead absorbed by a merge: the surviving lead.
        merged_into: Option<String>,
    },
}

impl CloseChange {
    /// The job that carries this change out.
    pub fn into_job(self) -> Job {
        match self {
            CloseChange::Refresh { lead_id } => Job::RefreshLead { lead_id },
            CloseChange::Deleted {
                kind,
                close_id,
                at,
                merged_into,
            } => Job::CloseDeleted {
                kind,
                close_id,
                at,
                merged_into,
            },
        }
    }
}

fn text<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// The changes a Close event calls for (empty for events the sync does not care about).
///
/// - `lead` `created`/`updated` → refresh that lead; `contact` `created`/`updated` → refresh
///   the contact's lead;
/// - `lead` `deleted` → the account is marked deleted (`closeio/deleted_at`), or, when the
///   deletion is the source side of a merge, merged (`closeio/merged_into`);
/// - `contact` `deleted` → the user is marked deleted;
/// - `lead` `merged` (emitted on the destination) → the source is marked merged and the
///   destination, which received the source's contacts, is refreshed.
pub fn changes_from_event(event: &Value) -> Vec<CloseChange> {
    let (Some(object_type), Some(action)) = (text(event, "/object_type"), text(event, "/action"))
    else {
        return Vec::new();
    };
    let object_id = text(event, "/object_id");
    let at = text(event, "/date_updated")
        .or_else(|| text(event, "/date_created"))
        .unwrap_or_default()
        .to_string();
    let merge_source = text(event, "/meta/merge_source_lead_id");
    let merge_destination = text(event, "/meta/merge_destination_lead_id");
    match (object_type, action) {
        ("lead", "created" | "updated") => object_id
            .map(|id| {
                vec![CloseChange::Refresh {
                    lead_id: id.to_string(),
                }]
            })
            .unwrap_or_default(),
        ("contact", "created" | "updated") => text(event, "/lead_id")
            .or_else(|| text(event, "/data/lead_id"))
            .map(|id| {
                vec![CloseChange::Refresh {
                    lead_id: id.to_string(),
                }]
            })
            .unwrap_or_default(),
        ("lead", "deleted") => object_id
            .map(|id| {
                let merged_into = merge_destination
                    .filter(|d| *d != id && merge_source == Some(id))
                    .map(str::to_string);
                vec![CloseChange::Deleted {
                    kind: EntityKind::Account,
                    close_id: id.to_string(),
                    at: at.clone(),
                    merged_into,
                }]
            })
            .unwrap_or_default(),
        ("contact", "deleted") => object_id
            .map(|id| {
                vec![CloseChange::Deleted {
                    kind: EntityKind::User,
                    close_id: id.to_string(),
                    at: at.clone(),
                    merged_into: None,
                }]
            })
            .unwrap_or_default(),
        ("lead", "merged") => {
            let destination = merge_destination.or(object_id);
            let mut out = Vec::new();
            if let (Some(source), Some(destination)) = (merge_source, destination) {
                if source != destination {
                    out.push(CloseChange::Deleted {
                        kind: EntityKind::Account,
                        close_id: source.to_string(),
                        at: at.clone(),
                        merged_into: Some(destination.to_string()),
                    });
                }
            }
            if let Some(destination) = destination {
                out.push(CloseChange::Refresh {
                    lead_id: destination.to_string(),
                });
            }
            out
        }
        _ => Vec::new(),
    }
}

/// The de-duplication key of an event: its id and `date_updated` (Close merges recent events
/// of one object into one, keeping the id and bumping `date_updated`, so a merged event is new
/// work while a redelivery or a replay of the same version is not).
pub fn event_key(event: &Value) -> Option<String> {
    let id = text(event, "/id")?;
    let version = text(event, "/date_updated")
        .or_else(|| text(event, "/date_created"))
        .unwrap_or_default();
    Some(format!("{id}@{version}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lead_and_contact_updates_refresh_the_lead() {
        let e = json!({"object_type": "lead", "action": "updated", "object_id": "lead_1", "lead_id": "lead_1"});
        assert_eq!(
            changes_from_event(&e),
            vec![CloseChange::Refresh {
                lead_id: "lead_1".into()
            }]
        );
        let e = json!({"object_type": "contact", "action": "created", "object_id": "cont_1", "lead_id": "lead_2"});
        assert_eq!(
            changes_from_event(&e),
            vec![CloseChange::Refresh {
                lead_id: "lead_2".into()
            }]
        );
        let e = json!({"object_type": "activity.note", "action": "created", "object_id": "acti_1"});
        assert!(changes_from_event(&e).is_empty());
        assert!(changes_from_event(&json!("garbage")).is_empty());
    }

    #[test]
    fn deletions_and_merges() {
        let e = json!({"object_type": "contact", "action": "deleted", "object_id": "cont_1", "date_updated": "2024-01-01T00:00:00"});
        assert_eq!(
            changes_from_event(&e),
            vec![CloseChange::Deleted {
                kind: EntityKind::User,
                close_id: "cont_1".into(),
                at: "2024-01-01T00:00:00".into(),
                merged_into: None
            }]
        );
        let meta = json!({"merge_source_lead_id": "lead_s", "merge_destination_lead_id": "lead_d"});
        let e = json!({"object_type": "lead", "action": "deleted", "object_id": "lead_s", "date_updated": "t", "meta": meta});
        assert_eq!(
            changes_from_event(&e),
            vec![CloseChange::Deleted {
                kind: EntityKind::Account,
                close_id: "lead_s".into(),
                at: "t".into(),
                merged_into: Some("lead_d".into())
            }]
        );
        let e = json!({"object_type": "lead", "action": "merged", "object_id": "lead_d", "date_updated": "t", "meta": meta});
        let changes = changes_from_event(&e);
        assert_eq!(changes.len(), 2);
        assert_eq!(
            changes[1],
            CloseChange::Refresh {
                lead_id: "lead_d".into()
            }
        );
        assert!(
            matches!(changes[0].clone().into_job(), Job::CloseDeleted { merged_into: Some(ref d), .. } if d == "lead_d")
        );
    }

    #[test]
    fn event_key_includes_the_version() {
        let a = json!({"id": "ev_1", "date_updated": "t1"});
        let b = json!({"id": "ev_1", "date_updated": "t2"});
        assert_ne!(event_key(&a), event_key(&b));
        assert_eq!(event_key(&json!({})), None);
        assert_eq!(webhook_url("http://x/", "c1"), "http://x/webhooks/close/c1");
    }
}
