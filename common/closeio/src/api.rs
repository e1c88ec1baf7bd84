//! Close endpoints used by the connector.

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::Method;
use serde_json::{json, Map, Value};

use super::client::{decode, Body, Call, CloseClient, EndpointGroup};
use super::error::CloseError;
use super::model::{
    ApiKey, CustomField, CustomFieldObject, EventPage, EventQuery, LeadStatus, SearchPage,
    WebhookSubscription,
};

/// Fields requested from `POST /data/search/` for the incoming lead sync (full leads).
pub const SEARCH_LEAD_FIELDS: &[&str] = &[
    "id",
    "name",
    "display_name",
    "url",
    "description",
    "status_id",
    "status_label",
    "contacts",
    "addresses",
    "opportunities",
    "custom",
    "date_created",
    "date_updated",
    "organization_id",
];

/// Page size of lookups by identifier (matches are expected to be few).
const LOOKUP_PAGE_SIZE: u32 = 25;

/// Most search pages read by one lookup (an identifier matching more leads is a data problem).
const MAX_LOOKUP_PAGES: usize = 40;

impl CloseClient {
    /// `GET /me/`: validates the key and returns the caller's user (with `organizations`).
    pub async fn me(&self, key: &ApiKey) -> Result<Value, CloseError> {
        self.execute(key, &Call::get(EndpointGroup::Me, vec!["me"]))
            .await
    }

    /// `GET /status/lead/`, all pages.
    pub async fn lead_statuses(&self, key: &ApiKey) -> Result<Vec<LeadStatus>, CloseError> {
        self.list_all(key, Call::get(EndpointGroup::Meta, vec!["status", "lead"]))
            .await
    }

    /// `GET /custom_field/lead|contact/`, all pages.
    pub async fn custom_fields(
        &self,
        key: &ApiKey,
        object: CustomFieldObject,
    ) -> Result<Vec<CustomField>, CloseError> {
        self.list_all(
            key,
            Call::get(EndpointGroup::Meta, vec!["custom_field", object.as_str()]),
        )
        .await
    }

    /// `GET /lead/{id}/`.
    pub async fn get_lead(&self, key: &ApiKey, id: &str) -> Result<Value, CloseError> {
        self.execute(key, &Call::get(EndpointGroup::LeadRead, vec!["lead", id]))
            .await
    }

    /// `POST /lead/` (sent once, never retried by the client).
    pub async fn create_lead(
        &self,
        key: &ApiKey,
        body: &Map<String, Value>,
    ) -> Result<Value, CloseError> {
        self.create_lead_in(key, body, false).await
    }

    /// [`CloseClient::create_lead`] in the lead-write slot the caller waited for with
    /// [`CloseClient::await_slot`].
    pub async fn create_lead_in_slot(
        &self,
        key: &ApiKey,
        body: &Map<String, Value>,
    ) -> Result<Value, CloseError> {
        self.create_lead_in(key, body, true).await
    }

    async fn create_lead_in(
        &self,
        key: &ApiKey,
        body: &Map<String, Value>,
        in_slot: bool,
    ) -> Result<Value, CloseError> {
        let mut call = Call::write(
            Method::POST,
            EndpointGroup::LeadWrite,
            vec!["lead"],
            Some(Body::Object(body)),
        );
        call.in_slot = in_slot;
        self.execute(key, &call).await
    }

    /// `PUT /lead/{id}/` (partial update; sent once).
    pub async fn update_lead(
        &self,
        key: &ApiKey,
        id: &str,
        body: &Map<String, Value>,
    ) -> Result<Value, CloseError> {
        let call = Call::write(
            Method::PUT,
            EndpointGroup::LeadWrite,
            vec!["lead", id],
            Some(Body::Object(body)),
        );
        self.execute(key, &call).await
    }

    /// `DELETE /lead/{id}/` (sent once).
    pub async fn delete_lead(&self, key: &ApiKey, id: &str) -> Result<(), CloseError> {
        let call = Call::write(
            Method::DELETE,
            EndpointGroup::LeadWrite,
            vec!["lead", id],
            None,
        );
        self.execute(key, &call).await.map(drop)
    }

