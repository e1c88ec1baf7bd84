//! Initial state: connectors, segments, seed profiles and the deterministic generator.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};

use super::store::{now, Kind, Store};
use super::{Connector, GenerateSpec, HullConfig};

/// Seed of the default connector's id and secret when no generator seed is given.
const DEFAULT_SEED: u64 = 0x5eed_c105e;

const COMPANY_WORDS: &[&str] = &[
    "acme",
    "globex",
    "initech",
    "umbrella",
    "hooli",
    "stark",
    "wayne",
    "wonka",
    "tyrell",
    "cyberdyne",
    "soylent",
    "vandelay",
    "bluth",
    "dunder",
    "pied",
    "massive",
];
const FIRST_NAMES: &[&str] = &[
    "ada", "alan", "grace", "linus", "margaret", "dennis", "barbara", "ken", "frances", "john",
];
const LAST_NAMES: &[&str] = &[
    "lovelace", "turing", "hopper", "torvalds", "hamilton", "ritchie", "liskov", "thompson",
    "allen", "backus",
];

/// Random lower-case hex string of `len` characters.
fn hex(rng: &mut StdRng, len: usize) -> String {
    (0..len)
        .map(|_| char::from_digit(rng.gen_range(0..16), 16).unwrap_or('0'))
        .collect()
}

/// Capitalises the first letter.
fn title(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Completes a segment seed with Hull's segment fields.
fn segment(seed: &Value, kind: &str, fallback_id: String) -> Value {
    let mut obj = seed.as_object().cloned().unwrap_or_default();
    let ts = now();
    obj.entry("id").or_insert(json!(fallback_id));
    obj.entry("name").or_insert(json!("Segment"));
    obj.entry("type").or_insert(json!(kind));
    obj.entry("stats").or_insert(json!({}));
    obj.entry("created_at").or_insert(json!(ts));
    obj.entry("updated_at").or_insert(json!(ts));
    Value::Object(obj)
}

fn segments(seeds: &[Value], defaults: &[(&str, &str)], kind: &str) -> Vec<Value> {
    if seeds.is_empty() {
        defaults
            .iter()
            .map(|(id, name)| segment(&json!({"id": id, "name": name}), kind, (*id).to_string()))
            .collect()
    } else {
        seeds
            .iter()
            .enumerate()
            .map(|(i, s)| segment(s, kind, format!("5c{:022x}", i + 1)))
            .collect()
    }
}

/// An object value, `{}` for anything else.
fn object_or_empty(value: &Value) -> Value {
    match value {
        Value::Object(_) => value.clone(),
        _ => Value::Object(Map::new()),
    }
}

/// Builds the initial organization state from the configuration.
pub(crate) fn build_store(config: &HullConfig, org: &str) -> Store {
    let seed = config.generate.as_ref().map_or(DEFAULT_SEED, |g| g.seed);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut store = Store::default();
    let ts = now();
    let seeds = if config.connectors.is_empty() {
        vec![super::ConnectorSeed::default()]
    } else {
        config.connectors.clone()
    };
    for seed in seeds {
        let id = if seed.id.is_empty() {
            hex(&mut rng, 24)
        } else {
            seed.id
        };
        let secret = if seed.secret.is_empty() {
            hex(&mut rng, 32)
        } else {
            seed.secret
        };
        store.connectors.push(Connector {
            name: format!("Close.io on {org}"),
            id,
            secret,
            private_settings: object_or_empty(&seed.private_settings),
            settings: object_or_empty(&seed.settings),
            url: seed.url.map(|u| u.trim_end_matches('/').to_string()),
            status: Value::Null,
            created_at: ts.clone(),
            updated_at: ts.clone(),
        });
    }
    store.users_segments = segments(
        &config.users_segments,
        &[
            ("5c0000000000000000000101", "Active users"),
            ("5c0000000000000000000102", "Customers"),
        ],
        "users_segment",
    );
    store.accounts_segments = segments(
        &config.accounts_segments,
        &[
            ("5c0000000000000000000201", "Target accounts"),
            ("5c0000000000000000000202", "Customers"),
        ],
        "accounts_segment",
    );
    reseed_profiles(&mut store, config);
    store
}

/// Replaces the profiles with the configured seeds and generated data.
fn reseed_profiles(store: &mut Store, config: &HullConfig) {
    store.users.clear();
    store.accounts.clear();
    store.index.clear();
    store.next_id = 0;
    for account in &config.accounts {
        store.upsert(Kind::Account, account);
    }
    for user in &config.users {
        store.upsert(Kind::User, user);
    }
    if let Some(spec) = &config.generate {
        generate(store, spec);
    }
}

/// Deterministic bulk data: `n_accounts` accounts with `users_per_account` linked users each.
fn generate(store: &mut Store, spec: &GenerateSpec) {
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let probability = spec.segment_probability.clamp(0.0, 1.0);
    let account_segments: Vec<String> = segment_ids(&store.accounts_segments);
    let user_segments: Vec<String> = segment_ids(&store.users_segments);
    for i in 0..spec.n_accounts {
        let word = COMPANY_WORDS[rng.gen_range(0..COMPANY_WORDS.len())];
        let domain = format!("{word}{i}.com");
        let members = pick(&mut rng, &account_segments, probability);
        let account_id = store.upsert(
            Kind::Account,
            &json!({
                "domain": domain,
                "name": format!("{} {i}", title(word)),
                "external_id": format!("acct-{i}"),
                "segment_ids": members,
            }),
        );
        for j in 0..spec.users_per_account {
            let first = FIRST_NAMES[rng.gen_range(0..FIRST_NAMES.len())];
            let last = LAST_NAMES[rng.gen_range(0..LAST_NAMES.len())];
            let members = pick(&mut rng, &user_segments, probability);
            store.upsert(
                Kind::User,
                &json!({
                    "email": format!("{first}.{last}.{j}@{domain}"),
                    "name": format!("{} {}", title(first), title(last)),
                    "first_name": title(first),
                    "last_name": title(last),
                    "external_id": format!("user-{i}-{j}"),
                    "account_id": account_id,
                    "segment_ids": members,
                }),
            );
        }
    }
}

fn segment_ids(list: &[Value]) -> Vec<String> {
    list.iter()
        .filter_map(|s| s.get("id").and_then(Value::as_str).map(str::to_string))
        .collect()
}

fn pick(rng: &mut StdRng, ids: &[String], probability: f64) -> Vec<String> {
    ids.iter()
        .filter(|_| rng.gen_bool(probability))
        .cloned()
        .collect()
}
