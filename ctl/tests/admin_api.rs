//! The HTTP admin API (`admin`, served by the scheduler on `ADMIN_LISTEN`) over real
//! HTTP on an ephemeral port: the bearer token is required, and it offers what `closeio-ctl`
//! offers.

mod support;

use reqwest::StatusCode;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use common::jobs::QueueKind;
use support::*;

const TOKEN: &str = "admin-token-for-tests-0123456789";

struct Api {
    base: String,
    http: reqwest::Client,
    stop: CancellationToken,
}

impl Api {
    async fn start(f: &Fixture) -> Api {
        let (base, stop) = serve_admin(f, TOKEN).await;
        Api {
            base,
            http: reqwest::Client::new(),
            stop,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("request");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path).await
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[tokio::test]
async fn every_route_requires_the_bearer_token() {
    let f = Fixture::new().await;
    let api = Api::start(&f).await;
    for path in [
        "/connectors",
        "/dlq",
        "/retries",
        "/connectors/x",
        &format!("/dlq/{}", uuid::Uuid::new_v4()),
    ] {
        let none = api
            .http
            .get(format!("{}{path}", api.base))
            .send()
            .await
            .expect("request");
        assert_eq!(none.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(
            none.headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok()),
            Some("Bearer")
        );
        let wrong = api
            .http
            .get(format!("{}{path}", api.base))
            .bearer_auth("admin-token-for-tests-0123456780")
            .send()
            .await
            .expect("request");
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED, "{path}");
        let basic = api
            .http
            .get(format!("{}{path}", api.base))
            .basic_auth(TOKEN, Some(""))
            .send()
            .await
            .expect("request");
        assert_eq!(basic.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    let replay = api
        .http
        .post(format!("{}/dlq/replay", api.base))
        .send()
        .await
        .expect("request");
    assert_eq!(replay.status(), StatusCode::UNAUTHORIZED);
    let purge = api
        .http
        .delete(format!("{}/dlq", api.base))
        .send()
        .await
        .expect("request");
    assert_eq!(purge.status(), StatusCode::UNAUTHORIZED);
    f.cleanup().await;
}

#[tokio::test]
async fn connectors_dead_letters_and_retries_over_http() {
    let f = Fixture::new().await;
    let store = f.store(KEY_A, None);
    seed_connector(&store).await;
    let first = seed_dead_letter(&store, "one.example.com").await;
    seed_dead_letter(&store, "two.example.com").await;
    let waiting = account_job("waiting.example.com");
    store
        .schedule_retry(
            &waiting,
            "Close: Close server error 502",
            chrono::Utc::now(),
            false,
        )
        .await
        .expect("retry");
    f.queue().declare_topology().await.expect("topology");
    let api = Api::start(&f).await;

    let (status, body) = api.get("/connectors").await;
    assert_eq!(status, StatusCode::OK);
    let c = &body["connectors"][0];
    assert_eq!(c["id"], CONNECTOR);
    assert_eq!(c["dead_letters"], 2);
    assert_eq!(c["retries"], 1);
    assert!(c["lag_seconds"].as_f64().is_some_and(|l| l >= 0.0), "{c}");
    assert_eq!(body["queues"]["outgoing"], 0);

    let (status, detail) = api.get(&format!("/connectors/{CONNECTOR}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(detail["api_key_configured"], true);
    assert!(
        !detail.to_string().contains(API_KEY),
        "no secret in the answer"
    );
    assert_eq!(
        api.get("/connectors/unknown").await.0,
        StatusCode::NOT_FOUND
    );

    let (_, list) = api
        .get("/dlq?error=does%20not%20exist&connector=5c092905c36af496c700012e")
        .await;
    assert_eq!(list["dead_letters"].as_array().map(Vec::len), Some(2));
    let (_, none) = api.get("/dlq?kind=outgoing_user").await;
    assert_eq!(none["dead_letters"].as_array().map(Vec::len), Some(0));
    let (status, one) = api.get(&format!("/dlq/{first}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        one["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("status: Status matching query does not exist"),
        "{one}"
    );
    assert_eq!(one["errors"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        api.get(&format!("/dlq/{}", uuid::Uuid::new_v4())).await.0,
        StatusCode::NOT_FOUND
    );

    let (status, r) = api
        .call(reqwest::Method::POST, &format!("/dlq/{first}/replay"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(r["replayed"], 1);
    let (_, r) = api
        .call(
            reqwest::Method::POST,
            &format!("/dlq/replay?connector={CONNECTOR}"),
        )
        .await;
    assert_eq!(r["replayed"], 1, "only the one not replayed yet");
    let q = f.queue();
    assert_eq!(
        q.depth(&q.topology().queue(QueueKind::Outgoing))
            .await
            .expect("depth"),
        2
    );

    let (_, retries) = api.get("/retries?limit=10").await;
    assert_eq!(retries["retries"][0]["id"], waiting.id.to_string());
    assert_eq!(retries["retries"][0]["state"], "scheduled");

    let (status, imported) = api.call(reqwest::Method::POST, "/dlq/import-broker").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(imported["imported"], 0, "{imported}");

    let (_, purged) = api
        .call(reqwest::Method::DELETE, "/dlq?replayed=true")
        .await;
    assert_eq!(purged["deleted"], 2);
    let (_, left) = api.get("/dlq?all=true").await;
    assert_eq!(left["dead_letters"].as_array().map(Vec::len), Some(0));
    f.cleanup().await;
}
