//! Auth, error shapes, metadata, leads and contacts of the Close simulator, over HTTP.

mod close_support;

use close_support::{start, Harness};
use reqwest::{Method, StatusCode};
use sandbox::close::CloseConfig;
use serde_json::{json, Value};

async fn harness() -> Harness {
    start(CloseConfig::default()).await
}

#[tokio::test]
async fn unknown_or_missing_key_gets_401_with_close_body() {
    let h = harness().await;
    let (status, body) = h.call_as("api_wrong", Method::GET, "/me/", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body["error"]
        .as_str()
        .unwrap_or_default()
        .starts_with("The server could not verify"));
    let resp = h.client.get(h.url("/me/")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn me_reports_user_and_organization() {
    let h = harness().await;
    let (status, me) = h.get("/me/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(me["id"].as_str().unwrap().starts_with("user_"));
    assert!(me["organizations"][0]["id"]
        .as_str()
        .unwrap()
        .starts_with("orga_"));
    assert_eq!(me["memberships"][0]["role_id"], "admin");
    let (status, _) = h.get("/me").await;
    assert_eq!(status, StatusCode::OK, "path without trailing slash");
}

#[tokio::test]
async fn routing_errors_and_bad_bodies() {
    let h = harness().await;
    let (status, body) = h.get("/no_such_thing/").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"].is_string());
    let (status, _) = h.call(Method::PATCH, "/lead/", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);

    let resp = h
        .client
        .post(h.url("/lead/"))
        .basic_auth(&h.key, Some(""))
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("Invalid JSON"));

    let (status, body) = h.post("/lead/", json!({"name": 42})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["field-errors"]["name"], "Not a valid string.");
    let (status, _) = h.post("/lead/", json!(["not", "an", "object"])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn oversize_body_gets_413() {
    let h = start(CloseConfig {
        max_body_bytes: 1000,
        ..Default::default()
    })
    .await;
    let big = "x".repeat(2000);
    let (status, _) = h.post("/lead/", json!({"name": big})).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(h.sim.leads().is_empty());
}

#[tokio::test]
async fn statuses_and_custom_fields_list_and_create() {
    let h = harness().await;
    let (_, statuses) = h.get("/status/lead/").await;
    let labels: Vec<&str> = statuses["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["Potential", "Bad Fit", "Qualified", "Customer"]);
    assert_eq!(statuses["has_more"], false);
    let (status, created) = h.post("/status/lead/", json!({"label": "Churned"})).await;
    assert_eq!(status, StatusCode::OK);
    assert!(created["id"].as_str().unwrap().starts_with("stat_"));

    let (_, page) = h.get("/custom_field/lead/?_limit=2&_skip=1").await;
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    assert_eq!(page["has_more"], true);
    let (_, legacy) = h.get("/custom_fields/lead").await;
    assert!(legacy["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["name"] == "FTEs"));
    let (status, cf) = h
        .post(
            "/custom_field/contact/",
            json!({"name": "Nickname", "type": "text"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(cf["id"].as_str().unwrap().starts_with("cf_"));
    let (status, _) = h
        .post(
            "/custom_field/contact/",
            json!({"name": "Bad", "type": "blob"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn create_lead_with_nested_contacts_and_addresses() {
    let h = harness().await;
    let ftes = h.lead_field("FTEs").await;
    let lead = h
        .lead(json!({
            "name": "Bluth Company",
            "url": "http://thebluthcompany.tumblr.com/",
            "contacts": [{"name": "Gob", "title": "Sr. Vice President",
                "emails": [{"type": "office", "email": "gob@example.com"}],
                "phones": [{"type": "office", "phone": "8004445555"}]}],
            "addresses": [{"label": "business", "address_1": "747 Howard St", "city": "San Francisco",
                "state": "CA", "zipcode": "94103", "country": "US"}],
            format!("custom.{ftes}"): "250",
        }))
        .await;
    let id = lead["id"].as_str().unwrap();
    assert!(id.starts_with("lead_") && id.len() == 48);
    assert_eq!(
        lead["status_label"], "Potential",
        "default status is the first"
    );
    assert_eq!(lead["display_name"], "Bluth Company");
    assert_eq!(lead[format!("custom.{ftes}")], 250);
    assert_eq!(lead["contacts"][0]["phones"][0]["phone"], "+18004445555");
    assert_eq!(
        lead["contacts"][0]["phones"][0]["phone_formatted"],
        "+1 800-444-5555"
    );
    assert_eq!(lead["contacts"][0]["lead_id"], lead["id"]);
    assert_eq!(lead["contact_ids"][0], lead["contacts"][0]["id"]);
    assert_eq!(lead["addresses"][0]["city"], "San Francisco");
    for key in [
        "html_url",
        "organization_id",
        "opportunities",
        "tasks",
        "integration_links",
        "created_by",
        "updated_by",
    ] {
        assert!(lead.get(key).is_some(), "{key}");
    }
    let date = lead["date_updated"].as_str().unwrap();
    assert_eq!(date.len(), "2024-01-01T12:00:00.123000+00:00".len());
    assert!(date.ends_with("+00:00"));
    let (status, fetched) = h.get(&format!("/lead/{id}/")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched, lead);
}

#[tokio::test]
async fn status_rules_on_create() {
    let h = harness().await;
    let (_, statuses) = h.get("/status/lead/").await;
    let qualified = statuses["data"][2]["id"].clone();
    let (status, body) = h
        .post(
            "/lead/",
            json!({"name": "A", "status": "Qualified", "status_id": qualified}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["field-errors"]["status"].is_string());
    let (status, body) = h
        .post("/lead/", json!({"name": "A", "status": "foo"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["field-errors"]["status"]
        .as_str()
        .unwrap()
        .starts_with("Not a valid choice."));
    assert_eq!(body["errors"], json!([]));
    let (status, body) = h
        .post("/lead/", json!({"name": "A", "status_id": "stat_nope"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let lead = h.lead(json!({"name": "A", "status": "Qualified"})).await;
    assert_eq!(lead["status_id"], qualified);
    let lead = h.lead(json!({"name": "B", "status_id": qualified})).await;
    assert_eq!(lead["status_label"], "Qualified");
    let (status, body) = h
        .post("/lead/", json!({"name": "C", "custom.cf_unknown": "x"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["field-errors"]["custom.cf_unknown"].is_string());
}

#[tokio::test]
async fn put_is_a_patch_and_null_clears() {
    let h = harness().await;
    let sub = h.lead_field("Sub-Industry").await;
    let tags = h.lead_field("Tags").await;
    let lead = h
        .lead(
            json!({"name": "Acme", "url": "https://acme.example", "description": "d",
            format!("custom.{sub}"): "Fintech", format!("custom.{tags}"): ["alpha"]}),
        )
        .await;
    let id = lead["id"].as_str().unwrap();
    let (status, updated) = h
        .put(
            &format!("/lead/{id}/"),
            json!({"description": "new", format!("custom.{sub}"): null,
            format!("custom.{tags}.add"): "beta", "contacts": [{"name": "ignored"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["name"], "Acme");
    assert_eq!(updated["url"], "https://acme.example");
    assert_eq!(updated["description"], "new");
    assert!(
        updated.get(format!("custom.{sub}")).is_none(),
        "cleared custom fields disappear"
    );
    assert_eq!(updated[format!("custom.{tags}")], json!(["alpha", "beta"]));
    assert!(
        updated["contacts"].as_array().unwrap().is_empty(),
        "nested contacts ignored on PUT"
    );
    assert!(updated["date_updated"].as_str() > lead["date_updated"].as_str());
    let (_, updated) = h
        .put(
            &format!("/lead/{id}"),
            json!({format!("custom.{tags}.remove"): "alpha"}),
        )
        .await;
    assert_eq!(updated[format!("custom.{tags}")], json!(["beta"]));
}

#[tokio::test]
async fn date_updated_strictly_increases() {
    let h = harness().await;
    let lead = h.lead(json!({"name": "Fast"})).await;
    let id = lead["id"].as_str().unwrap();
    let mut last = lead["date_updated"].as_str().unwrap().to_string();
    for i in 0..20 {
        let (_, l) = h
            .put(
                &format!("/lead/{id}/"),
                json!({"description": i.to_string()}),
            )
            .await;
        let now = l["date_updated"].as_str().unwrap().to_string();
        assert!(now > last, "{now} > {last}");
        last = now;
    }
}

#[tokio::test]
async fn not_found_shapes() {
    let h = harness().await;
    let (status, body) = h.get("/lead/lead_missing/").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        json!({"error": "Empty query: Lead matching query does not exist."})
    );
    let (status, body) = h.put("/lead/lead_missing/", json!({"name": "x"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body["error"],
        "Empty query: Lead matching query does not exist."
    );
    let (status, body) = h.get("/contact/cont_missing/").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        json!({"error": "Empty query: Contact matching query does not exist."})
    );
    let (status, body) = h
        .post(
            "/lead/merge/",
            json!({"source": "lead_x", "destination": "lead_y"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, json!({"errors": ["Source lead does not exist."]}));
}

#[tokio::test]
async fn other_organizations_leads_are_invisible() {
    let h = start(CloseConfig {
        api_keys: vec!["api_org_a".into(), "api_org_b".into()],
        ..Default::default()
    })
    .await;
    let lead = h.lead(json!({"name": "Mine"})).await;
    let id = lead["id"].as_str().unwrap();
    let (status, _) = h
        .call_as("api_org_b", Method::GET, &format!("/lead/{id}/"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = h.call_as("api_org_b", Method::GET, "/lead/", None).await;
    assert_eq!(list["total_results"], 0);
}

#[tokio::test]
async fn delete_and_merge_leads() {
    let h = harness().await;
    let a = h
        .lead(json!({"name": "Source", "contacts": [{"name": "Ann"}]}))
        .await;
    let b = h
        .lead(json!({"name": "Dest", "contacts": [{"name": "Bob"}]}))
        .await;
    let (status, body) = h
        .post(
            "/lead/merge/",
            json!({"source": a["id"], "destination": b["id"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({}));
    let (status, _) = h
        .get(&format!("/lead/{}/", a["id"].as_str().unwrap()))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, dest) = h
        .get(&format!("/lead/{}/", b["id"].as_str().unwrap()))
        .await;
    let names: Vec<&str> = dest["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Bob", "Ann"]);
    let (status, body) = h
        .delete(&format!("/lead/{}/", b["id"].as_str().unwrap()))
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));
    assert!(h.sim.leads().is_empty());
    assert!(h.sim.contacts().is_empty());
}

#[tokio::test]
async fn contacts_crud_and_lead_creation_without_lead_id() {
    let h = harness().await;
    let (status, contact) = h
        .post(
            "/contact/",
            json!({"name": "Lonely Larry", "emails": [{"email": "larry@example.com"}],
            "urls": [{"url": "https://larry.example"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{contact}");
    assert!(contact["id"].as_str().unwrap().starts_with("cont_"));
    assert_eq!(contact["emails"][0]["type"], "office");
    assert_eq!(contact["urls"][0]["type"], "url");
    let lead_id = contact["lead_id"].as_str().unwrap();
    let (_, lead) = h.get(&format!("/lead/{lead_id}/")).await;
    assert_eq!(lead["name"], "Lonely Larry");
    let before = lead["date_updated"].as_str().unwrap().to_string();

    let cid = contact["id"].as_str().unwrap();
    let (status, updated) = h
        .put(
            &format!("/contact/{cid}/"),
            json!({"title": "Boss", "phones": [{"phone": "+44 20 7946 0958", "type": "mobile"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(updated["name"], "Lonely Larry");
    assert_eq!(updated["title"], "Boss");
    assert_eq!(updated["phones"][0]["phone"], "+442079460958");
    assert_eq!(updated["phones"][0]["type"], "mobile");
    let (_, lead) = h.get(&format!("/lead/{lead_id}/")).await;
    assert!(
        lead["date_updated"].as_str().unwrap() > before.as_str(),
        "contact write bumps the lead"
    );

    let (_, second) = h
        .post("/contact/", json!({"name": "Second", "lead_id": lead_id}))
        .await;
    let (_, list) = h
        .get(&format!("/contact/?lead_id={lead_id}&_limit=1"))
        .await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(list["has_more"], true);
    let (_, list) = h.get(&format!("/contact/?lead_id={lead_id}&_skip=1")).await;
    assert_eq!(list["data"][0]["id"], second["id"]);
    assert_eq!(list["has_more"], false);

    let (status, _) = h.delete(&format!("/contact/{cid}/")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = h.get(&format!("/contact/{cid}/")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = h
        .post("/contact/", json!({"name": "X", "lead_id": "lead_nope"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["field-errors"]["lead_id"].is_string());
}

#[tokio::test]
async fn invalid_phone_gives_nested_400() {
    let h = harness().await;
    let (status, body) = h
        .post(
            "/contact/",
            json!({"name": "P", "phones": [{"phone": "not a phone"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        json!({"errors":[],"field-errors":{"phones":{"errors":{"0":{"errors":[],"field-errors":{"phone":"Invalid phone number."}}}}}})
    );
    let (status, body) = h
        .post("/lead/", json!({"name": "L", "contacts": [{"name": "ok"}, {"phones": [{"phone": "+1 555"}, {"phone": "abc"}]}]}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["field-errors"]["contacts"]["errors"]["1"]["field-errors"]["phones"]["errors"]["1"]
            ["field-errors"]["phone"],
        "Invalid phone number."
    );
    assert!(
        h.sim.leads().is_empty(),
        "nothing is stored on a validation error"
    );
}

#[tokio::test]
async fn fields_parameter_limits_output() {
    let h = harness().await;
    let ftes = h.lead_field("FTEs").await;
    let lead = h
        .lead(json!({"name": "F", format!("custom.{ftes}"): 3}))
        .await;
    let id = lead["id"].as_str().unwrap();
    let (_, l) = h.get(&format!("/lead/{id}/?_fields=id,name")).await;
    assert_eq!(l, json!({"id": id, "name": "F"}));
    let (_, l) = h.get(&format!("/lead/{id}/?_fields=id,custom")).await;
    assert_eq!(l, json!({"id": id, format!("custom.{ftes}"): 3}));
}
