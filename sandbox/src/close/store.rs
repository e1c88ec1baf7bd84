//! The simulator's state and the write operations shared by the API and the `ui_*` calls.
//! Every write bumps `date_updated`, appends events and queues webhook deliveries.

use std::collections::{BTreeMap, HashMap};

use rand::rngs::StdRng;
use serde_json::{json, Map, Value};

use super::error::{nested, ApiError, ApiResult};
use super::model::{
    apply_contact_fields, apply_lead_fields, new_id, render_contact, render_lead, resolve_status,
    Contact, Lead, ObjectKind, Org,
};
use super::time::{self, Micros};

/// Who performs a write, and the request it came with (recorded on events).
#[derive(Debug, Clone)]
pub struct Actor {
    /// Organization index.
    pub org: usize,
    /// Acting user.
    pub user_id: String,
    /// API key id, `None` for UI changes.
    pub api_key_id: Option<String>,
    /// `req_…` id shared by all events of one request.
    pub request_id: String,
    /// HTTP method of the request.
    pub method: String,
    /// Request path (`/api/v1/...`).
    pub path: String,
}

/// One entry of the event log.
#[derive(Debug, Clone)]
pub struct Event {
    /// Append order (also `date_updated` order).
    pub seq: u64,
    /// Organization index.
    pub org: usize,
    /// `ev_…` id.
    pub id: String,
    /// `lead`, `contact`, ...
    pub object_type: String,
    /// Id of the object.
    pub object_id: String,
    /// `created`, `updated`, `deleted`, `merged`.
    pub action: String,
    /// Lead the object belongs to.
    pub lead_id: Option<String>,
    /// Acting user.
    pub user_id: Option<String>,
    /// Request id.
    pub request_id: String,
    /// Event time.
    pub date_updated: Micros,
    /// The event as the API returns it.
    pub json: Value,
}

/// A webhook subscription.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// `whsub_…` id.
    pub id: String,
    /// Organization index.
    pub org: usize,
    /// Delivery URL.
    pub url: String,
    /// `{object_type, action, extra_filter}` entries.
    pub events: Vec<Value>,
    /// `active` or `paused`.
    pub status: String,
    /// Stored, not used (deliveries go to plain HTTP receivers).
    pub verify_ssl: bool,
    /// 64 hex chars; the HMAC key is its hex-decoded bytes.
    pub signature_key: String,
    /// Creating user.
    pub created_by: String,
    /// Creation time.
    pub date_created: Micros,
    /// Last update time.
    pub date_updated: Micros,
}

impl Subscription {
    /// Whether an event of this type and action is subscribed.
    pub fn matches(&self, object_type: &str, action: &str) -> bool {
        self.status == "active"
            && self.events.iter().any(|e| {
                e.get("object_type").and_then(Value::as_str) == Some(object_type)
                    && e.get("action").and_then(Value::as_str) == Some(action)
            })
    }
}

/// A webhook delivery waiting to be sent.
#[derive(Debug, Clone)]
pub struct PendingDelivery {
    /// Subscription id.
    pub subscription_id: String,
    /// Target URL.
    pub url: String,
    /// Hex signature key.
    pub signature_key: String,
    /// Event payload.
    pub event: Value,
}

/// What an event is about.
struct Subject<'a> {
    kind: ObjectKind,
    object_id: &'a str,
    lead_id: &'a str,
    action: &'a str,
    meta: &'a [(&'a str, &'a str)],
}

/// The whole simulated Close account space.
#[derive(Debug)]
pub struct Store {
    /// Organizations.
    pub orgs: Vec<Org>,
    /// API key → (org index, key index).
    pub key_index: HashMap<String, (usize, usize)>,
    /// Leads by id.
    pub leads: HashMap<String, Lead>,
    /// Lead ids in insertion order.
    pub lead_order: BTreeMap<u64, String>,
    /// Contacts by id.
    pub contacts: HashMap<String, Contact>,
    /// Contact ids in insertion order.
    pub contact_order: BTreeMap<u64, String>,
    /// Event log, oldest first.
    pub events: Vec<Event>,
    /// Webhook subscriptions.
    pub webhooks: Vec<Subscription>,
    /// Webhook deliveries queued by writes, drained by the server.
    pub outbox: Vec<PendingDelivery>,
    /// Id generator.
    pub rng: StdRng,
    seq: u64,
    last_ts: Micros,
}

