//! `GET /lead/`: pagination, caps and the legacy `query` forms.

mod close_support;

use close_support::start;
use reqwest::StatusCode;
use sandbox::close::{CloseConfig, Seed};
use serde_json::{json, Value};

fn ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_string())
        .collect()
}

fn enc(q: &str) -> String {
    url::form_urlencoded::byte_serialize(q.as_bytes()).collect()
}

#[tokio::test]
async fn pagination_and_caps() {
    let h = start(CloseConfig {
        seed: Seed::Generated {
            seed: 7,
            leads: 25,
            contacts_per_lead: 1,
        },
        max_skip: 20,
        ..Default::default()
    })
    .await;
    let (_, first) = h.get("/lead/?_limit=10").await;
    assert_eq!(first["data"].as_array().unwrap().len(), 10);
    assert_eq!(first["has_more"], true);
    assert_eq!(first["total_results"], 25);
    let (_, last) = h.get("/lead/?_limit=10&_skip=20").await;
    assert_eq!(last["data"].as_array().unwrap().len(), 5);
    assert_eq!(last["has_more"], false);
    let (_, default_page) = h.get("/lead/").await;
    assert_eq!(default_page["data"].as_array().unwrap().len(), 25);

    let (status, body) = h.get("/lead/?_limit=201").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("less than or equal to"));
    let (status, body) = h.get("/lead/?_skip=21").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let msg = body["error"].as_str().unwrap();
    assert!(
        msg.contains("less than or equal to") && msg.contains("max_skip = "),
        "{msg}"
    );
    let (status, _) = h.get("/lead/?_limit=abc").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, count_only) = h.get("/lead/?_limit=0").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(count_only["total_results"], 25);
    assert!(count_only["data"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn legacy_date_queries_and_sorts() {
    let h = start(CloseConfig::default()).await;
    let mut created = Vec::new();
    for i in 0..4 {
        created.push(h.lead(json!({"name": format!("L{i}")})).await);
    }
    // Touch the first lead so it becomes the most recently updated.
    let first_id = created[0]["id"].as_str().unwrap();
    let (_, touched) = h
        .put(&format!("/lead/{first_id}/"), json!({"description": "x"}))
        .await;
    let since = created[2]["date_updated"].as_str().unwrap();
    let since_naive = &since[..26];

    for q in [
        format!("date_updated >= \"{since_naive}\""),
        format!("date_updated>=\"{since_naive}\""),
        format!("updated >= {since_naive} sort:updated"),
        format!("sort:date_updated date_updated>=\"{since}\""),
    ] {
        let (status, page) = h.get(&format!("/lead/?query={}", enc(&q))).await;
        assert_eq!(status, StatusCode::OK, "{q}: {page}");
        let got = ids(&page);
        assert_eq!(got.len(), 3, "{q}");
        assert!(got.contains(&first_id.to_string()));
    }
    let (_, page) = h
        .get(&format!("/lead/?query={}", enc("sort:date_updated")))
        .await;
    assert_eq!(ids(&page).last().unwrap(), first_id);
    let (_, page) = h
        .get(&format!("/lead/?query={}", enc("sort:-date_updated")))
        .await;
    assert_eq!(ids(&page)[0], first_id);
    assert_eq!(page["data"][0]["date_updated"], touched["date_updated"]);
    let (_, page) = h
        .get(&format!("/lead/?query={}", enc("sort:updated")))
        .await;
    assert_eq!(ids(&page).last().unwrap(), first_id);
    let (status, _) = h
        .get(&format!(
            "/lead/?query={}",
            enc("date_updated >= \"not a date\"")
        ))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn legacy_exact_match_queries() {
    let h = start(CloseConfig::default()).await;
    let hull_id = h.lead_field("Hull Account ID").await;
    let acme = h
        .lead(
            json!({"name": "Acme Inc", "url": "https://acme.example.com",
            format!("custom.{hull_id}"): "acct-1",
            "contacts": [{"name": "Wile", "emails": [{"email": "wile@acme.example.com"}]}]}),
        )
        .await;
    let _other = h
        .lead(
            json!({"name": "Acme Incorporated", "url": "https://other.example.com",
            format!("custom.{hull_id}"): "acct-2"}),
        )
        .await;
    let acme_id = acme["id"].as_str().unwrap().to_string();
    for q in [
        "url:\"https://acme.example.com\"".to_string(),
        "name:\"Acme Inc\"".to_string(),
        "email_address:\"wile@acme.example.com\"".to_string(),
        format!("\"custom.{hull_id}\":\"acct-1\""),
        "\"custom.Hull Account ID\":\"acct-1\"".to_string(),
        format!("name:\"Acme Inc\" \"custom.{hull_id}\":\"acct-1\""),
    ] {
        let (status, page) = h.get(&format!("/lead/?query={}", enc(&q))).await;
        assert_eq!(status, StatusCode::OK, "{q}: {page}");
        assert_eq!(ids(&page), vec![acme_id.clone()], "{q}");
        assert_eq!(page["total_results"], 1);
    }
    let (_, none) = h
        .get(&format!(
            "/lead/?query={}",
            enc(&format!(
                "name:\"Acme Inc\" \"custom.{hull_id}\":\"acct-2\""
            ))
        ))
        .await;
    assert!(ids(&none).is_empty(), "terms are ANDed");
    let (status, _) = h
        .get(&format!("/lead/?query={}", enc("\"custom.cf_nope\":\"x\"")))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
