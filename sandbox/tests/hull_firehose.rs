//! Firehose: token verification, trait operations, identity resolution, links, faults.

mod hull_support;

use hull_support::*;
use sandbox::hull::{FirehoseFault, HullConfig};
use serde_json::{json, Value};

#[tokio::test]
async fn good_token_is_applied_and_logged() {
    let sim = start(config()).await;
    let (status, _) = firehose(
        &sim,
        vec![entry(
            "traits",
            user_claims(json!({"email": "gob@bluth.com", "anonymous_id": "closeio:cont_1"})),
            json!({"closeio/title": "Magician", "name": {"operation": "setIfNull", "value": "Gob"}}),
        )],
    )
    .await;
    assert_eq!(status, 200);
    let user = sim
        .find_user("email", "gob@bluth.com")
        .expect("user created");
    assert_eq!(user.attributes["closeio/title"], "Magician");
    assert_eq!(user.attributes["name"], "Gob");
    assert_eq!(user.anonymous_ids, vec!["closeio:cont_1".to_string()]);
    let log = sim.firehose_log();
    assert_eq!(log.len(), 1);
    assert_eq!(sim.firehose_entries(), 1);
    assert_eq!(sim.firehose_calls(), 1);
    assert!(log[0].accepted);
    assert_eq!(log[0].claims["io.hull.asUser"]["email"], "gob@bluth.com");
    sim.shutdown().await;
}

#[tokio::test]
async fn bad_tokens_reject_the_whole_batch() {
    let sim = start(config()).await;
    let good = entry(
        "traits",
        user_claims(json!({"email": "a@b.com"})),
        json!({"x": 1}),
    );
    let wrong_secret = json!({
        "type": "traits", "body": {"x": 2},
        "headers": {"Hull-Access-Token": token("not-the-secret", user_claims(json!({"email": "c@d.com"})))}
    });
    // alg "none", no signature
    let unsigned_token = format!(
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
        base64_url(&user_claims(json!({"email": "e@f.com"})).to_string())
    );
    let unsigned = json!({"type": "traits", "body": {"x": 3}, "headers": {"Hull-Access-Token": unsigned_token}});
    let mut tampered = entry(
        "traits",
        user_claims(json!({"email": "g@h.com"})),
        json!({"x": 4}),
    );
    let tok = tampered["headers"]["Hull-Access-Token"]
        .as_str()
        .expect("token")
        .to_string();
    let (head, _) = tok.rsplit_once('.').expect("jwt");
    tampered["headers"]["Hull-Access-Token"] = json!(format!("{head}.AAAA"));

    for bad in [wrong_secret, unsigned, tampered] {
        let (status, body) = firehose(&sim, vec![good.clone(), bad]).await;
        assert_eq!(status, 401, "{body}");
        assert!(body["message"]
            .as_str()
            .expect("message")
            .contains("Hull-Access-Token"));
    }
    assert!(sim.users().is_empty(), "nothing applied");
    let log = sim.firehose_log();
    assert_eq!(log.len(), 6);
    // Refused entries are counted as received too: three calls of two entries.
    assert_eq!((sim.firehose_entries(), sim.firehose_calls()), (6, 3));
    assert!(log
        .iter()
        .all(|r| !r.accepted && r.status == 401 && r.reason.is_some()));

    // Outer token: wrong secret, then a secret-signed JWT.
    let outer = |token: String| {
        reqwest::Client::new()
            .post(format!("{}/firehose", sim.base_url()))
            .header("Hull-App-Id", CONNECTOR_ID)
            .header("Hull-Access-Token", token)
            .header("Hull-Organization", sim.organization())
            .json(&json!({"batch": [good.clone()]}))
            .send()
    };
    assert_eq!(outer("nope".into()).await.expect("call").status(), 401);
    let jwt = token(SECRET, json!({"iss": CONNECTOR_ID}));
    assert_eq!(outer(jwt).await.expect("call").status(), 200);
    assert!(sim.find_user("email", "a@b.com").is_some());
    sim.shutdown().await;
}