impl Store {
    /// A store with the given organizations and no objects.
    pub fn new(orgs: Vec<Org>, rng: StdRng) -> Self {
        let mut key_index = HashMap::new();
        for (oi, org) in orgs.iter().enumerate() {
            for (ki, key) in org.api_keys.iter().enumerate() {
                key_index.insert(key.key.clone(), (oi, ki));
            }
        }
        Self {
            orgs,
            key_index,
            leads: HashMap::new(),
            lead_order: BTreeMap::new(),
            contacts: HashMap::new(),
            contact_order: BTreeMap::new(),
            events: Vec::new(),
            webhooks: Vec::new(),
            outbox: Vec::new(),
            rng,
            seq: 0,
            last_ts: 0,
        }
    }

    /// A fresh id with `prefix`.
    pub fn id(&mut self, prefix: &str, len: usize) -> String {
        new_id(&mut self.rng, prefix, len)
    }

    /// The next insertion sequence number.
    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Current time, strictly greater than every timestamp handed out before.
    pub fn next_ts(&mut self) -> Micros {
        let ts = time::now_micros().max(self.last_ts + 1);
        self.last_ts = ts;
        ts
    }

    /// Makes sure later timestamps are after `ts` (used when loading seed data).
    pub fn observe_ts(&mut self, ts: Micros) {
        self.last_ts = self.last_ts.max(ts);
    }

    /// Stores a lead (seed loading and creates).
    pub fn insert_lead(&mut self, lead: Lead) {
        self.lead_order.insert(lead.seq, lead.id.clone());
        self.leads.insert(lead.id.clone(), lead);
    }

    /// Stores a contact (seed loading and creates).
    pub fn insert_contact(&mut self, contact: Contact) {
        self.contact_order.insert(contact.seq, contact.id.clone());
        self.contacts.insert(contact.id.clone(), contact);
    }

    fn remove_lead(&mut self, id: &str) -> Option<Lead> {
        let lead = self.leads.remove(id)?;
        self.lead_order.remove(&lead.seq);
        Some(lead)
    }

    fn remove_contact(&mut self, id: &str) -> Option<Contact> {
        let contact = self.contacts.remove(id)?;
        self.contact_order.remove(&contact.seq);
        Some(contact)
    }

    /// A lead of organization `org`, or Close's 404.
    pub fn lead(&self, org: usize, id: &str) -> ApiResult<&Lead> {
        self.leads
            .get(id)
            .filter(|l| l.org == org)
            .ok_or_else(|| ApiError::not_found("Lead"))
    }

    /// A contact of organization `org`, or Close's 404.
    pub fn contact(&self, org: usize, id: &str) -> ApiResult<&Contact> {
        self.contacts
            .get(id)
            .filter(|c| c.org == org)
            .ok_or_else(|| ApiError::not_found("Contact"))
    }

    /// The rendered contacts of a lead.
    pub fn lead_contacts_json(&self, lead: &Lead) -> Vec<Value> {
        let org = &self.orgs[lead.org];
        lead.contact_ids
            .iter()
            .filter_map(|cid| self.contacts.get(cid))
            .map(|c| render_contact(org, c))
            .collect()
    }

    /// A lead as `GET /lead/{id}/` returns it (contacts nested).
    pub fn lead_json(&self, lead: &Lead) -> Value {
        render_lead(
            &self.orgs[lead.org],
            lead,
            Some(self.lead_contacts_json(lead)),
        )
    }

    /// A contact as `GET /contact/{id}/` returns it.
    pub fn contact_json(&self, contact: &Contact) -> Value {
        render_contact(&self.orgs[contact.org], contact)
    }

    fn lead_event_json(&self, lead: &Lead) -> Value {
        render_lead(&self.orgs[lead.org], lead, None)
    }

