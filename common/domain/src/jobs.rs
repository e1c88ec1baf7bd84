//! The jobs that travel over RabbitMQ between ingest, the scheduler and the workers.
//!
//! A job is wrapped in an [`Envelope`] (id, connector, attempt, creation time). The payload of
//! an outgoing job is the Hull message as received, validated by ingest, so a worker can apply
//! the connector's *current* settings and mapping when it runs.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// Which queue a job goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueKind {
    /// Hull → Close writes.
    Outgoing,
    /// Close → Hull reads (fetch pages, lead refreshes).
    Incoming,
}

impl QueueKind {
    /// Every queue kind.
    pub const ALL: [QueueKind; 2] = [QueueKind::Outgoing, QueueKind::Incoming];

    /// The routing key and queue name suffix.
    pub fn as_str(&self) -> &'static str {
        match self {
            QueueKind::Outgoing => "outgoing",
            QueueKind::Incoming => "incoming",
        }
    }
}

/// A Hull entity kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    /// A Hull account (a Close lead).
    Account,
    /// A Hull user (a Close contact).
    User,
}

impl EntityKind {
    /// `account` or `user`.
    pub fn as_str(&self) -> &'static str {
        match self {
            EntityKind::Account => "account",
            EntityKind::User => "user",
        }
    }
}

/// One Hull `account:update` or `user:update` message to push to Close.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutgoingMessage {
    /// The Hull notification (or batch) it came from, for logs.
    pub notification_id: String,
    /// Exports bypass the segment filters.
    #[serde(default)]
    pub is_export: bool,
    /// The message exactly as Hull sent it (`account`, `user`, `segments`, `account_segments`,
    /// `changes`, `message_id`).
    pub message: Value,
}

/// What a worker has to do. On the wire, an object with its kind in `type` (first) and its
/// fields beside it; see the `Deserialize` impl below for how it is read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self", tag = "type", rename_all = "snake_case")]
pub enum Job {
    /// Push a Hull account to Close as a lead.
    OutgoingAccount(OutgoingMessage),
    /// Push a Hull user to Close as a contact.
    OutgoingUser(OutgoingMessage),
    /// Plan a fetch run (split it into windows, apply the event log) and start its pages.
    FetchStart {
        /// The run (a row of `fetch_runs`).
        run_id: Uuid,
    },
    /// Read one page of a fetch run's window and write it to Hull.
    FetchPage {
        /// The run.
        run_id: Uuid,
        /// The window within the run.
        window: i32,
        /// Sequence number of the page within the window (stale numbers are ignored).
        seq: i32,
    },
    /// Read one lead (with its contacts) from Close and write it to Hull (webhooks).
    RefreshLead {
        /// Close lead id.
        lead_id: String,
    },
    /// A lead or contact deleted (or a lead merged away) in Close: mark it in Hull.
    CloseDeleted {
        /// `account` for a lead, `user` for a contact.
        kind: EntityKind,
        /// Close lead or contact id.
        close_id: String,
        /// When it happened (Close timestamp).
        at: String,
        /// For a lead absorbed by a merge: the surviving lead.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        merged_into: Option<String>,
    },
}

impl Serialize for Job {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Job::serialize(self, s)
    }
}

/// An outgoing job is read straight from the wire when its `type` comes first, as it is
/// written (and as Postgres orders a `jsonb` copy's keys): serde's derived reading of an
/// internally tagged enum first copies the whole object — the Hull message with it — into a
/// buffer of its own, then reads that (a tenth of an unchanged entity's CPU in a worker).
/// Any other order, and the small incoming jobs, take the derived path.
impl<'de> Deserialize<'de> for Job {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(JobVisitor)
    }
}

struct JobVisitor;

impl<'de> serde::de::Visitor<'de> for JobVisitor {
    type Value = Job;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a job: an object with its kind in `type`")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Job, A::Error> {
        use serde::de::Error;
        let mut rest = serde_json::Map::new();
        if let Some(first) = map.next_key::<String>()? {
            let value: Value = map.next_value()?;
            if first == "type" {
                let outgoing = match value.as_str() {
                    Some("outgoing_account") => Some(Job::OutgoingAccount as fn(_) -> _),
                    Some("outgoing_user") => Some(Job::OutgoingUser as fn(_) -> _),
                    _ => None,
                };
                if let Some(job) = outgoing {
                    let deserializer = serde::de::value::MapAccessDeserializer::new(map);
                    return OutgoingMessage::deserialize(deserializer).map(job);
                }
            }
            rest.insert(first, value);
        }
        while let Some((k, v)) = map.next_entry::<String, Value>()? {
            rest.insert(k, v);
        }
        Job::deserialize(Value::Object(rest)).map_err(A::Error::custom)
    }
}

