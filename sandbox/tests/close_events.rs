//! The event log: shapes, order, cursors, filters and caps.

mod close_support;

use close_support::start;
use reqwest::StatusCode;
use sandbox::close::CloseConfig;
use serde_json::{json, Value};

fn data(v: &Value) -> &Vec<Value> {
    v["data"].as_array().unwrap()
}

#[tokio::test]
async fn writes_append_events_with_close_shape() {
    let h = start(CloseConfig::default()).await;
    let lead = h
        .lead(json!({"name": "Evented", "contacts": [{"name": "C"}]}))
        .await;
    let id = lead["id"].as_str().unwrap();
    h.put(&format!("/lead/{id}/"), json!({"name": "Renamed"}))
        .await;
    let (_, page) = h.get(&format!("/event/?lead_id={id}")).await;
    let events = data(&page);
    assert_eq!(events.len(), 3);
    let update = &events[0];
    assert_eq!(update["action"], "updated");
    assert_eq!(update["object_type"], "lead");
    assert!(update["id"].as_str().unwrap().starts_with("ev_"));
    assert!(update["request_id"].as_str().unwrap().starts_with("req_"));
    let date = update["date_created"].as_str().unwrap();
    assert_eq!(
        date.len(),
        "2019-01-15T12:48:23.395000".len(),
        "no offset on events"
    );
    let changed: Vec<&str> = update["changed_fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(changed.contains(&"name") && changed.contains(&"date_updated"));
    assert_eq!(update["previous_data"]["name"], "Evented");
    assert!(
        update["previous_data"].get("url").is_none(),
        "only changed fields"
    );
    assert_eq!(update["data"]["name"], "Renamed");
    assert_eq!(update["meta"]["request_method"], "PUT");
    assert_eq!(
        update["meta"]["request_path"],
        format!("/api/v1/lead/{id}/")
    );
    assert!(update["api_key_id"].is_string());
    assert_eq!(events[1]["object_type"], "contact");
    assert_eq!(events[2]["action"], "created");
    assert_eq!(
        events[1]["request_id"], events[2]["request_id"],
        "one request, one request_id"
    );

    let (_, by_req) = h
        .get(&format!(
            "/event/?request_id={}",
            events[2]["request_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(data(&by_req).len(), 2);
    let (status, one) = h
        .get(&format!("/event/{}/", update["id"].as_str().unwrap()))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&one, update);

    h.delete(&format!("/lead/{id}/")).await;
    let (_, deleted) = h.get("/event/?object_type=lead&action=deleted").await;
    let del = &data(&deleted)[0];
    assert!(del["data"].is_null());
    assert_eq!(del["previous_data"]["name"], "Renamed");
    let (_, contact_deleted) = h.get("/event/?object_type=contact&action=deleted").await;
    assert_eq!(
        data(&contact_deleted).len(),
        1,
        "deleting a lead deletes its contacts"
    );
}

#[tokio::test]
async fn ui_changes_and_merges_are_logged() {
    let h = start(CloseConfig::default()).await;
    let a = h.lead(json!({"name": "A"})).await;
    let b = h.lead(json!({"name": "B"})).await;
    let (a_id, b_id) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    let updated = h
        .sim
        .ui_update_lead(b_id, json!({"description": "from the UI"}))
        .unwrap();
    assert_eq!(updated["description"], "from the UI");
    h.sim.ui_merge_leads(a_id, b_id).unwrap();
    let (_, merged) = h.get("/event/?object_type=lead&action=merged").await;
    let ev = &data(&merged)[0];
    assert_eq!(ev["object_id"], b_id);
    assert_eq!(ev["meta"]["merge_source_lead_id"], a_id);
    assert_eq!(ev["meta"]["merge_destination_lead_id"], b_id);
    assert!(ev["api_key_id"].is_null(), "UI changes carry no API key");
    let (_, me) = h.get("/me/").await;
    assert_ne!(ev["user_id"], me["id"]);
    assert!(h.sim.ui_update_lead("lead_missing", json!({})).is_err());
}

#[tokio::test]
async fn newest_first_with_cursors() {
    let h = start(CloseConfig::default()).await;
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(h.lead(json!({"name": format!("L{i}")})).await["id"].clone());
    }
    let mut seen = Vec::new();
    let mut url = "/event/?object_type=lead&action=created&_limit=3".to_string();
    let mut first_previous = None;
    loop {
        let (status, page) = h.get(&url).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        if first_previous.is_none() {
            first_previous = page["cursor_previous"].as_str().map(str::to_string);
        }
        seen.extend(data(&page).iter().map(|e| e["object_id"].clone()));
        match page["cursor_next"].as_str() {
            Some(c) => {
                url = format!("/event/?object_type=lead&action=created&_limit=3&_cursor={c}")
            }
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids, "newest first, all pages");
    let newer = h.lead(json!({"name": "Newer"})).await;
    let (_, page) = h
        .get(&format!(
            "/event/?object_type=lead&action=created&_cursor={}",
            first_previous.unwrap()
        ))
        .await;
    assert_eq!(data(&page).len(), 1);
    assert_eq!(data(&page)[0]["object_id"], newer["id"]);

    let since = data(&page)[0]["date_updated"].as_str().unwrap().to_string();
    let (_, filtered) = h.get(&format!("/event/?date_updated__gte={since}")).await;
    assert_eq!(data(&filtered).len(), 1);
    let (_, filtered) = h.get(&format!("/event/?date_updated__lt={since}")).await;
    assert_eq!(data(&filtered).len(), 7);
}

#[tokio::test]
async fn limits_and_filter_combinations() {
    let h = start(CloseConfig::default()).await;
    for i in 0..55 {
        h.lead(json!({"name": format!("L{i}")})).await;
    }
    let (_, page) = h.get("/event/").await;
    assert_eq!(data(&page).len(), 50, "default _limit is 50");
    assert!(page["cursor_next"].is_string());
    let (status, _) = h.get("/event/?_limit=51").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = h.get("/event/?_skip=10").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = h.get("/event/?object_type=lead").await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "object_type alone is not an allowed combination"
    );
    let (status, _) = h.get("/event/?action=created&request_id=req_x").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    for ok in [
        "object_type=lead&action=created",
        "object_type=lead&object_id=lead_x",
        "lead_id=lead_x&object_type=contact",
        "user_id=user_x",
    ] {
        let (status, _) = h.get(&format!("/event/?{ok}")).await;
        assert_eq!(status, StatusCode::OK, "{ok}");
    }
}