    /// Finds the leads whose identifier `field` (`url`, `name`, `description` or
    /// `custom.<field id>`) equals `value` exactly, through `POST /data/search/`, and returns
    /// them as full lead objects (each match is read with `GET /lead/{id}/`).
    pub async fn find_leads(
        &self,
        key: &ApiKey,
        field: &str,
        value: &Value,
    ) -> Result<Vec<Value>, CloseError> {
        let ids = self
            .find_lead_ids(key, field, std::slice::from_ref(value))
            .await?;
        self.get_leads(key, &ids).await
    }

    /// The ids of the leads whose identifier `field` equals one of `values`: one search (of
    /// as many pages as the matches need) for all of them.
    pub async fn find_lead_ids(
        &self,
        key: &ApiKey,
        field: &str,
        values: &[Value],
    ) -> Result<Vec<String>, CloseError> {
        let mut ids: Vec<String> = Vec::new();
        let mut cursor: Option<String> = None;
        for page_number in 1.. {
            if page_number > MAX_LOOKUP_PAGES {
                return Err(CloseError::Decode(format!(
                    "lookup by {field} matched more than {} leads",
                    MAX_LOOKUP_PAGES * LOOKUP_PAGE_SIZE as usize
                )));
            }
            let body = lookup_query(field, values, cursor.as_deref())?;
            let page = self.search(key, &body).await?;
            ids.extend(
                page.data
                    .iter()
                    .filter_map(|lead| lead.get("id").and_then(Value::as_str))
                    .map(str::to_owned),
            );
            match page.cursor {
                Some(next) if !page.data.is_empty() => cursor = Some(next),
                _ => break,
            }
        }
        Ok(ids)
    }