    /// Appends an event and queues matching webhook deliveries.
    fn emit(
        &mut self,
        actor: &Actor,
        subject: Subject<'_>,
        data: Option<Value>,
        previous_data: Value,
        changed_fields: Vec<String>,
    ) {
        let Subject {
            kind,
            object_id,
            lead_id,
            action,
            meta: extra_meta,
        } = subject;
        let ts = self.next_ts();
        let id = self.id("ev_", 22);
        let seq = self.next_seq();
        let mut meta = Map::new();
        meta.insert("request_method".into(), json!(actor.method));
        meta.insert("request_path".into(), json!(actor.path));
        for (k, v) in extra_meta {
            meta.insert((*k).to_string(), json!(v));
        }
        let org_id = self.orgs[actor.org].id.clone();
        let event_json = json!({
            "id": id,
            "date_created": time::format_event(ts),
            "date_updated": time::format_event(ts),
            "organization_id": org_id,
            "user_id": actor.user_id,
            "request_id": actor.request_id,
            "api_key_id": actor.api_key_id,
            "oauth_client_id": null,
            "oauth_scope": null,
            "object_type": kind.as_str(),
            "object_id": object_id,
            "lead_id": lead_id,
            "action": action,
            "changed_fields": changed_fields,
            "data": data,
            "previous_data": previous_data,
            "meta": meta,
        });
        for sub in &self.webhooks {
            if sub.org == actor.org && sub.matches(kind.as_str(), action) {
                self.outbox.push(PendingDelivery {
                    subscription_id: sub.id.clone(),
                    url: sub.url.clone(),
                    signature_key: sub.signature_key.clone(),
                    event: event_json.clone(),
                });
            }
        }
        self.events.push(Event {
            seq,
            org: actor.org,
            id,
            object_type: kind.as_str().to_string(),
            object_id: object_id.to_string(),
            action: action.to_string(),
            lead_id: Some(lead_id.to_string()),
            user_id: Some(actor.user_id.clone()),
            request_id: actor.request_id.clone(),
            date_updated: ts,
            json: event_json,
        });
    }

    fn emit_update(&mut self, actor: &Actor, subject: Subject<'_>, before: &Value, after: Value) {
        let (changed, previous) = diff(before, &after);
        self.emit(actor, subject, Some(after), previous, changed);
    }

    fn blank_contact(&mut self, actor: &Actor, lead_id: &str) -> Contact {
        let seq = self.next_seq();
        Contact {
            seq,
            id: self.id("cont_", 43),
            org: actor.org,
            lead_id: lead_id.to_string(),
            name: String::new(),
            title: String::new(),
            emails: Vec::new(),
            phones: Vec::new(),
            urls: Vec::new(),
            custom: BTreeMap::new(),
            created_by: actor.user_id.clone(),
            updated_by: actor.user_id.clone(),
            date_created: 0,
            date_updated: 0,
        }
    }

    fn blank_lead(&mut self, actor: &Actor, status_id: String) -> Lead {
        let seq = self.next_seq();
        Lead {
            seq,
            id: self.id("lead_", 43),
            org: actor.org,
            name: String::new(),
            url: None,
            description: String::new(),
            status_id,
            addresses: Vec::new(),
            opportunities: Vec::new(),
            custom: BTreeMap::new(),
            contact_ids: Vec::new(),
            created_by: actor.user_id.clone(),
            updated_by: actor.user_id.clone(),
            date_created: 0,
            date_updated: 0,
        }
    }

    fn default_status(&self, org: usize) -> String {
        self.orgs[org]
            .statuses
            .first()
            .map(|s| s.id.clone())
            .unwrap_or_default()
    }

    /// `POST /lead/`: creates a lead with nested contacts and addresses; returns its id.
    pub fn create_lead(&mut self, actor: &Actor, body: &Map<String, Value>) -> ApiResult<String> {
        let org = &self.orgs[actor.org];
        let status_id = match resolve_status(org, body)? {
            Some(id) => id,
            None => self.default_status(actor.org),
        };
        let mut lead = self.blank_lead(actor, status_id);
        apply_lead_fields(&self.orgs[actor.org], body, &mut lead)?;
        let contact_bodies: &[Value] = match body.get("contacts") {
            None | Some(Value::Null) => &[],
            Some(Value::Array(items)) => items,
            Some(_) => return Err(ApiError::field("contacts", "Not a valid list.")),
        };
        let mut contacts = Vec::with_capacity(contact_bodies.len());
        for (i, cb) in contact_bodies.iter().enumerate() {
            let cb = cb.as_object().ok_or_else(|| {
                nested(
                    "contacts",
                    i,
                    &ApiError::field("__all__", "Not a valid mapping."),
                )
            })?;
            let mut contact = self.blank_contact(actor, &lead.id);
            apply_contact_fields(&self.orgs[actor.org], cb, &mut contact)
                .map_err(|e| nested("contacts", i, &e))?;
            contacts.push(contact);
        }
        let ts = self.next_ts();
        lead.date_created = ts;
        lead.date_updated = ts;
        lead.contact_ids = contacts.iter().map(|c| c.id.clone()).collect();
        let lead_id = lead.id.clone();
        let lead_json = self.lead_event_json(&lead);
        self.insert_lead(lead);
        self.emit(
            actor,
            Subject {
                kind: ObjectKind::Lead,
                object_id: &lead_id,
                lead_id: &lead_id,
                action: "created",
                meta: &[],
            },
            Some(lead_json),
            json!({}),
            Vec::new(),
        );
        for contact in contacts {
            self.store_created_contact(actor, contact, ts);
        }
        Ok(lead_id)
    }

