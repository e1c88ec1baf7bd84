//! Handlers of the simulated API endpoints (after routing, auth, rate limits and faults).

use std::collections::HashMap;

use hyper::{Method, StatusCode};
use serde_json::{json, Map, Value};

use super::error::{ApiError, ApiResult};
use super::events;
use super::legacy_query::LegacyQuery;
use super::model::{
    parse_fields, render_custom_field, render_status, select_fields, CustomField, ObjectKind,
    Status, CUSTOM_FIELD_TYPES,
};
use super::routes::Route;
use super::search::{self, SearchLimits};
use super::store::{Actor, Store};
use super::webhooks;

/// Pagination caps of list endpoints.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Maximum `_limit` of `/lead/`, `/contact/` and the other lists.
    pub max_limit: usize,
    /// Maximum `_skip`.
    pub max_skip: usize,
    /// Search limits.
    pub search: SearchLimits,
}

/// One authenticated API request.
pub struct Request<'a> {
    /// Resolved route.
    pub route: &'a Route,
    /// HTTP method.
    pub method: &'a Method,
    /// The caller, for events and ownership.
    pub actor: &'a Actor,
    /// Query parameters.
    pub params: &'a HashMap<String, String>,
    /// Parsed JSON body (`{}` when the body was empty).
    pub body: &'a Value,
}

type Answer = (StatusCode, Value);

fn ok(v: Value) -> ApiResult<Answer> {
    Ok((StatusCode::OK, v))
}

fn body_object(body: &Value) -> ApiResult<&Map<String, Value>> {
    body.as_object()
        .ok_or_else(|| ApiError::bad_request("The request body must be a JSON object."))
}

fn page_params(params: &HashMap<String, String>, limits: &Limits) -> ApiResult<(usize, usize)> {
    let parse = |key: &str, default: usize| -> ApiResult<usize> {
        params.get(key).map_or(Ok(default), |v| {
            v.trim().parse::<usize>().map_err(|_| {
                ApiError::bad_request(format!("{key} must be a non-negative integer."))
            })
        })
    };
    let limit = parse("_limit", 100)?;
    let skip = parse("_skip", 0)?;
    if limit > limits.max_limit {
        return Err(ApiError::bad_request(format!(
            "_limit must be less than or equal to {} (max_limit = {}).",
            limits.max_limit, limits.max_limit
        )));
    }
    if skip > limits.max_skip {
        return Err(ApiError::bad_request(format!(
            "_skip must be less than or equal to {} (max_skip = {}). Use a narrower query to page further.",
            limits.max_skip, limits.max_skip
        )));
    }
    Ok((skip, limit))
}

fn paged<T>(items: &[T], skip: usize, limit: usize, render: impl Fn(&T) -> Value) -> Value {
    let data: Vec<Value> = items.iter().skip(skip).take(limit).map(render).collect();
    json!({"data": data, "has_more": skip.saturating_add(limit) < items.len()})
}