impl Job {
    /// The queue this job belongs to.
    pub fn queue(&self) -> QueueKind {
        match self {
            Job::OutgoingAccount(_) | Job::OutgoingUser(_) => QueueKind::Outgoing,
            Job::FetchStart { .. }
            | Job::FetchPage { .. }
            | Job::RefreshLead { .. }
            | Job::CloseDeleted { .. } => QueueKind::Incoming,
        }
    }

    /// The Hull entity an outgoing job writes: its kind and sync-state key.
    pub fn outgoing_entity(&self) -> Option<(EntityKind, String)> {
        match self {
            Job::OutgoingAccount(m) => m
                .message
                .get("account")
                .and_then(Value::as_object)
                .and_then(crate::mapping::account_key)
                .map(|k| (EntityKind::Account, k)),
            Job::OutgoingUser(m) => m
                .message
                .pointer("/user/id")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(|id| (EntityKind::User, id.to_string())),
            _ => None,
        }
    }

    /// A short name for logs and metrics.
    /// The name of every kind of job, as [`Job::name`] gives them.
    pub const NAMES: [&'static str; 6] = [
        "outgoing_account",
        "outgoing_user",
        "fetch_start",
        "fetch_page",
        "refresh_lead",
        "close_deleted",
    ];

    /// The job's kind, as logs, metrics and dead letters name it (one of [`Job::NAMES`]).
    pub fn name(&self) -> &'static str {
        match self {
            Job::OutgoingAccount(_) => "outgoing_account",
            Job::OutgoingUser(_) => "outgoing_user",
            Job::FetchStart { .. } => "fetch_start",
            Job::FetchPage { .. } => "fetch_page",
            Job::RefreshLead { .. } => "refresh_lead",
            Job::CloseDeleted { .. } => "close_deleted",
        }
    }

    /// The Hull entity the job is about (`account:<id>` or `user:<id>`), when there is one.
    pub fn entity_key(&self) -> Option<String> {
        match self {
            Job::OutgoingAccount(m) => m
                .message
                .get("account")
                .and_then(Value::as_object)
                .and_then(crate::mapping::account_key)
                .map(|key| format!("account:{key}")),
            Job::OutgoingUser(m) => m
                .message
                .pointer("/user/id")
                .and_then(Value::as_str)
                .map(|id| format!("user:{id}")),
            Job::FetchStart { run_id } | Job::FetchPage { run_id, .. } => {
                Some(format!("fetch:{run_id}"))
            }
            Job::RefreshLead { lead_id } => Some(format!("lead:{lead_id}")),
            Job::CloseDeleted {
                kind: EntityKind::Account,
                close_id,
                ..
            } => Some(format!("lead:{close_id}")),
            Job::CloseDeleted {
                kind: EntityKind::User,
                close_id,
                ..
            } => Some(format!("contact:{close_id}")),
        }
    }
}

