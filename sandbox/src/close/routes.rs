//! Path routing of the simulated API (with and without trailing slash).

use hyper::Method;

use super::error::{ApiError, ApiResult};
use super::model::ObjectKind;

/// A resolved API endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/me/`
    Me,
    /// `/status/lead/`
    Statuses,
    /// `/custom_field/<kind>/` and legacy `/custom_fields/<kind>/`
    CustomFields(ObjectKind),
    /// `/custom_field/<kind>/{id}/`
    CustomField(ObjectKind, String),
    /// `/custom_field_schema/<kind>/`
    CustomFieldSchema(ObjectKind),
    /// `/lead/`
    Leads,
    /// `/lead/{id}/`
    Lead(String),
    /// `/lead/merge/`
    LeadMerge,
    /// `/contact/`
    Contacts,
    /// `/contact/{id}/`
    Contact(String),
    /// `/data/search/`
    Search,
    /// `/event/`
    Events,
    /// `/event/{id}/`
    Event(String),
    /// `/webhook/`
    Webhooks,
    /// `/webhook/{id}/`
    Webhook(String),
}

/// Prefix of every API path.
pub const API_PREFIX: &str = "/api/v1";

impl Route {
    /// Resolves a request path (404 when the API has no such path).
    pub fn parse(path: &str) -> ApiResult<Route> {
        let rest = path
            .strip_prefix(API_PREFIX)
            .ok_or_else(ApiError::no_route)?;
        if !(rest.is_empty() || rest.starts_with('/')) {
            return Err(ApiError::no_route());
        }
        let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        let kind = |s: &str| ObjectKind::parse(s).ok_or_else(ApiError::no_route);
        let route = match segs.as_slice() {
            ["me"] => Route::Me,
            ["status", "lead"] => Route::Statuses,
            ["custom_field" | "custom_fields", k] => Route::CustomFields(kind(k)?),
            ["custom_field" | "custom_fields", k, id] => {
                Route::CustomField(kind(k)?, (*id).to_string())
            }
            ["custom_field_schema", k] => Route::CustomFieldSchema(kind(k)?),
            ["lead"] => Route::Leads,
            ["lead", "merge"] => Route::LeadMerge,
            ["lead", id] => Route::Lead((*id).to_string()),
            ["contact"] => Route::Contacts,
            ["contact", id] => Route::Contact((*id).to_string()),
            ["data", "search"] => Route::Search,
            ["event"] => Route::Events,
            ["event", id] => Route::Event((*id).to_string()),
            ["webhook"] => Route::Webhooks,
            ["webhook", id] => Route::Webhook((*id).to_string()),
            _ => return Err(ApiError::no_route()),
        };
        Ok(route)
    }

    /// Methods the endpoint supports.
    pub fn methods(&self) -> &'static [Method] {
        match self {
            Route::Me
            | Route::CustomField(..)
            | Route::CustomFieldSchema(_)
            | Route::Events
            | Route::Event(_) => &[Method::GET],
            Route::Statuses
            | Route::CustomFields(_)
            | Route::Leads
            | Route::Contacts
            | Route::Webhooks => &[Method::GET, Method::POST],
            Route::Lead(_) | Route::Contact(_) | Route::Webhook(_) => {
                &[Method::GET, Method::PUT, Method::DELETE]
            }
            Route::LeadMerge | Route::Search => &[Method::POST],
        }
    }

    /// Path template, used for counters and fault filters (e.g. `/lead/{id}/`).
    pub fn template(&self) -> String {
        match self {
            Route::Me => "/me/".into(),
            Route::Statuses => "/status/lead/".into(),
            Route::CustomFields(k) => format!("/custom_field/{}/", k.as_str()),
            Route::CustomField(k, _) => format!("/custom_field/{}/{{id}}/", k.as_str()),
            Route::CustomFieldSchema(k) => format!("/custom_field_schema/{}/", k.as_str()),
            Route::Leads => "/lead/".into(),
            Route::Lead(_) => "/lead/{id}/".into(),
            Route::LeadMerge => "/lead/merge/".into(),
            Route::Contacts => "/contact/".into(),
            Route::Contact(_) => "/contact/{id}/".into(),
            Route::Search => "/data/search/".into(),
            Route::Events => "/event/".into(),
            Route::Event(_) => "/event/{id}/".into(),
            Route::Webhooks => "/webhook/".into(),
            Route::Webhook(_) => "/webhook/{id}/".into(),
        }
    }

    /// Rate-limit endpoint group of a request to this route.
    pub fn group(&self, method: &Method) -> &'static str {
        let read = method == Method::GET;
        match self {
            Route::Leads | Route::Lead(_) | Route::LeadMerge => {
                if read {
                    "lead-read"
                } else {
                    "lead-write"
                }
            }
            Route::Contacts | Route::Contact(_) => {
                if read {
                    "contact-read"
                } else {
                    "contact-write"
                }
            }
            Route::Search => "search",
            Route::Events | Route::Event(_) => "event",
            Route::Webhooks | Route::Webhook(_) => "webhook",
            Route::Me
            | Route::Statuses
            | Route::CustomFields(_)
            | Route::CustomField(..)
            | Route::CustomFieldSchema(_) => "meta",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_with_and_without_slash() {
        assert_eq!(Route::parse("/api/v1/lead/").ok(), Some(Route::Leads));
        assert_eq!(Route::parse("/api/v1/lead").ok(), Some(Route::Leads));
        assert_eq!(
            Route::parse("/api/v1/lead/merge").ok(),
            Some(Route::LeadMerge)
        );
        assert_eq!(
            Route::parse("/api/v1/custom_fields/lead/").ok(),
            Some(Route::CustomFields(ObjectKind::Lead))
        );
        assert!(Route::parse("/api/v1/nope/").is_err());
        assert!(Route::parse("/api/v1lead/").is_err());
    }
}
