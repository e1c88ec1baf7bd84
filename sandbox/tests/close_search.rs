//! `POST /data/search/` (Advanced Filtering).

mod close_support;

use close_support::{start, Harness};
use reqwest::StatusCode;
use sandbox::close::{CloseConfig, Seed};
use serde_json::{json, Value};

fn lead_type() -> Value {
    json!({"type": "object_type", "object_type": "lead"})
}

fn regular(object: &str, field: &str, condition: Value) -> Value {
    json!({"type": "field_condition",
        "field": {"type": "regular_field", "object_type": object, "field_name": field},
        "condition": condition})
}

async fn names(h: &Harness, body: Value) -> Vec<String> {
    let mut body = body;
    body["_fields"] = json!({"lead": ["name"], "contact": ["name"]});
    let (status, out) = h.post("/data/search/", body).await;
    assert_eq!(status, StatusCode::OK, "{out}");
    let mut n: Vec<String> = out["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap().to_string())
        .collect();
    n.sort();
    n
}

async fn fixture() -> Harness {
    let h = start(CloseConfig::default()).await;
    let ftes = h.lead_field("FTEs").await;
    let hull = h.lead_field("Hull Account ID").await;
    h.lead(
        json!({"name": "Alpha Corp", "url": "https://alpha.example", format!("custom.{ftes}"): 10,
        format!("custom.{hull}"): "acct-a",
        "contacts": [{"name": "Ann Alpha", "emails": [{"email": "ann@alpha.example"}]}]}),
    )
    .await;
    h.lead(
        json!({"name": "Beta LLC", "url": "https://beta.example", format!("custom.{ftes}"): 500,
        "contacts": [{"name": "Bob Beta", "emails": [{"email": "bob@beta.example"}]}]}),
    )
    .await;
    h.lead(json!({"name": "Gamma", "status": "Customer"})).await;
    h
}

#[tokio::test]
async fn and_or_negate_term_text_exists() {
    let h = fixture().await;
    let ftes = h.lead_field("FTEs").await;
    let hull = h.lead_field("Hull Account ID").await;
    let q = |inner: Value| json!({"query": {"type": "and", "queries": [lead_type(), inner]}});

    assert_eq!(
        names(&h, json!({"query": lead_type()})).await,
        ["Alpha Corp", "Beta LLC", "Gamma"]
    );
    assert_eq!(
        names(
            &h,
            q(regular(
                "lead",
                "url",
                json!({"type": "term", "values": ["https://beta.example"]})
            ))
        )
        .await,
        ["Beta LLC"]
    );
    assert_eq!(
        names(
            &h,
            q(regular(
                "lead",
                "name",
                json!({"type": "text", "value": "ALPHA"})
            ))
        )
        .await,
        ["Alpha Corp"]
    );
    let custom_exists = json!({"type": "field_condition", "field": {"type": "custom_field", "custom_field_id": hull},
        "condition": {"type": "exists"}});
    assert_eq!(names(&h, q(custom_exists.clone())).await, ["Alpha Corp"]);
    let mut negated = custom_exists;
    negated["negate"] = json!(true);
    assert_eq!(names(&h, q(negated)).await, ["Beta LLC", "Gamma"]);
    let custom_term = json!({"type": "field_condition", "field": {"type": "custom_field", "custom_field_id": hull},
        "condition": {"type": "term", "values": ["acct-a"]}});
    assert_eq!(names(&h, q(custom_term)).await, ["Alpha Corp"]);
    let or = json!({"type": "or", "queries": [
        regular("lead", "name", json!({"type": "term", "values": ["Gamma"]})),
        {"type": "field_condition", "field": {"type": "custom_field", "custom_field_id": ftes},
         "condition": {"type": "number_range", "gte": 100}}]});
    assert_eq!(names(&h, q(or)).await, ["Beta LLC", "Gamma"]);
    let contacts = json!({"query": {"type": "and", "queries": [
        {"type": "object_type", "object_type": "contact"},
        regular("contact", "emails", json!({"type": "term", "values": ["bob@beta.example"]}))]},
        "_fields": {"contact": ["name", "emails"]}});
    let (_, out) = h.post("/data/search/", contacts).await;
    assert_eq!(out["data"].as_array().unwrap().len(), 1);
    assert_eq!(out["data"][0]["__object_type"], "contact");
    assert_eq!(out["data"][0]["name"], "Bob Beta");
    assert!(out["data"][0]["lead_id"]
        .as_str()
        .unwrap()
        .starts_with("lead_"));
}

#[tokio::test]
async fn moment_range_sort_and_fields() {
    let h = fixture().await;
    let (_, all) = h
        .post(
            "/data/search/",
            json!({"query": lead_type(), "_fields": {"lead": ["name", "date_updated"]}}),
        )
        .await;
    let beta = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "Beta LLC")
        .unwrap()
        .clone();
    let beta_updated = beta["date_updated"].as_str().unwrap();
    let range = |cond: Value| json!({"query": {"type": "and", "queries": [lead_type(), regular("lead", "date_updated", cond)]}});
    let after = names(
        &h,
        range(json!({"type": "moment_range",
        "on_or_after": {"type": "fixed_utc", "value": beta_updated}, "before": null})),
    )
    .await;
    assert_eq!(after, ["Beta LLC", "Gamma"]);
    let before = names(
        &h,
        range(json!({"type": "moment_range",
        "before": {"type": "fixed_utc", "value": beta_updated}})),
    )
    .await;
    assert_eq!(before, ["Alpha Corp"]);
    let today = &beta_updated[..10];
    let whole_day = names(
        &h,
        range(json!({"type": "moment_range",
        "on_or_after": {"type": "fixed_local_date", "value": today, "which": "start"},
        "before": {"type": "fixed_local_date", "value": today, "which": "end"}})),
    )
    .await;
    assert_eq!(whole_day.len(), 3);

    let sorted = json!({"query": lead_type(), "_fields": {"lead": ["name"]},
        "sort": [{"direction": "desc", "field": {"type": "regular_field", "object_type": "lead", "field_name": "date_created"}}]});
    let (_, out) = h.post("/data/search/", sorted).await;
    let order: Vec<&str> = out["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["Gamma", "Beta LLC", "Alpha Corp"]);

    let (_, bare) = h.post("/data/search/", json!({"query": lead_type()})).await;
    let keys: Vec<&String> = bare["data"][0].as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["__object_type", "id"],
        "without _fields only type and id"
    );
}