/// Dispatches an authenticated request.
pub fn handle(store: &mut Store, limits: &Limits, req: &Request<'_>) -> ApiResult<Answer> {
    let org = req.actor.org;
    let fields = parse_fields(req.params.get("_fields").map(String::as_str));
    let fields = fields.as_deref();
    match (req.route, req.method) {
        (Route::Me, _) => ok(me(store, req.actor)),
        (Route::Statuses, &Method::GET) => {
            let (skip, limit) = page_params(req.params, limits)?;
            let o = &store.orgs[org];
            ok(paged(&o.statuses, skip, limit, |s| render_status(o, s)))
        }
        (Route::Statuses, _) => create_status(store, org, body_object(req.body)?),
        (Route::CustomFields(kind), &Method::GET) => {
            let (skip, limit) = page_params(req.params, limits)?;
            let o = &store.orgs[org];
            ok(paged(o.fields(*kind), skip, limit, |f| {
                render_custom_field(o, f)
            }))
        }
        (Route::CustomFields(kind), _) => create_field(store, org, *kind, body_object(req.body)?),
        (Route::CustomField(kind, id), _) => {
            let o = &store.orgs[org];
            o.fields(*kind)
                .iter()
                .find(|f| &f.id == id)
                .map(|f| (StatusCode::OK, render_custom_field(o, f)))
                .ok_or_else(|| ApiError::not_found("CustomField"))
        }
        (Route::CustomFieldSchema(kind), _) => {
            let o = &store.orgs[org];
            let fields: Vec<Value> = o
                .fields(*kind)
                .iter()
                .map(|f| render_custom_field(o, f))
                .collect();
            ok(json!({ "fields": fields }))
        }
        (Route::Leads, &Method::GET) => list_leads(store, limits, org, req.params, fields),
        (Route::Leads, _) => {
            let id = store.create_lead(req.actor, body_object(req.body)?)?;
            ok(lead_out(store, org, &id, fields)?)
        }
        (Route::Lead(id), &Method::GET) => ok(lead_out(store, org, id, fields)?),
        (Route::Lead(id), &Method::PUT) => {
            store.update_lead(req.actor, id, body_object(req.body)?)?;
            ok(lead_out(store, org, id, fields)?)
        }
        (Route::Lead(id), _) => {
            store.delete_lead(req.actor, id)?;
            ok(json!({}))
        }
        (Route::LeadMerge, _) => {
            let b = body_object(req.body)?;
            let get = |k: &str| {
                b.get(k)
                    .and_then(Value::as_str)
                    .ok_or_else(|| ApiError::field(k, "This field is required."))
            };
            let (source, destination) = (get("source")?, get("destination")?);
            store.merge_leads(req.actor, source, destination)?;
            ok(json!({}))
        }
        (Route::Contacts, &Method::GET) => list_contacts(store, limits, org, req.params, fields),
        (Route::Contacts, _) => {
            let id = store.create_contact(req.actor, body_object(req.body)?)?;
            ok(contact_out(store, org, &id, fields)?)
        }
        (Route::Contact(id), &Method::GET) => ok(contact_out(store, org, id, fields)?),
        (Route::Contact(id), &Method::PUT) => {
            store.update_contact(req.actor, id, body_object(req.body)?)?;
            ok(contact_out(store, org, id, fields)?)
        }
        (Route::Contact(id), _) => {
            store.delete_contact(req.actor, id)?;
            ok(json!({}))
        }
        (Route::Search, _) => ok(search::search(
            store,
            org,
            body_object(req.body)?,
            limits.search,
        )?),
        (Route::Events, _) => ok(events::list(store, org, req.params)?),
        (Route::Event(id), _) => ok(events::get(store, org, id)?),
        (Route::Webhooks, &Method::GET) => {
            let (skip, limit) = page_params(req.params, limits)?;
            ok(webhooks::list(store, org, skip, limit))
        }
        (Route::Webhooks, _) => {
            let out = webhooks::create(store, org, &req.actor.user_id, body_object(req.body)?)?;
            Ok((StatusCode::CREATED, out))
        }
        (Route::Webhook(id), &Method::GET) => ok(webhooks::get(store, org, id)?),
        (Route::Webhook(id), &Method::PUT) => {
            ok(webhooks::update(store, org, id, body_object(req.body)?)?)
        }
        (Route::Webhook(id), _) => {
            webhooks::delete(store, org, id)?;
            ok(json!({}))
        }
    }
}

fn me(store: &Store, actor: &Actor) -> Value {
    let org = &store.orgs[actor.org];
    let user = org
        .api_keys
        .iter()
        .map(|k| &k.user)
        .find(|u| u.id == actor.user_id)
        .unwrap_or(&org.ui_user);
    json!({
        "id": user.id,
        "email": user.email,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "organizations": [{"id": org.id, "name": org.name}],
        "memberships": [{"id": format!("mem_{}", user.id.trim_start_matches("user_")), "organization_id": org.id, "role_id": "admin"}],
    })
}

fn lead_out(store: &Store, org: usize, id: &str, fields: Option<&[String]>) -> ApiResult<Value> {
    let lead = store.lead(org, id)?;
    Ok(select_fields(store.lead_json(lead), fields))
}

