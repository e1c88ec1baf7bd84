//! Seed data: deterministic generation, seed files, reset and the control API.

mod close_support;

use close_support::{local, start};
use reqwest::StatusCode;
use sandbox::close::{CloseConfig, CloseSim, Seed};
use serde_json::{json, Value};

fn generated(seed: u64) -> CloseConfig {
    CloseConfig {
        api_keys: vec!["api_seed_key".into()],
        seed: Seed::Generated {
            seed,
            leads: 20,
            contacts_per_lead: 3,
        },
        ..Default::default()
    }
}

async fn state(sim: &CloseSim) -> Value {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://{}/_sandbox/state", sim.addr()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn same_seed_same_state() {
    let a = CloseSim::start(local(), generated(42)).await.unwrap();
    let b = CloseSim::start(local(), generated(42)).await.unwrap();
    let c = CloseSim::start(local(), generated(43)).await.unwrap();
    assert_eq!(state(&a).await, state(&b).await);
    assert_ne!(state(&a).await, state(&c).await);
    assert_eq!(a.leads(), b.leads());
    assert_eq!(a.leads().len(), 20);
    assert_eq!(a.contacts().len(), 60);
    a.shutdown().await;
    b.shutdown().await;
    c.shutdown().await;
}

#[tokio::test]
async fn generated_data_is_rich() {
    let h = start(generated(1)).await;
    let leads = h.sim.leads();
    let urls: std::collections::HashSet<&str> =
        leads.iter().map(|l| l["url"].as_str().unwrap()).collect();
    assert_eq!(urls.len(), 20, "urls are unique per lead");
    assert!(urls.contains("https://company-000001.example.com"));
    assert!(leads.iter().any(|l| l
        .as_object()
        .unwrap()
        .keys()
        .any(|k| k.starts_with("custom."))));
    assert!(leads
        .iter()
        .flat_map(|l| l["opportunities"].as_array().unwrap())
        .any(|o| o["id"].as_str().unwrap().starts_with("oppo_")));
    assert!(leads
        .iter()
        .all(|l| l["addresses"][0]["label"] == "business"));
    let contact = &leads[0]["contacts"][0];
    assert!(contact["phones"][0]["phone"]
        .as_str()
        .unwrap()
        .starts_with("+1415"));
    assert_eq!(contact["emails"][0]["type"], "office");
    let (_, fields) = h.get("/custom_field/contact/").await;
    let names: Vec<&str> = fields["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"ContactOK"));
}

#[tokio::test]
async fn seed_file_round_trips_the_state() {
    let source = start(generated(9)).await;
    let dump = state(&source.sim).await;
    let path = std::env::temp_dir().join(format!(
        "close-seed-{}-{}.json",
        std::process::id(),
        line!()
    ));
    std::fs::write(&path, serde_json::to_vec(&dump).unwrap()).unwrap();
    let loaded = CloseSim::start(
        local(),
        CloseConfig {
            seed: Seed::File(path.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    std::fs::remove_file(&path).unwrap();
    let project = |leads: Vec<Value>| -> Vec<Value> {
        leads
            .into_iter()
            .map(|l| {
                json!([
                    l["id"],
                    l["name"],
                    l["url"],
                    l["status_id"],
                    l["date_updated"],
                    l["addresses"],
                    l["contacts"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|c| json!([c["id"], c["emails"], c["phones"]]))
                        .collect::<Vec<_>>(),
                    l.as_object()
                        .unwrap()
                        .iter()
                        .filter(|(k, _)| k.starts_with("custom."))
                        .collect::<Vec<_>>()
                ])
            })
            .collect()
    };
    assert_eq!(project(loaded.leads()), project(source.sim.leads()));
    assert_eq!(loaded.api_keys(), vec!["api_seed_key".to_string()]);

    let minimal = std::env::temp_dir().join(format!(
        "close-seed-{}-{}.json",
        std::process::id(),
        line!()
    ));
    std::fs::write(
        &minimal,
        json!({"organizations": [{"api_keys": ["api_file"], "statuses": ["New", "Won"],
            "leads": [{"name": "From file", "status": "Won", "contacts": [{"name": "F", "phones": [{"phone": "4155550100"}]}]}]}]})
        .to_string(),
    )
    .unwrap();
    let sim = CloseSim::start(
        local(),
        CloseConfig {
            seed: Seed::File(minimal.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    std::fs::remove_file(&minimal).unwrap();
    let leads = sim.leads();
    assert_eq!(leads[0]["status_label"], "Won");
    assert_eq!(
        leads[0]["contacts"][0]["phones"][0]["phone"],
        "+14155550100"
    );
}

#[tokio::test]
async fn reset_restores_the_seed_and_ui_control_routes_work() {
    let h = start(generated(5)).await;
    let before = state(&h.sim).await;
    let first = h.sim.leads()[0]["id"].as_str().unwrap().to_string();
    let control = |path: &str| format!("http://{}/_sandbox/{path}", h.sim.addr());
    let resp = h
        .client
        .post(control(&format!("ui/lead/{first}")))
        .json(&json!({"name": "UI name"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let lead: Value = resp.json().await.unwrap();
    assert_eq!(lead["name"], "UI name");
    let second = h.sim.leads()[1]["id"].as_str().unwrap().to_string();
    let resp = h
        .client
        .post(control("ui/merge"))
        .json(&json!({"source": second, "destination": first}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = h
        .client
        .delete(control(&format!("ui/lead/{first}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = h
        .client
        .delete(control(&format!("ui/lead/{first}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(h.sim.leads().len(), 18);
    let resp = h.client.post(control("reset")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(state(&h.sim).await, before);
    let (_, events) = h.get("/event/").await;
    assert!(events["data"].as_array().unwrap().is_empty());
    let resp = h.client.get(control("nope")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}