/// A job with its bookkeeping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique id; stays the same across retries and replays.
    pub id: Uuid,
    /// The Hull connector id the job runs for.
    pub connector_id: String,
    /// How many times it has been attempted before (0 for a new job).
    #[serde(default)]
    pub attempt: u32,
    /// How many times it was deferred because its tenant's Close budget was busy (a deferral
    /// burns no attempt).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub deferrals: u32,
    /// The Close endpoint groups whose slots were booked for its returns when it was deferred
    /// (its requests of those groups are not refused for the booking, and wait for their
    /// slot; a slot further away than a short bound defers the job again until then).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub booked_groups: Vec<String>,
    /// Whether it was republished from its row in `retries` (a retry, a deferral's return or
    /// an unparked job): only such a job has a row to clear when it succeeds. A job published
    /// by ingest or the scheduler, or replayed from a dead letter, has none.
    #[serde(default, skip_serializing_if = "is_false")]
    pub from_retries: bool,
    /// When it was first created.
    pub created_at: DateTime<Utc>,
    /// The work.
    pub job: Job,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Envelope {
    /// A new envelope for `job`.
    pub fn new(connector_id: impl Into<String>, job: Job) -> Self {
        Envelope {
            id: Uuid::new_v4(),
            connector_id: connector_id.into(),
            attempt: 0,
            deferrals: 0,
            booked_groups: Vec::new(),
            from_retries: false,
            created_at: Utc::now(),
            job,
        }
    }

    /// Serialises to the wire form (JSON).
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising a tree of owned JSON values cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses the wire form.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// The most jobs one message carries. A notification's jobs travel together (see
/// [`bundle_messages`]): one delivery, one acknowledgement and one publish confirm for up to
/// this many jobs, instead of one of each per job.
pub const BUNDLE_MAX_JOBS: usize = 50;

/// The most bytes of jobs one bundle carries (a job larger than this travels alone).
pub const BUNDLE_MAX_BYTES: usize = 256 * 1024;

/// One message to publish: its queue, its body, its id (the first job's) and how many jobs it
/// carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The queue it goes to.
    pub queue: QueueKind,
    /// The body: one envelope's wire form, or a bundle (a JSON array of them).
    pub body: Vec<u8>,
    /// The id of its (first) job.
    pub id: Uuid,
    /// How many jobs it carries.
    pub jobs: usize,
}

/// The messages that carry `envelopes`: consecutive jobs of one queue share a bundle (a JSON
/// array of their wire forms) of at most [`BUNDLE_MAX_JOBS`] jobs and [`BUNDLE_MAX_BYTES`];
/// a message of one job is that job's wire form alone, as `bundle == false` makes every one.
pub fn bundle_messages(envelopes: &[Envelope], bundle: bool) -> Vec<Message> {
    let mut messages: Vec<Message> = Vec::new();
    for env in envelopes {
        let bytes = env.to_bytes();
        let queue = env.job.queue();
        match messages.last_mut() {
            Some(m)
                if bundle
                    && m.queue == queue
                    && m.jobs < BUNDLE_MAX_JOBS
                    && m.body.len() + bytes.len() + 3 <= BUNDLE_MAX_BYTES =>
            {
                if m.jobs == 1 {
                    m.body.insert(0, b'[');
                }
                m.body.push(b',');
                m.body.extend_from_slice(&bytes);
                m.jobs += 1;
            }
            _ => messages.push(Message {
                queue,
                body: bytes,
                id: env.id,
                jobs: 1,
            }),
        }
    }
    for m in &mut messages {
        if m.jobs > 1 {
            m.body.push(b']');
        }
    }
    messages
}

/// A job of a delivered message that could not be read: its own bytes and why.
#[derive(Debug)]
pub struct Unreadable {
    /// The job's bytes as received.
    pub bytes: Vec<u8>,
    /// Why it cannot be read.
    pub error: serde_json::Error,
}

/// What a delivered message holds: one job, or a bundle of them.
#[derive(Debug)]
pub enum Delivered {
    /// A message of one job (or one that cannot be read at all).
    One(Result<Envelope, serde_json::Error>),
    /// A bundle: each job read on its own, so one that cannot be read does not keep the
    /// others from running.
    Bundle(Vec<Result<Envelope, Unreadable>>),
}