    /// Stores a new contact stamped `ts` and logs its `created` event; returns its id.
    fn store_created_contact(&mut self, actor: &Actor, mut contact: Contact, ts: Micros) -> String {
        contact.date_created = ts;
        contact.date_updated = ts;
        let cid = contact.id.clone();
        let lead_id = contact.lead_id.clone();
        let cjson = self.contact_json(&contact);
        self.insert_contact(contact);
        self.emit(
            actor,
            Subject {
                kind: ObjectKind::Contact,
                object_id: &cid,
                lead_id: &lead_id,
                action: "created",
                meta: &[],
            },
            Some(cjson),
            json!({}),
            Vec::new(),
        );
        cid
    }

    /// `PUT /lead/{id}/`: patch semantics; nested `contacts` are ignored.
    pub fn update_lead(
        &mut self,
        actor: &Actor,
        id: &str,
        body: &Map<String, Value>,
    ) -> ApiResult<()> {
        let mut lead = self.lead(actor.org, id)?.clone();
        let org = &self.orgs[actor.org];
        if let Some(status_id) = resolve_status(org, body)? {
            lead.status_id = status_id;
        }
        apply_lead_fields(org, body, &mut lead)?;
        let before = self.lead_event_json(&self.leads[id]);
        lead.date_updated = self.next_ts();
        lead.updated_by = actor.user_id.clone();
        let after = self.lead_event_json(&lead);
        self.insert_lead(lead);
        self.emit_update(
            actor,
            Subject {
                kind: ObjectKind::Lead,
                object_id: id,
                lead_id: id,
                action: "updated",
                meta: &[],
            },
            &before,
            after,
        );
        Ok(())
    }

    /// `DELETE /lead/{id}/`: deletes the lead and its contacts (each with a `deleted` event).
    pub fn delete_lead(&mut self, actor: &Actor, id: &str) -> ApiResult<()> {
        self.delete_lead_with_meta(actor, id, &[])
    }

    fn delete_lead_with_meta(
        &mut self,
        actor: &Actor,
        id: &str,
        meta: &[(&str, &str)],
    ) -> ApiResult<()> {
        let lead = self.lead(actor.org, id)?.clone();
        for cid in &lead.contact_ids {
            if let Some(contact) = self.remove_contact(cid) {
                let previous = self.contact_json(&contact);
                self.emit(
                    actor,
                    Subject {
                        kind: ObjectKind::Contact,
                        object_id: cid,
                        lead_id: id,
                        action: "deleted",
                        meta,
                    },
                    None,
                    previous,
                    Vec::new(),
                );
            }
        }
        let previous = self.lead_event_json(&lead);
        self.remove_lead(id);
        self.emit(
            actor,
            Subject {
                kind: ObjectKind::Lead,
                object_id: id,
                lead_id: id,
                action: "deleted",
                meta,
            },
            None,
            previous,
            Vec::new(),
        );
        Ok(())
    }

