//! Platform REST API, control API, seeds and the generator.

mod hull_support;

use hull_support::*;
use reqwest::Method;
use sandbox::hull::{GenerateSpec, HullConfig};
use serde_json::{json, Value};

async fn get_json(builder: reqwest::RequestBuilder) -> (u16, Value) {
    let response = builder.send().await.expect("call");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn connector_object_and_settings() {
    let sim = start(config()).await;
    for path in ["app", "app/", CONNECTOR_ID] {
        let (status, body) = get_json(rest(&sim, Method::GET, path)).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(body["id"], CONNECTOR_ID);
        assert_eq!(body["secret"], SECRET);
        assert_eq!(body["private_settings"]["api_key"], "key");
        assert!(body["manifest"].is_object());
    }
    // PUT replaces private_settings.
    let (status, body) = get_json(
        rest(&sim, Method::PUT, CONNECTOR_ID)
            .json(&json!({"private_settings": {"lead_status": "N/A"}})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["private_settings"], json!({"lead_status": "N/A"}));
    let (status, _) =
        get_json(rest(&sim, Method::PUT, "app").json(&json!({"settings": {"x": 1}}))).await;
    assert_eq!(status, 200);
    let connector = sim.connector(CONNECTOR_ID).expect("connector");
    assert_eq!(connector.private_settings, json!({"lead_status": "N/A"}));
    assert_eq!(connector.settings, json!({"x": 1}));
    let (status, body) =
        get_json(rest(&sim, Method::PUT, CONNECTOR_ID).json(&json!({"private_settings": [1]})))
            .await;
    assert_eq!(status, 400);
    assert!(body["message"].is_string());
    sim.shutdown().await;
}

#[tokio::test]
async fn status_segments_and_bootstrap() {
    let mut cfg = config();
    cfg.users_segments = vec![json!({"id": "5c00000000000000000000aa", "name": "Leads"})];
    cfg.accounts = vec![json!({"domain": "acme.com", "closeio/id": "lead_1"})];
    cfg.users = vec![json!({"email": "a@acme.com", "closeio/title": "CTO"})];
    let sim = start(cfg).await;
    let status_path = format!("{CONNECTOR_ID}/status");
    let body = json!({"status": "warning", "messages": ["No API key"]});
    let (status, _) = get_json(rest(&sim, Method::PUT, &status_path).json(&body)).await;
    assert_eq!(status, 200);
    let log = sim.status_log();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["status"], "warning");
    assert_eq!(log[0]["messages"], json!(["No API key"]));
    assert_eq!(sim.connector(CONNECTOR_ID).expect("c").status, body);
    let (_, over_http) =
        get_json(reqwest::Client::new().get(format!("{}/_sandbox/status", sim.base_url()))).await;
    assert_eq!(over_http[0]["status"], "warning");
    let (status, _) =
        get_json(rest(&sim, Method::PUT, &status_path).json(&json!({"messages": "x"}))).await;
    assert_eq!(status, 400);

    for path in ["users_segments", "segments", "users_segments/"] {
        let (status, body) = get_json(rest(&sim, Method::GET, path)).await;
        assert_eq!(status, 200);
        assert_eq!(body[0]["name"], "Leads");
        assert_eq!(body[0]["type"], "users_segment");
    }
    let (_, body) = get_json(rest(&sim, Method::GET, "accounts_segments?shipId=x")).await;
    assert_eq!(body.as_array().expect("list").len(), 2);
    assert_eq!(body[0]["type"], "accounts_segment");
    let (_, segment) = get_json(rest(&sim, Method::GET, "5c00000000000000000000aa")).await;
    assert_eq!(segment["name"], "Leads");

    let (_, tree) = get_json(rest(&sim, Method::GET, "search/user_reports/bootstrap")).await;
    let ids: Vec<String> = tree["tree"]
        .as_array()
        .expect("tree")
        .iter()
        .flat_map(|g| g["children"].as_array().expect("children").clone())
        .map(|c| c["id"].as_str().expect("id").to_string())
        .collect();
    assert!(
        ids.contains(&"traits_closeio/title".to_string()) && ids.contains(&"email".to_string())
    );
    let (status, tree) =
        get_json(rest(&sim, Method::GET, "search/account_reports/bootstrap/")).await;
    assert_eq!(status, 200);
    assert!(tree.to_string().contains("\"closeio/id\""));
    sim.shutdown().await;
}

#[tokio::test]
async fn credentials_and_unknown_routes() {
    let sim = start(config()).await;
    let client = reqwest::Client::new();
    let url = |p: &str| format!("{}/api/v1/{p}", sim.base_url());
    let (status, body) = get_json(client.get(url("app"))).await;
    assert_eq!(status, 401);
    assert!(body["message"].is_string());
    let wrong = client
        .get(url("app"))
        .header("Hull-App-Id", CONNECTOR_ID)
        .header("Hull-Access-Token", "wrong");
    assert_eq!(get_json(wrong).await.0, 404);
    let other_org = client
        .get(url("app"))
        .header("Hull-App-Id", CONNECTOR_ID)
        .header("Hull-Access-Token", SECRET)
        .header("Hull-Organization", "other.hullapp.io");
    assert_eq!(get_json(other_org).await.0, 404);
    let query = client.get(url(&format!(
        "app?app_id={CONNECTOR_ID}&access_token={SECRET}"
    )));
    assert_eq!(get_json(query).await.0, 200);
    let jwt = token(SECRET, json!({"iss": CONNECTOR_ID}));
    let with_jwt = client
        .get(url("app"))
        .header("Hull-App-Id", CONNECTOR_ID)
        .header("Hull-Access-Token", jwt);
    assert_eq!(get_json(with_jwt).await.0, 200);
    assert_eq!(
        get_json(rest(&sim, Method::GET, "ffffffffffffffffffffffff"))
            .await
            .0,
        404
    );
    let (status, body) = get_json(client.get(format!("{}/nope/nothing", sim.base_url()))).await;
    assert_eq!(status, 404);
    assert_eq!(body["message"], "Not Found");
    assert_eq!(get_json(rest(&sim, Method::GET, "a/b/c")).await.0, 404);
    sim.shutdown().await;
}

#[tokio::test]
async fn default_connector_and_generator_are_deterministic() {
    let spec = GenerateSpec {
        seed: 42,
        n_accounts: 5,
        users_per_account: 3,
        segment_probability: 0.5,
    };
    let cfg = || HullConfig {
        generate: Some(spec.clone()),
        ..HullConfig::default()
    };
    let a = start(cfg()).await;
    let b = start(cfg()).await;
    let connectors = a.connectors();
    assert_eq!(connectors.len(), 1);
    let c = &connectors[0];
    assert!(c.id.len() == 24 && c.id.chars().all(|ch| ch.is_ascii_hexdigit()));
    assert_eq!(c.id, b.connectors()[0].id);
    assert_eq!(c.secret, b.connectors()[0].secret);
    assert_eq!(a.organization(), format!("127.0.0.1:{}", a.addr().port()));
    assert_eq!(a.accounts(), b.accounts());
    assert_eq!(a.users(), b.users());
    assert_eq!(a.accounts().len(), 5);
    let users = a.users();
    assert_eq!(users.len(), 15);
    assert!(users.iter().all(|u| u.account_id.is_some()));
    let other = start(HullConfig {
        generate: Some(GenerateSpec {
            seed: 43,
            ..spec.clone()
        }),
        ..HullConfig::default()
    })
    .await;
    assert_ne!(other.users(), a.users());
    for sim in [a, b, other] {
        sim.shutdown().await;
    }
}

#[tokio::test]
async fn control_api_state_connectors_upserts_and_reset() {
    let mut cfg = config();
    cfg.accounts = vec![json!({"domain": "acme.com"})];
    let sim = start(cfg).await;
    let client = reqwest::Client::new();
    let base = sim.base_url();
    let (status, body) = get_json(
        client
            .put(format!("{base}/_sandbox/connectors/{CONNECTOR_ID}"))
            .json(&json!({"url": "http://127.0.0.1:9/", "private_settings": {"api_key": "k2"}})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["private_settings"]["api_key"], "k2");
    assert_eq!(
        sim.connector(CONNECTOR_ID).expect("c").url.as_deref(),
        Some("http://127.0.0.1:9")
    );
    assert_eq!(
        get_json(
            client
                .put(format!(
                    "{base}/_sandbox/connectors/ffffffffffffffffffffffff"
                ))
                .json(&json!({}))
        )
        .await
        .0,
        404
    );

    let account = sim.find_account("domain", "acme.com").expect("seed").id;
    let (_, user) = get_json(
        client
            .post(format!("{base}/_sandbox/users"))
            .json(&json!({"email": "u@acme.com", "account_id": account, "segment_ids": ["5c0000000000000000000101"]})),
    )
    .await;
    let user_id = user["id"].as_str().expect("id").to_string();
    let stored = sim.find_user("id", &user_id).expect("user");
    assert_eq!(stored.account_id.as_deref(), Some(account.as_str()));
    assert_eq!(stored.segment_ids, vec!["5c0000000000000000000101"]);
    // Upsert again by email updates the same user.
    assert_eq!(
        sim.upsert_user(json!({"email": "u@acme.com", "name": "U"})),
        user_id
    );
    sim.set_account_segments(&account, &["5c0000000000000000000201"]);
    assert_eq!(
        sim.find_account("id", &account).expect("a").segment_ids,
        vec!["5c0000000000000000000201"]
    );

    let (_, state) = get_json(client.get(format!("{base}/_sandbox/state"))).await;
    assert_eq!(state["users"].as_array().expect("users").len(), 1);
    assert_eq!(state["users"][0]["attributes"]["name"], "U");
    assert_eq!(state["accounts"][0]["attributes"]["domain"], "acme.com");
    assert_eq!(
        get_json(client.post(format!("{base}/_sandbox/users")).body("[1]"))
            .await
            .0,
        400
    );

    firehose(
        &sim,
        vec![entry(
            "traits",
            user_claims(json!({"email": "z@acme.com"})),
            json!({}),
        )],
    )
    .await;
    let (_, log) = get_json(client.get(format!("{base}/_sandbox/firehose"))).await;
    assert_eq!(log.as_array().expect("log").len(), 1);
    let reset = client
        .post(format!("{base}/_sandbox/reset"))
        .send()
        .await
        .expect("reset");
    assert!(reset.status().is_success());
    assert!(sim.users().is_empty());
    assert_eq!(sim.accounts().len(), 1);
    assert!(sim.firehose_log().is_empty());
    assert_eq!(
        sim.connector(CONNECTOR_ID).expect("kept").private_settings["api_key"],
        "k2"
    );
    sim.shutdown().await;
}
