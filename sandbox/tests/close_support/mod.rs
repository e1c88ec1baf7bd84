//! Helpers shared by the Close simulator tests.
#![allow(dead_code)]

use std::net::SocketAddr;

use reqwest::{Client, Method, StatusCode};
use sandbox::close::{CloseConfig, CloseSim};
use serde_json::Value;

pub const KEY: &str = "api_test_key_1";

pub fn local() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

pub struct Harness {
    pub sim: CloseSim,
    pub client: Client,
    pub key: String,
}

pub async fn start(mut config: CloseConfig) -> Harness {
    if config.api_keys.is_empty() && config.organizations.is_empty() {
        config.api_keys = vec![KEY.to_string()];
    }
    let sim = CloseSim::start(local(), config)
        .await
        .expect("simulator starts");
    let key = sim.api_keys()[0].clone();
    let client = Client::builder().no_proxy().build().expect("client");
    Harness { sim, client, key }
}

impl Harness {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.sim.base_url(), path)
    }

    pub async fn call_as(
        &self,
        key: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, self.url(path))
            .basic_auth(key, Some(""));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let text = resp.text().await.expect("body read");
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).expect("JSON body")
        };
        (status, json)
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call_as(&self.key.clone(), method, path, body).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, None).await
    }

    /// Creates a lead and returns it (asserting 200).
    pub async fn lead(&self, body: Value) -> Value {
        let (status, lead) = self.post("/lead/", body).await;
        assert_eq!(status, StatusCode::OK, "{lead}");
        lead
    }

    /// The id of the lead custom field named `name`.
    pub async fn lead_field(&self, name: &str) -> String {
        self.field("lead", name).await
    }

    pub async fn field(&self, kind: &str, name: &str) -> String {
        let (_, fields) = self.get(&format!("/custom_field/{kind}/?_limit=100")).await;
        fields["data"]
            .as_array()
            .and_then(|a| a.iter().find(|f| f["name"] == name))
            .and_then(|f| f["id"].as_str())
            .map(str::to_string)
            .expect("custom field exists")
    }
}