    /// `POST /lead/merge/`: moves the source's contacts, addresses, opportunities and
    /// missing custom values to the destination, then deletes the source.
    pub fn merge_leads(&mut self, actor: &Actor, source: &str, destination: &str) -> ApiResult<()> {
        let not_found = |what: &str| ApiError {
            status: hyper::StatusCode::NOT_FOUND,
            body: json!({"errors": [format!("{what} lead does not exist.")]}),
        };
        let src = self
            .lead(actor.org, source)
            .map_err(|_| not_found("Source"))?
            .clone();
        let mut dst = self
            .lead(actor.org, destination)
            .map_err(|_| not_found("Destination"))?
            .clone();
        if source == destination {
            return Err(ApiError::bad_request(
                "Source and destination leads must be different.",
            ));
        }
        let meta = [
            ("merge_source_lead_id", source),
            ("merge_destination_lead_id", destination),
        ];
        for cid in &src.contact_ids {
            let Some(mut contact) = self.contacts.get(cid).cloned() else {
                continue;
            };
            let before = self.contact_json(&contact);
            contact.lead_id = destination.to_string();
            contact.date_updated = self.next_ts();
            contact.updated_by = actor.user_id.clone();
            let after = self.contact_json(&contact);
            self.insert_contact(contact);
            self.emit_update(
                actor,
                Subject {
                    kind: ObjectKind::Contact,
                    object_id: cid,
                    lead_id: destination,
                    action: "updated",
                    meta: &meta,
                },
                &before,
                after,
            );
        }
        let before = self.lead_event_json(&dst);
        dst.contact_ids.extend(src.contact_ids.iter().cloned());
        dst.addresses.extend(src.addresses.iter().cloned());
        dst.opportunities.extend(src.opportunities.iter().cloned());
        for (k, v) in &src.custom {
            dst.custom.entry(k.clone()).or_insert_with(|| v.clone());
        }
        if dst.url.is_none() {
            dst.url = src.url.clone();
        }
        dst.date_updated = self.next_ts();
        dst.updated_by = actor.user_id.clone();
        let after = self.lead_event_json(&dst);
        self.insert_lead(dst);
        let mut src_without_contacts = src;
        src_without_contacts.contact_ids.clear();
        self.leads.insert(source.to_string(), src_without_contacts);
        self.delete_lead_with_meta(actor, source, &meta)?;
        self.emit_update(
            actor,
            Subject {
                kind: ObjectKind::Lead,
                object_id: destination,
                lead_id: destination,
                action: "merged",
                meta: &meta,
            },
            &before,
            after,
        );
        Ok(())
    }