fn base64_url(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

#[tokio::test]
async fn trait_operations() {
    let sim = start(config()).await;
    let claims = || account_claims(json!({"domain": "acme.com"}));
    let steps = [
        json!({"n": 5, "s": "a", "keep": "first", "gone": "x", "d": 10}),
        json!({
            "n": {"operation": "inc", "value": 2},
            "d": {"operation": "dec", "value": 3},
            "fresh": {"operation": "inc", "value": 1.5},
            "keep": {"operation": "setIfNull", "value": "second"},
            "unset": {"operation": "setIfNull", "value": "filled"},
            "s": {"operation": "set", "value": "b"},
            "gone": null,
        }),
    ];
    for body in steps {
        let (status, _) = firehose(&sim, vec![entry("traits", claims(), body)]).await;
        assert_eq!(status, 200);
    }
    let account = sim.find_account("domain", "acme.com").expect("account");
    let a = &account.attributes;
    assert_eq!(a["n"], 7);
    assert_eq!(a["d"], 7);
    assert_eq!(a["fresh"], 1.5);
    assert_eq!(a["keep"], "first");
    assert_eq!(a["unset"], "filled");
    assert_eq!(a["s"], "b");
    assert!(!a.contains_key("gone"));
    assert_eq!(a["domain"], "acme.com");

    // inc on a string is rejected for that entry only; an unknown operation is a 400.
    let (status, _) = firehose(
        &sim,
        vec![entry(
            "traits",
            claims(),
            json!({"s": {"operation": "inc", "value": 1}}),
        )],
    )
    .await;
    assert_eq!(status, 200);
    assert!(!sim.firehose_log().last().expect("log").accepted);
    let (status, body) = firehose(
        &sim,
        vec![entry(
            "traits",
            claims(),
            json!({"s": {"operation": "explode", "value": 1}}),
        )],
    )
    .await;
    assert_eq!(status, 400);
    assert!(body["message"].is_string());
    sim.shutdown().await;
}

#[tokio::test]
async fn identity_resolution() {
    let mut cfg = config();
    cfg.users = vec![
        json!({"email": "one@acme.com", "external_id": "ext-1"}),
        json!({"email": "two@acme.com"}),
    ];
    let sim = start(cfg).await;
    let one = sim.find_user("external_id", "ext-1").expect("seed").id;
    let two = sim.find_user("email", "two@acme.com").expect("seed").id;

    // external_id beats email
    firehose(
        &sim,
        vec![entry(
            "traits",
            user_claims(json!({"external_id": "ext-1", "email": "two@acme.com"})),
            json!({"hit": "ext"}),
        )],
    )
    .await;
    assert_eq!(
        sim.find_user("id", &one).expect("one").attributes["hit"],
        "ext"
    );
    assert!(!sim
        .find_user("id", &two)
        .expect("two")
        .attributes
        .contains_key("hit"));

    // anonymous ids accumulate, and then identify
    for anon in ["closeio:cont_a", "closeio:cont_b"] {
        firehose(
            &sim,
            vec![entry(
                "traits",
                user_claims(json!({"email": "TWO@acme.com", "anonymous_id": anon})),
                json!({}),
            )],
        )
        .await;
    }
    let user = sim
        .find_user("anonymous_id", "closeio:cont_b")
        .expect("by anon");
    assert_eq!(user.id, two);
    assert_eq!(user.anonymous_ids, vec!["closeio:cont_a", "closeio:cont_b"]);
    firehose(
        &sim,
        vec![entry(
            "alias",
            user_claims(json!({"id": two})),
            json!({"anonymous_id": "x:1"}),
        )],
    )
    .await;
    firehose(
        &sim,
        vec![entry(
            "unalias",
            user_claims(json!({"id": two})),
            json!({"anonymous_id": "closeio:cont_a"}),
        )],
    )
    .await;
    assert_eq!(
        sim.find_user("id", &two).expect("two").anonymous_ids,
        vec!["closeio:cont_b", "x:1"]
    );

    // accounts: domain, then anonymous id; generic domains are not stored
    firehose(
        &sim,
        vec![entry(
            "traits",
            account_claims(json!({"domain": "bluth.com", "anonymous_id": "closeio:lead_1"})),
            json!({"closeio/name": "Bluth"}),
        )],
    )
    .await;
    firehose(
        &sim,
        vec![entry(
            "traits",
            account_claims(json!({"anonymous_id": "closeio:lead_1"})),
            json!({"closeio/id": "lead_1"}),
        )],
    )
    .await;
    assert_eq!(sim.accounts().len(), 1);
    let account = sim.find_account("domain", "bluth.com").expect("account");
    assert_eq!(account.attributes["closeio/id"], "lead_1");
    firehose(
        &sim,
        vec![entry(
            "traits",
            account_claims(json!({"domain": "gmail.com", "anonymous_id": "closeio:lead_2"})),
            json!({"closeio/name": "Free"}),
        )],
    )
    .await;
    let free = sim
        .find_account("anonymous_id", "closeio:lead_2")
        .expect("created by anon");
    assert!(!free.attributes.contains_key("domain"));

    // io.hull.create = false
    let mut claims = user_claims(json!({"email": "nobody@acme.com"}));
    claims["io.hull.create"] = json!(false);
    let (status, _) = firehose(&sim, vec![entry("traits", claims, json!({"a": 1}))]).await;
    assert_eq!(status, 200);
    assert!(sim.find_user("email", "nobody@acme.com").is_none());
    assert!(!sim.firehose_log().last().expect("log").accepted);
    sim.shutdown().await;
}

#[tokio::test]
async fn empty_traits_with_both_claims_link_user_to_account() {
    let sim = start(config()).await;
    let claims = json!({
        "iss": CONNECTOR_ID,
        "io.hull.asUser": {"email": "lucille@bluth.com", "anonymous_id": "closeio:cont_9"},
        "io.hull.asAccount": {"domain": "bluth.com"},
        "io.hull.subjectType": "account",
    });
    let (status, _) = firehose(&sim, vec![entry("traits", claims, json!({}))]).await;
    assert_eq!(status, 200);
    let account = sim
        .find_account("domain", "bluth.com")
        .expect("account created");
    let user = sim.find_user("email", "lucille@bluth.com").expect("user");
    assert_eq!(user.account_id.as_deref(), Some(account.id.as_str()));
    sim.shutdown().await;
}

#[tokio::test]
async fn track_events_are_recorded() {
    let sim = start(config()).await;
    let body = json!({"event": "Email sent", "properties": {"subject": "hi"}, "event_id": "ev-1", "source": "closeio"});
    firehose(
        &sim,
        vec![entry(
            "track",
            user_claims(json!({"email": "t@acme.com"})),
            body.clone(),
        )],
    )
    .await;
    firehose(
        &sim,
        vec![entry(
            "track",
            user_claims(json!({"email": "t@acme.com"})),
            body,
        )],
    )
    .await;
    let state: Value = reqwest::get(format!("{}/_sandbox/state", sim.base_url()))
        .await
        .expect("state")
        .json()
        .await
        .expect("json");
    let events = state["events"].as_array().expect("events");
    assert_eq!(events.len(), 1, "same event_id de-duplicates");
    assert_eq!(events[0]["event"], "Email sent");
    sim.shutdown().await;
}

#[tokio::test]
async fn malformed_oversize_and_missing_headers() {
    let sim = start(HullConfig {
        max_body_bytes: 2048,
        ..config()
    })
    .await;
    let client = reqwest::Client::new();
    let post = |body: String| {
        client
            .post(sim.firehose_url())
            .header("Hull-App-Id", CONNECTOR_ID)
            .header("Hull-Access-Token", SECRET)
            .header("Hull-Organization", sim.organization())
            .header("content-type", "application/json")
            .body(body)
    };
    let response = post("{not json".into()).send().await.expect("call");
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert!(body["message"].as_str().expect("message").contains("JSON"));
    assert_eq!(
        post(json!({"batch": {}}).to_string())
            .send()
            .await
            .expect("call")
            .status(),
        400
    );
    assert_eq!(
        post(json!({"batch": [{"type": "traits", "body": [], "headers": {}}]}).to_string())
            .send()
            .await
            .expect("call")
            .status(),
        400
    );
    let big = json!({"batch": [], "pad": "x".repeat(4096)}).to_string();
    assert_eq!(post(big).send().await.expect("call").status(), 413);
    let no_headers = client
        .post(sim.firehose_url())
        .json(&json!({"batch": []}))
        .send()
        .await
        .expect("call");
    assert_eq!(no_headers.status(), 401);
    sim.shutdown().await;
}

#[tokio::test]
async fn firehose_faults() {
    let sim = start(config()).await;
    let e = || {
        vec![entry(
            "traits",
            user_claims(json!({"email": "f@acme.com"})),
            json!({"a": 1}),
        )]
    };
    sim.set_firehose_fault(FirehoseFault {
        outage: true,
        ..FirehoseFault::default()
    });
    assert_eq!(firehose(&sim, e()).await.0, 503);
    // error_rate 1 with a chosen status, set over the control API
    let response = reqwest::Client::new()
        .put(format!("{}/_sandbox/firehose-fault", sim.base_url()))
        .json(&json!({"error_rate": 1.0, "status": 500}))
        .send()
        .await
        .expect("fault");
    assert_eq!(response.status(), 200);
    assert_eq!(firehose(&sim, e()).await.0, 500);
    assert!(sim.users().is_empty());
    sim.set_firehose_fault(FirehoseFault::default());
    assert_eq!(firehose(&sim, e()).await.0, 200);
    assert_eq!(sim.users().len(), 1);
    let log = sim.firehose_log();
    assert_eq!(
        log.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![503, 500, 200]
    );
    sim.shutdown().await;
}