    /// Reads each lead (`GET /lead/{id}/`); one deleted meanwhile is left out.
    pub async fn get_leads(&self, key: &ApiKey, ids: &[String]) -> Result<Vec<Value>, CloseError> {
        let mut leads = Vec::with_capacity(ids.len());
        for id in ids {
            match self.get_lead(key, id).await {
                Ok(lead) => leads.push(lead),
                // Deleted between the search and the read: not a match any more.
                Err(CloseError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(leads)
    }

    /// One page of leads updated in `[since, until)`, oldest `date_updated` first, as full
    /// leads (`POST /data/search/`). Pass the returned `cursor` to get the next page.
    pub async fn search_leads_updated(
        &self,
        key: &ApiKey,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
        cursor: Option<String>,
        limit: u32,
    ) -> Result<SearchPage, CloseError> {
        let body = updated_leads_query(
            since,
            until,
            cursor.as_deref(),
            limit,
            false,
            SEARCH_LEAD_FIELDS,
        );
        self.search(key, &body).await
    }

    /// The `date_updated` of the oldest (or, with `newest`, the newest) lead updated in
    /// `[since, until)`: one one-lead search. `None` when the range holds no lead.
    pub async fn lead_updated_boundary(
        &self,
        key: &ApiKey,
        since: Option<DateTime<Utc>>,
        until: DateTime<Utc>,
        newest: bool,
    ) -> Result<Option<DateTime<Utc>>, CloseError> {
        let body =
            updated_leads_query(since, Some(until), None, 1, newest, &["id", "date_updated"]);
        let page = self.search(key, &body).await?;
        Ok(page
            .data
            .first()
            .and_then(|l| l.get("date_updated"))
            .and_then(Value::as_str)
            .and_then(super::datetime::parse_close_datetime))
    }

    /// `POST /data/search/` with a raw body; a read, so it is retried like a GET.
    pub async fn search(&self, key: &ApiKey, body: &Value) -> Result<SearchPage, CloseError> {
        let call = Call {
            read: true,
            ..Call::write(
                Method::POST,
                EndpointGroup::Search,
                vec!["data", "search"],
                Some(Body::Json(body)),
            )
        };
        let raw = self.execute(key, &call).await?;
        let data = match raw.get("data") {
            Some(Value::Array(items)) => items.clone(),
            Some(Value::Null) | None => Vec::new(),
            Some(other) => {
                return Err(CloseError::Decode(format!(
                    "search `data` is not a list: {other}"
                )))
            }
        };
        let cursor = raw
            .get("cursor")
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
            .map(str::to_owned);
        Ok(SearchPage { data, cursor })
    }

    /// `GET /contact/?lead_id=…`, all pages.
    pub async fn list_contacts(
        &self,
        key: &ApiKey,
        lead_id: &str,
    ) -> Result<Vec<Value>, CloseError> {
        self.list_all(
            key,
            Call::get(EndpointGroup::ContactRead, vec!["contact"]).query("lead_id", lead_id),
        )
        .await
    }

    /// `GET /contact/{id}/`.
    pub async fn get_contact(&self, key: &ApiKey, id: &str) -> Result<Value, CloseError> {
        self.execute(
            key,
            &Call::get(EndpointGroup::ContactRead, vec!["contact", id]),
        )
        .await
    }

    /// `POST /contact/` (sent once). Always include `lead_id` in `body`, or Close creates a
    /// new lead for the contact.
    pub async fn create_contact(
        &self,
        key: &ApiKey,
        body: &Map<String, Value>,
    ) -> Result<Value, CloseError> {
        let call = Call::write(
            Method::POST,
            EndpointGroup::ContactWrite,
            vec!["contact"],
            Some(Body::Object(body)),
        );
        self.execute(key, &call).await
    }

    /// `PUT /contact/{id}/` (partial update; sent once).
    pub async fn update_contact(
        &self,
        key: &ApiKey,
        id: &str,
        body: &Map<String, Value>,
    ) -> Result<Value, CloseError> {
        let call = Call::write(
            Method::PUT,
            EndpointGroup::ContactWrite,
            vec!["contact", id],
            Some(Body::Object(body)),
        );
        self.execute(key, &call).await
    }

    /// `DELETE /contact/{id}/` (sent once).
    pub async fn delete_contact(&self, key: &ApiKey, id: &str) -> Result<(), CloseError> {
        let call = Call::write(
            Method::DELETE,
            EndpointGroup::ContactWrite,
            vec!["contact", id],
            None,
        );
        self.execute(key, &call).await.map(drop)
    }

    /// One page of `GET /event/` (newest first).
    pub async fn events(&self, key: &ApiKey, query: EventQuery) -> Result<EventPage, CloseError> {
        let mut call = Call::get(EndpointGroup::Event, vec!["event"]);
        if let Some(v) = query.object_type {
            call = call.query("object_type", v);
        }
        if let Some(v) = query.action {
            call = call.query("action", v);
        }
        if let Some(v) = query.lead_id {
            call = call.query("lead_id", v);
        }
        if let Some(v) = query.date_updated_gte {
            call = call.query("date_updated__gte", format_close_datetime(v));
        }
        if let Some(v) = query.date_updated_lt {
            call = call.query("date_updated__lt", format_close_datetime(v));
        }
        if let Some(v) = query.cursor {
            call = call.query("_cursor", v);
        }
        if let Some(v) = query.limit {
            call = call.query("_limit", v.to_string());
        }
        self.execute_as(key, &call).await
    }

    /// `POST /webhook/` subscribing `url` to `events` (`(object_type, action)` pairs). The
    /// returned `signature_key` is only given here: store it.
    pub async fn create_webhook(
        &self,
        key: &ApiKey,
        url: &str,
        events: &[(&str, &str)],
    ) -> Result<WebhookSubscription, CloseError> {
        let body = json!({
            "url": url,
            "events": events
                .iter()
                .map(|(object_type, action)| json!({"object_type": object_type, "action": action}))
                .collect::<Vec<_>>(),
        });
        let call = Call::write(
            Method::POST,
            EndpointGroup::Webhook,
            vec!["webhook"],
            Some(Body::Json(&body)),
        );
        decode(self.execute(key, &call).await?)
    }

    /// `GET /webhook/`, all pages.
    pub async fn list_webhooks(
        &self,
        key: &ApiKey,
    ) -> Result<Vec<WebhookSubscription>, CloseError> {
        self.list_all(key, Call::get(EndpointGroup::Webhook, vec!["webhook"]))
            .await
    }

    /// `GET /webhook/{id}/`.
    pub async fn get_webhook(
        &self,
        key: &ApiKey,
        id: &str,
    ) -> Result<WebhookSubscription, CloseError> {
        self.execute_as(key, &Call::get(EndpointGroup::Webhook, vec!["webhook", id]))
            .await
    }

    /// `PUT /webhook/{id}/` with the fields to change (`url`, `events`, `status`, `verify_ssl`).
    pub async fn update_webhook(
        &self,
        key: &ApiKey,
        id: &str,
        patch: &Map<String, Value>,
    ) -> Result<WebhookSubscription, CloseError> {
        let call = Call::write(
            Method::PUT,
            EndpointGroup::Webhook,
            vec!["webhook", id],
            Some(Body::Object(patch)),
        );
        decode(self.execute(key, &call).await?)
    }

    /// `DELETE /webhook/{id}/`.
    pub async fn delete_webhook(&self, key: &ApiKey, id: &str) -> Result<(), CloseError> {
        let call = Call::write(
            Method::DELETE,
            EndpointGroup::Webhook,
            vec!["webhook", id],
            None,
        );
        self.execute(key, &call).await.map(drop)
    }
}

/// Formats a timestamp the way Close writes them (`2024-01-02T08:00:00.123000+00:00`).
pub fn format_close_datetime(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
}

/// The advanced-filter field node for an identifier field name.
fn identifier_field(field: &str) -> Result<Value, CloseError> {
    match field {
        "url" | "name" | "description" => Ok(json!({
            "type": "regular_field",
            "object_type": "lead",
            "field_name": field,
        })),
        other => match other.strip_prefix("custom.") {
            Some(id) if !id.is_empty() => Ok(json!({
                "type": "custom_field",
                "custom_field_id": id,
            })),
            _ => Err(CloseError::InvalidConfig(format!(
                "unsupported lead identifier field {other:?} (expected url, name, description or custom.<id>)"
            ))),
        },
    }
}

/// The `/data/search/` body looking leads up by an exact identifier value.
fn lookup_query(field: &str, values: &[Value], cursor: Option<&str>) -> Result<Value, CloseError> {
    let mut body = json!({
        "query": {
            "type": "and",
            "queries": [
                {"type": "object_type", "object_type": "lead"},
                {
                    "type": "field_condition",
                    "field": identifier_field(field)?,
                    "condition": {"type": "term", "values": values},
                },
            ],
        },
        "_fields": {"lead": ["id"]},
        "_limit": LOOKUP_PAGE_SIZE,
    });
    if let (Some(c), Some(obj)) = (cursor, body.as_object_mut()) {
        obj.insert("cursor".into(), Value::String(c.to_owned()));
    }
    Ok(body)
}

/// The `/data/search/` body of the leads updated in `[since, until)`, by `date_updated`
/// (oldest first, or newest first), with `fields` of each lead.
fn updated_leads_query(
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    cursor: Option<&str>,
    limit: u32,
    newest_first: bool,
    fields: &[&str],
) -> Value {
    let moment = |t: DateTime<Utc>| json!({"type": "fixed_utc", "value": t.to_rfc3339_opts(SecondsFormat::Micros, true)});
    let mut queries = vec![json!({"type": "object_type", "object_type": "lead"})];
    if since.is_some() || until.is_some() {
        queries.push(json!({
            "type": "field_condition",
            "field": {"type": "regular_field", "object_type": "lead", "field_name": "date_updated"},
            "condition": {
                "type": "moment_range",
                "on_or_after": since.map(moment),
                "before": until.map(moment),
            },
        }));
    }
    let mut body = json!({
        "query": {"type": "and", "queries": queries},
        "sort": [{
            "direction": if newest_first { "desc" } else { "asc" },
            "field": {"type": "regular_field", "object_type": "lead", "field_name": "date_updated"},
        }],
        "_fields": {"lead": fields},
        "_limit": limit.max(1),
    });
    if let (Some(c), Some(obj)) = (cursor, body.as_object_mut()) {
        obj.insert("cursor".into(), Value::String(c.to_owned()));
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn lookup_query_uses_term_on_regular_or_custom_field() {
        let q = lookup_query("url", &[json!("https://acme.com")], None).expect("ok");
        assert_eq!(
            q["query"]["queries"][1],
            json!({
                "type": "field_condition",
                "field": {"type": "regular_field", "object_type": "lead", "field_name": "url"},
                "condition": {"type": "term", "values": ["https://acme.com"]},
            })
        );
        assert!(q.get("cursor").is_none());
        let q = lookup_query("custom.cf_abc", &[json!("x")], Some("c1")).expect("ok");
        assert_eq!(
            q["query"]["queries"][1]["field"],
            json!({"type": "custom_field", "custom_field_id": "cf_abc"})
        );
        assert_eq!(q["cursor"], json!("c1"));
        assert!(lookup_query("custom.", &[json!("x")], None).is_err());
        assert!(lookup_query("email", &[json!("x")], None).is_err());
    }

    #[test]
    fn boundary_queries_sort_and_bound() {
        let until = Utc
            .with_ymd_and_hms(2024, 1, 2, 0, 0, 0)
            .single()
            .expect("date");
        let q = updated_leads_query(None, Some(until), None, 1, true, &["id", "date_updated"]);
        assert_eq!(q["sort"][0]["direction"], json!("desc"));
        assert_eq!(q["_limit"], json!(1));
        assert_eq!(q["_fields"]["lead"], json!(["id", "date_updated"]));
        assert_eq!(
            q["query"]["queries"][1]["condition"]["on_or_after"],
            Value::Null
        );
        assert!(q["query"]["queries"][1]["condition"]["before"].is_object());
    }

    #[test]
    fn updated_leads_query_shape() {
        let since = Utc
            .with_ymd_and_hms(2024, 1, 2, 3, 4, 5)
            .single()
            .expect("valid");
        let q = updated_leads_query(
            Some(since),
            None,
            Some("cur"),
            50,
            false,
            SEARCH_LEAD_FIELDS,
        );
        let cond = &q["query"]["queries"][1]["condition"];
        assert_eq!(cond["type"], json!("moment_range"));
        assert_eq!(
            cond["on_or_after"],
            json!({"type": "fixed_utc", "value": "2024-01-02T03:04:05.000000Z"})
        );
        assert_eq!(cond["before"], Value::Null);
        assert_eq!(q["sort"][0]["direction"], json!("asc"));
        assert_eq!(q["_limit"], json!(50));
        assert_eq!(q["cursor"], json!("cur"));
        assert!(q["_fields"]["lead"]
            .as_array()
            .is_some_and(|f| f.contains(&json!("contacts"))));
        let q = updated_leads_query(None, None, None, 0, false, SEARCH_LEAD_FIELDS);
        assert_eq!(q["query"]["queries"].as_array().map(Vec::len), Some(1));
        assert_eq!(q["_limit"], json!(1));
    }

    #[test]
    fn close_datetime_format_round_trips() {
        let t = Utc
            .with_ymd_and_hms(2024, 1, 2, 8, 0, 0)
            .single()
            .expect("valid")
            + chrono::Duration::milliseconds(123);
        let s = format_close_datetime(t);
        assert_eq!(s, "2024-01-02T08:00:00.123000+00:00");
        assert_eq!(super::super::parse_close_datetime(&s), Some(t));
    }
}