    /// `POST /contact/`: creates a contact; without `lead_id` a lead named after the contact
    /// is created first. Returns the contact id.
    pub fn create_contact(
        &mut self,
        actor: &Actor,
        body: &Map<String, Value>,
    ) -> ApiResult<String> {
        let lead_id = match body.get("lead_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(id)) => {
                if self.lead(actor.org, id).is_err() {
                    return Err(ApiError::field("lead_id", "Lead does not exist."));
                }
                Some(id.clone())
            }
            Some(_) => return Err(ApiError::field("lead_id", "Not a valid string.")),
        };
        let mut contact = self.blank_contact(actor, lead_id.as_deref().unwrap_or(""));
        apply_contact_fields(&self.orgs[actor.org], body, &mut contact)?;
        let lead_id = match lead_id {
            Some(id) => id,
            None => {
                let mut lead_body = Map::new();
                lead_body.insert("name".into(), json!(contact.name));
                self.create_lead(actor, &lead_body)?
            }
        };
        contact.lead_id = lead_id.clone();
        let ts = self.next_ts();
        let cid = self.store_created_contact(actor, contact, ts);
        self.touch_lead(actor, &lead_id, |l| l.contact_ids.push(cid.clone()), true);
        Ok(cid)
    }

    /// Bumps a lead's `date_updated` after a change to its contacts; emits a lead `updated`
    /// event when `emit` (contacts added or removed).
    fn touch_lead(
        &mut self,
        actor: &Actor,
        lead_id: &str,
        change: impl FnOnce(&mut Lead),
        emit: bool,
    ) {
        let Some(mut lead) = self.leads.get(lead_id).cloned() else {
            return;
        };
        let before = self.lead_event_json(&lead);
        change(&mut lead);
        lead.date_updated = self.next_ts();
        lead.updated_by = actor.user_id.clone();
        let after = self.lead_event_json(&lead);
        self.insert_lead(lead);
        if emit {
            self.emit_update(
                actor,
                Subject {
                    kind: ObjectKind::Lead,
                    object_id: lead_id,
                    lead_id,
                    action: "updated",
                    meta: &[],
                },
                &before,
                after,
            );
        }
    }

    /// `PUT /contact/{id}/`: patch; a different `lead_id` moves the contact.
    pub fn update_contact(
        &mut self,
        actor: &Actor,
        id: &str,
        body: &Map<String, Value>,
    ) -> ApiResult<()> {
        let mut contact = self.contact(actor.org, id)?.clone();
        let old_lead = contact.lead_id.clone();
        let new_lead = match body.get("lead_id") {
            None | Some(Value::Null) => old_lead.clone(),
            Some(Value::String(l)) => {
                if self.lead(actor.org, l).is_err() {
                    return Err(ApiError::field("lead_id", "Lead does not exist."));
                }
                l.clone()
            }
            Some(_) => return Err(ApiError::field("lead_id", "Not a valid string.")),
        };
        apply_contact_fields(&self.orgs[actor.org], body, &mut contact)?;
        let before = self.contact_json(&self.contacts[id]);
        contact.lead_id = new_lead.clone();
        contact.date_updated = self.next_ts();
        contact.updated_by = actor.user_id.clone();
        let after = self.contact_json(&contact);
        self.insert_contact(contact);
        self.emit_update(
            actor,
            Subject {
                kind: ObjectKind::Contact,
                object_id: id,
                lead_id: &new_lead,
                action: "updated",
                meta: &[],
            },
            &before,
            after,
        );
        if new_lead == old_lead {
            self.touch_lead(actor, &old_lead, |_| {}, false);
        } else {
            self.touch_lead(
                actor,
                &old_lead,
                |l| l.contact_ids.retain(|c| c != id),
                true,
            );
            self.touch_lead(
                actor,
                &new_lead,
                |l| l.contact_ids.push(id.to_string()),
                true,
            );
        }
        Ok(())
    }

    /// `DELETE /contact/{id}/`.
    pub fn delete_contact(&mut self, actor: &Actor, id: &str) -> ApiResult<()> {
        let contact = self.contact(actor.org, id)?.clone();
        let previous = self.contact_json(&contact);
        self.remove_contact(id);
        self.emit(
            actor,
            Subject {
                kind: ObjectKind::Contact,
                object_id: id,
                lead_id: &contact.lead_id,
                action: "deleted",
                meta: &[],
            },
            None,
            previous,
            Vec::new(),
        );
        self.touch_lead(
            actor,
            &contact.lead_id,
            |l| l.contact_ids.retain(|c| c != id),
            true,
        );
        Ok(())
    }

    /// Every organization with its leads (contacts nested), the `/_sandbox/state` shape and
    /// the seed file format.
    pub fn state_json(&self) -> Value {
        let orgs: Vec<Value> = self
            .orgs
            .iter()
            .enumerate()
            .map(|(oi, org)| {
                let leads: Vec<Value> = self
                    .lead_order
                    .values()
                    .filter_map(|id| self.leads.get(id))
                    .filter(|l| l.org == oi)
                    .map(|l| self.lead_json(l))
                    .collect();
                json!({
                    "id": org.id,
                    "name": org.name,
                    "api_keys": org.api_keys.iter().map(|k| k.key.clone()).collect::<Vec<_>>(),
                    "statuses": org.statuses.iter().map(|s| super::model::render_status(org, s)).collect::<Vec<_>>(),
                    "custom_fields": {
                        "lead": org.lead_fields.iter().map(|f| super::model::render_custom_field(org, f)).collect::<Vec<_>>(),
                        "contact": org.contact_fields.iter().map(|f| super::model::render_custom_field(org, f)).collect::<Vec<_>>(),
                    },
                    "leads": leads,
                })
            })
            .collect();
        json!({ "organizations": orgs })
    }
}

/// Changed keys between two renderings and the previous values of those keys.
fn diff(before: &Value, after: &Value) -> (Vec<String>, Value) {
    let empty = Map::new();
    let b = before.as_object().unwrap_or(&empty);
    let a = after.as_object().unwrap_or(&empty);
    let mut changed = Vec::new();
    let mut previous = Map::new();
    for (k, v) in a {
        if b.get(k) != Some(v) {
            changed.push(k.clone());
            previous.insert(k.clone(), b.get(k).cloned().unwrap_or(Value::Null));
        }
    }
    for (k, v) in b {
        if !a.contains_key(k) {
            changed.push(k.clone());
            previous.insert(k.clone(), v.clone());
        }
    }
    (changed, Value::Object(previous))
}