impl Delivered {
    /// Reads a message's body (see [`bundle_messages`]).
    pub fn read(body: &[u8]) -> Delivered {
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'[') {
            return Delivered::One(Envelope::from_bytes(body));
        }
        let items: Vec<&serde_json::value::RawValue> = match serde_json::from_slice(body) {
            Ok(items) => items,
            Err(e) => return Delivered::One(Err(e)),
        };
        Delivered::Bundle(
            items
                .into_iter()
                .map(|raw| {
                    Envelope::from_bytes(raw.get().as_bytes()).map_err(|error| Unreadable {
                        bytes: raw.get().as_bytes().to_vec(),
                        error,
                    })
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wire_form_round_trips() {
        let env = Envelope::new(
            "c1",
            Job::OutgoingAccount(OutgoingMessage {
                notification_id: "n1".into(),
                is_export: false,
                message: json!({"account": {"id": "a1", "domain": "acme.com"}}),
            }),
        );
        let back = Envelope::from_bytes(&env.to_bytes()).unwrap();
        assert_eq!(back, env);
        assert_eq!(back.job.entity_key().as_deref(), Some("account:a1"));
        assert_eq!(back.job.queue(), QueueKind::Outgoing);
        let v: Value = serde_json::from_slice(&env.to_bytes()).unwrap();
        assert_eq!(v["job"]["type"], "outgoing_account");
        // Only a job republished from `retries` says so (older messages lack the field).
        assert!(v.get("from_retries").is_none());
        let mut retried = env.clone();
        retried.from_retries = true;
        assert!(
            Envelope::from_bytes(&retried.to_bytes())
                .unwrap()
                .from_retries
        );
    }

    fn account_job(id: &str) -> Envelope {
        Envelope::new(
            "c1",
            Job::OutgoingAccount(OutgoingMessage {
                notification_id: "n1".into(),
                is_export: false,
                message: json!({"account": {"id": id}}),
            }),
        )
    }

    fn read_all(m: &Message) -> Vec<Envelope> {
        match Delivered::read(&m.body) {
            Delivered::One(env) => vec![env.expect("readable")],
            Delivered::Bundle(items) => items.into_iter().map(|e| e.expect("readable")).collect(),
        }
    }

    #[test]
    fn jobs_of_one_queue_travel_in_bundles_that_read_back_in_order() {
        let fetch = Envelope::new(
            "c1",
            Job::FetchStart {
                run_id: Uuid::new_v4(),
            },
        );
        let mut envs: Vec<Envelope> = (0..BUNDLE_MAX_JOBS + 3)
            .map(|i| account_job(&format!("a{i}")))
            .collect();
        envs.push(fetch.clone());
        envs.push(account_job("last"));
        let messages = bundle_messages(&envs, true);
        // A full bundle, the three left over, the incoming job alone, then the last one alone.
        let shape: Vec<(QueueKind, usize)> = messages.iter().map(|m| (m.queue, m.jobs)).collect();
        assert_eq!(
            shape,
            vec![
                (QueueKind::Outgoing, BUNDLE_MAX_JOBS),
                (QueueKind::Outgoing, 3),
                (QueueKind::Incoming, 1),
                (QueueKind::Outgoing, 1),
            ]
        );
        let back: Vec<Envelope> = messages.iter().flat_map(read_all).collect();
        assert_eq!(back, envs);
        assert_eq!(messages[0].id, envs[0].id);
        // A message of one job is that job's own wire form, as every message was before bundles.
        assert_eq!(messages[2].body, fetch.to_bytes());
        assert!(matches!(
            Delivered::read(&messages[3].body),
            Delivered::One(Ok(_))
        ));
        // Unbundled: one message per job.
        let singles = bundle_messages(&envs, false);
        assert_eq!(singles.len(), envs.len());
        assert!(singles.iter().all(|m| m.jobs == 1));
    }

    #[test]
    fn a_bundle_stays_under_its_byte_bound_and_a_large_job_travels_alone() {
        let big = |id: &str| {
            let mut env = account_job(id);
            if let Job::OutgoingAccount(m) = &mut env.job {
                m.message["account"]["notes"] = json!("x".repeat(BUNDLE_MAX_BYTES / 3));
            }
            env
        };
        let envs = vec![big("a"), big("b"), big("c"), big("d")];
        let messages = bundle_messages(&envs, true);
        assert!(
            messages.iter().all(|m| m.body.len() <= BUNDLE_MAX_BYTES),
            "bounded"
        );
        assert_eq!(messages.iter().map(|m| m.jobs).sum::<usize>(), 4);
        assert_eq!(messages.iter().flat_map(read_all).collect::<Vec<_>>(), envs);
        let huge = {
            let mut env = account_job("huge");
            if let Job::OutgoingAccount(m) = &mut env.job {
                m.message["account"]["notes"] = json!("x".repeat(BUNDLE_MAX_BYTES));
            }
            env
        };
        let messages = bundle_messages(&[account_job("small"), huge.clone()], true);
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[1].body, huge.to_bytes());
    }

    #[test]
    fn an_unreadable_job_in_a_bundle_leaves_the_others_readable() {
        let (a, b) = (account_job("a"), account_job("b"));
        let body = format!(
            "[{},{{\"id\":\"not a uuid\"}},{}]",
            String::from_utf8(a.to_bytes()).unwrap(),
            String::from_utf8(b.to_bytes()).unwrap()
        );
        let Delivered::Bundle(items) = Delivered::read(body.as_bytes()) else {
            panic!("a bundle");
        };
        assert_eq!(items.len(), 3);
        assert_eq!(items[0].as_ref().expect("first"), &a);
        let bad = items[1].as_ref().expect_err("the second is unreadable");
        assert_eq!(bad.bytes, br#"{"id":"not a uuid"}"#.to_vec());
        assert_eq!(items[2].as_ref().expect("third"), &b);
        // A body that is not even a list of JSON values is one unreadable message.
        assert!(matches!(Delivered::read(b"[{"), Delivered::One(Err(_))));
        assert!(matches!(
            Delivered::read(b"nonsense"),
            Delivered::One(Err(_))
        ));
    }

    #[test]
    fn incoming_jobs_go_to_the_incoming_queue() {
        let run_id = Uuid::new_v4();
        let env = Envelope::new(
            "c1",
            Job::FetchPage {
                run_id,
                window: 2,
                seq: 7,
            },
        );
        let back = Envelope::from_bytes(&env.to_bytes()).unwrap();
        assert_eq!(back, env);
        assert_eq!(back.job.queue(), QueueKind::Incoming);
        assert_eq!(back.job.entity_key(), Some(format!("fetch:{run_id}")));
        let v: Value = serde_json::from_slice(&env.to_bytes()).unwrap();
        assert_eq!(v["job"]["type"], "fetch_page");
        let del = Job::CloseDeleted {
            kind: EntityKind::User,
            close_id: "cont_1".into(),
            at: "t".into(),
            merged_into: None,
        };
        assert_eq!(del.entity_key().as_deref(), Some("contact:cont_1"));
        assert_eq!(del.name(), "close_deleted");
    }

    /// The wire form is read the same whatever the order of a job's keys, from bytes or from
    /// a `jsonb` copy, and a job of an unknown kind or without its fields is an error.
    #[test]
    fn a_job_reads_the_same_whatever_its_key_order() {
        let message = json!({"user": {"id": "u1"}, "account": {"domain": "acme.com"}});
        let expected = Job::OutgoingUser(OutgoingMessage {
            notification_id: "n1".into(),
            is_export: true,
            message: message.clone(),
        });
        let orders = [
            json!({"type": "outgoing_user", "notification_id": "n1", "is_export": true, "message": message}),
            json!({"message": message, "is_export": true, "type": "outgoing_user", "notification_id": "n1"}),
            json!({"notification_id": "n1", "message": message, "is_export": true, "type": "outgoing_user"}),
        ];
        for job in orders {
            let bytes = serde_json::to_vec(&job).unwrap();
            assert_eq!(
                serde_json::from_slice::<Job>(&bytes).unwrap(),
                expected,
                "{job}"
            );
            assert_eq!(
                serde_json::from_value::<Job>(job.clone()).unwrap(),
                expected,
                "{job}"
            );
        }
        let fetch = Job::FetchPage {
            run_id: Uuid::nil(),
            window: 1,
            seq: 2,
        };
        let back: Job = serde_json::from_slice(&serde_json::to_vec(&fetch).unwrap()).unwrap();
        assert_eq!(back, fetch);
        for bad in [
            json!({"type": "outgoing_lead", "notification_id": "n1", "message": {}}),
            json!({"type": "outgoing_user", "message": {}}),
            json!({"notification_id": "n1", "message": {}}),
            json!({"type": 7}),
            json!([]),
        ] {
            assert!(serde_json::from_value::<Job>(bad.clone()).is_err(), "{bad}");
            let bytes = serde_json::to_vec(&bad).unwrap();
            assert!(serde_json::from_slice::<Job>(&bytes).is_err(), "{bad}");
        }
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(Envelope::from_bytes(b"{").is_err());
        assert!(Envelope::from_bytes(br#"{"id":"x"}"#).is_err());
    }
}