#[tokio::test]
async fn cursor_pagination_limits_and_counts() {
    let h = start(CloseConfig {
        seed: Seed::Generated {
            seed: 3,
            leads: 30,
            contacts_per_lead: 0,
        },
        max_search_results: 25,
        ..Default::default()
    })
    .await;
    let mut body = json!({"query": lead_type(), "_limit": 10, "include_counts": true});
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let (status, out) = h.post("/data/search/", body.clone()).await;
        assert_eq!(status, StatusCode::OK, "{out}");
        pages += 1;
        assert_eq!(out["count"]["total"], 30);
        seen.extend(
            out["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["id"].clone()),
        );
        match out["cursor"].as_str() {
            Some(c) => body["cursor"] = json!(c),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 25, "a pagination sequence stops at the cap");
    let (_, limited) = h
        .post(
            "/data/search/",
            json!({"query": lead_type(), "results_limit": 4, "_limit": 3}),
        )
        .await;
    assert_eq!(limited["data"].as_array().unwrap().len(), 3);
    let (_, rest) = h
        .post("/data/search/", json!({"query": lead_type(), "results_limit": 4, "_limit": 3, "cursor": limited["cursor"]}))
        .await;
    assert_eq!(rest["data"].as_array().unwrap().len(), 1);
    assert!(rest["cursor"].is_null());

    let (status, _) = h
        .post(
            "/data/search/",
            json!({"query": lead_type(), "_limit": 201}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = h
        .post(
            "/data/search/",
            json!({"query": lead_type(), "cursor": "garbage"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = h
        .post("/data/search/", json!({"query": {"type": "bogus"}}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = h
        .post("/data/search/", json!({"query": {"type": "field_condition",
            "field": {"type": "custom_field", "custom_field_id": "cf_nope"}, "condition": {"type": "exists"}}}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