fn contact_out(store: &Store, org: usize, id: &str, fields: Option<&[String]>) -> ApiResult<Value> {
    let c = store.contact(org, id)?;
    Ok(select_fields(store.contact_json(c), fields))
}

fn list_leads(
    store: &Store,
    limits: &Limits,
    org: usize,
    params: &HashMap<String, String>,
    fields: Option<&[String]>,
) -> ApiResult<Answer> {
    let (skip, limit) = page_params(params, limits)?;
    let query = match params
        .get("query")
        .map(|q| q.trim())
        .filter(|q| !q.is_empty())
    {
        Some(q) => LegacyQuery::parse(q)?,
        None => LegacyQuery::default(),
    };
    query.validate(store, org)?;
    let mut leads: Vec<_> = store
        .lead_order
        .values()
        .filter_map(|id| store.leads.get(id))
        .filter(|l| l.org == org && query.matches(store, l))
        .collect();
    if query.sort.is_some() {
        leads.sort_by(|a, b| query.compare(a, b));
    }
    let total = leads.len();
    let data: Vec<Value> = leads
        .iter()
        .skip(skip)
        .take(limit)
        .map(|l| select_fields(store.lead_json(l), fields))
        .collect();
    ok(json!({
        "data": data,
        "has_more": skip.saturating_add(limit) < total,
        "total_results": total,
    }))
}

fn list_contacts(
    store: &Store,
    limits: &Limits,
    org: usize,
    params: &HashMap<String, String>,
    fields: Option<&[String]>,
) -> ApiResult<Answer> {
    let (skip, limit) = page_params(params, limits)?;
    let lead_filter = params.get("lead_id");
    let contacts: Vec<_> = store
        .contact_order
        .values()
        .filter_map(|id| store.contacts.get(id))
        .filter(|c| c.org == org && lead_filter.is_none_or(|l| &c.lead_id == l))
        .collect();
    ok(paged(&contacts, skip, limit, |c| {
        select_fields(store.contact_json(c), fields)
    }))
}

fn create_status(store: &mut Store, org: usize, body: &Map<String, Value>) -> ApiResult<Answer> {
    let label = body
        .get("label")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .ok_or_else(|| ApiError::field("label", "This field is required."))?
        .to_string();
    if store.orgs[org].status_by_label(&label).is_some() {
        return Err(ApiError::field(
            "label",
            "A status with this label already exists.",
        ));
    }
    let status = Status {
        id: store.id("stat_", 43),
        label,
    };
    let out = render_status(&store.orgs[org], &status);
    store.orgs[org].statuses.push(status);
    ok(out)
}

fn create_field(
    store: &mut Store,
    org: usize,
    kind: ObjectKind,
    body: &Map<String, Value>,
) -> ApiResult<Answer> {
    let name = body
        .get("name")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::field("name", "This field is required."))?
        .to_string();
    let ty = body
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::field("type", "This field is required."))?;
    if !CUSTOM_FIELD_TYPES.contains(&ty) {
        return Err(ApiError::field(
            "type",
            format!("\"{ty}\" is not a valid choice."),
        ));
    }
    let multi = body
        .get("accepts_multiple_values")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if multi && !matches!(ty, "choices" | "user" | "contact" | "custom_object") {
        return Err(ApiError::field(
            "accepts_multiple_values",
            "Only choices, user, contact and custom_object fields accept multiple values.",
        ));
    }
    let choices: Vec<String> = match body.get("choices") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|c| c.as_str().map(str::to_string))
            .collect(),
        Some(_) => return Err(ApiError::field("choices", "Not a valid list.")),
    };
    if store.orgs[org].fields(kind).iter().any(|f| f.name == name) {
        return Err(ApiError::field(
            "name",
            "A custom field with this name already exists.",
        ));
    }
    let date_created = store.next_ts();
    let field = CustomField {
        id: store.id("cf_", 43),
        name,
        field_type: ty.to_string(),
        choices,
        accepts_multiple_values: multi,
        date_created,
    };
    let out = render_custom_field(&store.orgs[org], &field);
    store.orgs[org].fields_mut(kind).push(field);
    ok(out)
}
