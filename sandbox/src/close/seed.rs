//! Initial state: organizations from the configuration, plus leads generated from a seed or
//! loaded from a JSON file (the `/_sandbox/state` format).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};

use super::model::{
    apply_contact_fields, apply_lead_fields, new_id, resolve_status, ApiKey, Contact, CustomField,
    Lead, Org, Status, User,
};
use super::store::Store;
use super::time::{self, Micros};

/// The key used when no API key is configured.
pub const DEFAULT_API_KEY: &str = "api_sandbox_key_0001";

/// Default lead statuses; the first is the default status of new leads.
pub const DEFAULT_STATUSES: &[&str] = &["Potential", "Bad Fit", "Qualified", "Customer"];

/// Where the initial leads come from.
#[derive(Clone, Debug, Default)]
pub enum Seed {
    /// No leads.
    #[default]
    Empty,
    /// Deterministically generated leads (same seed → same data).
    Generated {
        /// Random seed.
        seed: u64,
        /// Number of leads per organization.
        leads: usize,
        /// Contacts per lead.
        contacts_per_lead: usize,
    },
    /// A JSON file in the `/_sandbox/state` format (see docs/sandbox.md).
    File(PathBuf),
}

/// Builds the initial store.
pub fn build(
    api_keys: &[String],
    organizations: &[Vec<String>],
    seed: &Seed,
) -> anyhow::Result<Store> {
    let runtime_rng = StdRng::from_entropy();
    match seed {
        Seed::File(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading seed file {}", path.display()))?;
            let doc: Value = serde_json::from_str(&text)
                .with_context(|| format!("parsing seed file {}", path.display()))?;
            load(&doc, runtime_rng)
        }
        Seed::Empty => {
            let mut rng = StdRng::seed_from_u64(0);
            let orgs = default_orgs(&mut rng, api_keys, organizations);
            Ok(Store::new(orgs, runtime_rng))
        }
        Seed::Generated {
            seed,
            leads,
            contacts_per_lead,
        } => {
            let mut rng = StdRng::seed_from_u64(*seed);
            let orgs = default_orgs(&mut rng, api_keys, organizations);
            let mut store = Store::new(orgs, runtime_rng);
            for org in 0..store.orgs.len() {
                generate(&mut store, &mut rng, org, *leads, *contacts_per_lead);
            }
            Ok(store)
        }
    }
}

fn key_groups(api_keys: &[String], organizations: &[Vec<String>]) -> Vec<Vec<String>> {
    let mut keys: Vec<String> = api_keys.to_vec();
    for group in organizations {
        for k in group {
            if !keys.contains(k) {
                keys.push(k.clone());
            }
        }
    }
    if keys.is_empty() {
        keys.push(DEFAULT_API_KEY.to_string());
    }
    let mut groups: Vec<Vec<String>> = organizations
        .iter()
        .filter(|g| !g.is_empty())
        .cloned()
        .collect();
    for k in keys {
        if !groups.iter().any(|g| g.contains(&k)) {
            groups.push(vec![k]);
        }
    }
    groups
}

fn make_user(rng: &mut StdRng, first: &str, last: &str, email: &str) -> User {
    User {
        id: new_id(rng, "user_", 43),
        first_name: first.into(),
        last_name: last.into(),
        email: email.into(),
    }
}

fn field(rng: &mut StdRng, name: &str, ty: &str, choices: &[&str], multi: bool) -> CustomField {
    CustomField {
        id: new_id(rng, "cf_", 43),
        name: name.into(),
        field_type: ty.into(),
        choices: choices.iter().map(|c| (*c).to_string()).collect(),
        accepts_multiple_values: multi,
        date_created: time::parse("2023-06-01T00:00:00").unwrap_or_default(),
    }
}

fn default_lead_fields(rng: &mut StdRng) -> Vec<CustomField> {
    vec![
        field(rng, "FTEs", "number", &[], false),
        field(rng, "# of users", "number", &[], false),
        field(rng, "eReceipt", "choices", &["Yes", "No"], false),
        field(rng, "Sub-Industry", "text", &[], false),
        field(rng, "Renewal Date", "date", &[], false),
        field(rng, "Hull Account ID", "hidden", &[], false),
        field(rng, "Tags", "choices", &["alpha", "beta", "gamma"], true),
    ]
}

fn default_contact_fields(rng: &mut StdRng) -> Vec<CustomField> {
    vec![
        field(rng, "ContactOK", "choices", &["Yes", "No"], false),
        field(rng, "Role", "text", &[], false),
        field(rng, "Birthday", "date", &[], false),
        field(rng, "Score", "number", &[], false),
        field(rng, "Hull User ID", "hidden", &[], false),
    ]
}

fn make_org(rng: &mut StdRng, index: usize, keys: &[String]) -> Org {
    let api_keys = keys
        .iter()
        .enumerate()
        .map(|(ki, key)| ApiKey {
            key: key.clone(),
            id: new_id(rng, "apikey_", 22),
            user: make_user(
                rng,
                "API",
                &format!("User {}", ki + 1),
                &format!("api{}@org{}.example.com", ki + 1, index + 1),
            ),
        })
        .collect();
    let ui_user = make_user(
        rng,
        "Ursula",
        "Interface",
        &format!("ui@org{}.example.com", index + 1),
    );
    Org {
        id: new_id(rng, "orga_", 43),
        name: format!("Sandbox Organization {}", index + 1),
        api_keys,
        ui_user,
        statuses: DEFAULT_STATUSES
            .iter()
            .map(|l| Status {
                id: new_id(rng, "stat_", 43),
                label: (*l).to_string(),
            })
            .collect(),
        lead_fields: default_lead_fields(rng),
        contact_fields: default_contact_fields(rng),
    }
}

fn default_orgs(rng: &mut StdRng, api_keys: &[String], organizations: &[Vec<String>]) -> Vec<Org> {
    key_groups(api_keys, organizations)
        .iter()
        .enumerate()
        .map(|(i, keys)| make_org(rng, i, keys))
        .collect()
}

const FIRST: &[&str] = &[
    "Ada", "Grace", "Alan", "Linus", "Barbara", "Ken", "Margaret", "Dennis", "Frances", "Edsger",
];
const LAST: &[&str] = &[
    "Lovelace", "Hopper", "Turing", "Torvalds", "Liskov", "Thompson", "Hamilton", "Ritchie",
    "Allen", "Dijkstra",
];
const INDUSTRIES: &[&str] = &["Fintech", "Logistics", "Retail", "Healthcare", "Media"];
const TITLES: &[&str] = &["CEO", "CTO", "Head of Sales", "Engineer", "Buyer"];

fn generate(
    store: &mut Store,
    rng: &mut StdRng,
    org: usize,
    leads: usize,
    contacts_per_lead: usize,
) {
    let base = time::parse("2024-01-01T00:00:00").unwrap_or_default() + (org as Micros) * 1_000;
    let creator = store.orgs[org]
        .api_keys
        .first()
        .map(|k| k.user.id.clone())
        .unwrap_or_default();
    let statuses: Vec<String> = store.orgs[org]
        .statuses
        .iter()
        .map(|s| s.id.clone())
        .collect();
    let lf = store.orgs[org].lead_fields.clone();
    let cf = store.orgs[org].contact_fields.clone();
    let mut last_ts = base;
    for i in 0..leads {
        let n = format!("{:06}", i + 1);
        let domain = format!("company-{n}.example.com");
        let created = base + (i as Micros) * 60_000_000 + rng.gen_range(0..1_000_000);
        let updated = created + rng.gen_range(0..86_400_000_000);
        last_ts = last_ts.max(updated);
        let mut custom = BTreeMap::new();
        for f in &lf {
            if rng.gen_bool(0.3) {
                continue;
            }
            let v = match (f.field_type.as_str(), f.name.as_str()) {
                ("number", _) => json!(rng.gen_range(1..5000)),
                ("choices", _) if f.accepts_multiple_values => {
                    json!([f.choices[rng.gen_range(0..f.choices.len())]])
                }
                ("choices", _) => json!(f.choices[rng.gen_range(0..f.choices.len())]),
                ("date", _) => json!(time::format_date(
                    updated + rng.gen_range(0..365) * 86_400_000_000
                )),
                ("hidden", _) => json!(format!("hull-account-{n}")),
                _ => json!(INDUSTRIES[rng.gen_range(0..INDUSTRIES.len())]),
            };
            custom.insert(f.id.clone(), v);
        }
        let mut addresses = vec![address("business", i, "US")];
        if rng.gen_bool(0.3) {
            addresses.push(address("mailing", i, "US"));
        }
        if rng.gen_bool(0.2) {
            addresses.push(address("", i, "GB"));
        }
        let opportunities = (0..rng.gen_range(0..3))
            .map(|_| {
                let (status_type, label) = match rng.gen_range(0..3) {
                    0 => ("active", "Active"),
                    1 => ("won", "Won"),
                    _ => ("lost", "Lost"),
                };
                json!({
                    "id": new_id(rng, "oppo_", 43),
                    "status_type": status_type,
                    "status_label": label,
                    "value": rng.gen_range(10..5000) * 100,
                    "value_currency": "USD",
                    "value_period": "one_time",
                    "date_updated": time::format_object(updated),
                })
            })
            .collect();
        let seq = store.next_seq();
        let lead_id = new_id(rng, "lead_", 43);
        let mut contact_ids = Vec::with_capacity(contacts_per_lead);
        for j in 0..contacts_per_lead {
            let first = FIRST[rng.gen_range(0..FIRST.len())];
            let last = LAST[rng.gen_range(0..LAST.len())];
            let local = format!("{}.{}.{}", first.to_lowercase(), last.to_lowercase(), j + 1);
            let mut emails = vec![
                json!({"email": format!("{local}@{domain}"), "type": "office", "is_unsubscribed": false}),
            ];
            if rng.gen_bool(0.3) {
                emails.push(json!({"email": format!("{local}@home.example.net"), "type": "home", "is_unsubscribed": false}));
            }
            let digits = format!("415{:07}", rng.gen_range(0..10_000_000));
            let mut phones = vec![phone(&digits, "office")];
            if rng.gen_bool(0.4) {
                phones.push(phone(
                    &format!("628{:07}", rng.gen_range(0..10_000_000)),
                    "mobile",
                ));
            }
            let mut ccustom = BTreeMap::new();
            for f in &cf {
                if rng.gen_bool(0.4) {
                    continue;
                }
                let v = match f.field_type.as_str() {
                    "number" => json!(rng.gen_range(0..100)),
                    "choices" => json!(f.choices[rng.gen_range(0..f.choices.len())]),
                    "date" => json!(format!(
                        "19{}-0{}-1{}",
                        rng.gen_range(60..99),
                        rng.gen_range(1..9),
                        rng.gen_range(0..9)
                    )),
                    "hidden" => json!(format!("hull-user-{n}-{}", j + 1)),
                    _ => json!(TITLES[rng.gen_range(0..TITLES.len())]),
                };
                ccustom.insert(f.id.clone(), v);
            }
            let seq = store.next_seq();
            let contact = Contact {
                seq,
                id: new_id(rng, "cont_", 43),
                org,
                lead_id: lead_id.clone(),
                name: format!("{first} {last}"),
                title: TITLES[rng.gen_range(0..TITLES.len())].to_string(),
                emails,
                phones,
                urls: vec![
                    json!({"url": format!("https://www.linkedin.com/in/{local}"), "type": "url"}),
                ],
                custom: ccustom,
                created_by: creator.clone(),
                updated_by: creator.clone(),
                date_created: created,
                date_updated: updated,
            };
            contact_ids.push(contact.id.clone());
            store.insert_contact(contact);
        }
        store.insert_lead(Lead {
            seq,
            id: lead_id,
            org,
            name: format!("Company {n} Inc"),
            url: Some(format!("https://{domain}")),
            description: format!("Generated lead {n}"),
            status_id: statuses
                .get(rng.gen_range(0..statuses.len().max(1)))
                .cloned()
                .unwrap_or_default(),
            addresses,
            opportunities,
            custom,
            contact_ids,
            created_by: creator.clone(),
            updated_by: creator.clone(),
            date_created: created,
            date_updated: updated,
        });
    }
    store.observe_ts(last_ts);
}

fn address(label: &str, i: usize, country: &str) -> Value {
    json!({
        "label": label,
        "address_1": format!("{} Market St", 100 + i % 900),
        "address_2": "",
        "city": if country == "US" { "San Francisco" } else { "London" },
        "state": if country == "US" { "CA" } else { "" },
        "zipcode": if country == "US" { "94103" } else { "EC1A 1BB" },
        "country": country,
        "tz_ids": [],
    })
}

fn phone(digits: &str, ty: &str) -> Value {
    json!({
        "phone": format!("+1{digits}"),
        "phone_formatted": format!("+1 {}-{}-{}", &digits[..3], &digits[3..6], &digits[6..]),
        "type": ty,
        "country": "US",
    })
}

fn str_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn load_fields(
    rng: &mut StdRng,
    v: Option<&Value>,
    defaults: fn(&mut StdRng) -> Vec<CustomField>,
) -> anyhow::Result<Vec<CustomField>> {
    let Some(items) = v else {
        return Ok(defaults(rng));
    };
    let items = items
        .as_array()
        .ok_or_else(|| anyhow!("custom fields must be a list"))?;
    items
        .iter()
        .map(|f| {
            let name = f
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| anyhow!("custom field without name"))?;
            let ty = f.get("type").and_then(Value::as_str).unwrap_or("text");
            if !super::model::CUSTOM_FIELD_TYPES.contains(&ty) {
                bail!("custom field {name}: unknown type {ty}");
            }
            let mut cf = field(
                rng,
                name,
                ty,
                &[],
                f.get("accepts_multiple_values")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            );
            if let Some(id) = f.get("id").and_then(Value::as_str) {
                cf.id = id.to_string();
            }
            cf.choices = str_list(f.get("choices"));
            Ok(cf)
        })
        .collect()
}

fn load(doc: &Value, runtime_rng: StdRng) -> anyhow::Result<Store> {
    let mut rng = StdRng::seed_from_u64(0);
    let orgs_json = doc
        .get("organizations")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("seed file: \"organizations\" must be a list"))?;
    let mut orgs = Vec::new();
    for (i, o) in orgs_json.iter().enumerate() {
        let keys = str_list(o.get("api_keys"));
        if keys.is_empty() {
            bail!("seed file: organization {i} has no api_keys");
        }
        let mut org = make_org(&mut rng, i, &keys);
        if let Some(id) = o.get("id").and_then(Value::as_str) {
            org.id = id.to_string();
        }
        if let Some(name) = o.get("name").and_then(Value::as_str) {
            org.name = name.to_string();
        }
        if let Some(statuses) = o
            .get("statuses")
            .and_then(Value::as_array)
            .filter(|s| !s.is_empty())
        {
            org.statuses = statuses
                .iter()
                .map(|s| match s {
                    Value::String(label) => Ok(Status {
                        id: new_id(&mut rng, "stat_", 43),
                        label: label.clone(),
                    }),
                    Value::Object(m) => Ok(Status {
                        id: m
                            .get("id")
                            .and_then(Value::as_str)
                            .map(str::to_string)
                            .unwrap_or_else(|| new_id(&mut rng, "stat_", 43)),
                        label: m
                            .get("label")
                            .and_then(Value::as_str)
                            .ok_or_else(|| anyhow!("status without label"))?
                            .to_string(),
                    }),
                    _ => bail!("status must be a label or an object"),
                })
                .collect::<anyhow::Result<_>>()?;
        }
        let cfs = o.get("custom_fields");
        org.lead_fields = load_fields(
            &mut rng,
            cfs.and_then(|c| c.get("lead")),
            default_lead_fields,
        )?;
        org.contact_fields = load_fields(
            &mut rng,
            cfs.and_then(|c| c.get("contact")),
            default_contact_fields,
        )?;
        orgs.push(org);
    }
    let mut store = Store::new(orgs, runtime_rng);
    let base = time::parse("2024-01-01T00:00:00").unwrap_or_default();
    for (oi, o) in orgs_json.iter().enumerate() {
        let leads = o
            .get("leads")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for (li, lv) in leads.iter().enumerate() {
            load_lead(
                &mut store,
                &mut rng,
                oi,
                lv,
                base + li as Micros * 1_000_000,
            )
            .with_context(|| format!("seed file: organization {oi}, lead {li}"))?;
        }
    }
    Ok(store)
}

fn date_of(m: &Map<String, Value>, key: &str, default: Micros) -> Micros {
    m.get(key)
        .and_then(Value::as_str)
        .and_then(time::parse)
        .unwrap_or(default)
}

fn load_lead(
    store: &mut Store,
    rng: &mut StdRng,
    org: usize,
    lv: &Value,
    default_ts: Micros,
) -> anyhow::Result<()> {
    let m = lv
        .as_object()
        .ok_or_else(|| anyhow!("lead must be an object"))?;
    let creator = store.orgs[org]
        .api_keys
        .first()
        .map(|k| k.user.id.clone())
        .unwrap_or_default();
    let status_id = resolve_status(&store.orgs[org], m)
        .map_err(|e| anyhow!("{e}"))?
        .or_else(|| store.orgs[org].statuses.first().map(|s| s.id.clone()))
        .unwrap_or_default();
    let created = date_of(m, "date_created", default_ts);
    let updated = date_of(m, "date_updated", created);
    let seq = store.next_seq();
    let mut lead = Lead {
        seq,
        id: m
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| new_id(rng, "lead_", 43)),
        org,
        name: String::new(),
        url: None,
        description: String::new(),
        status_id,
        addresses: Vec::new(),
        opportunities: m
            .get("opportunities")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        custom: BTreeMap::new(),
        contact_ids: Vec::new(),
        created_by: creator.clone(),
        updated_by: creator.clone(),
        date_created: created,
        date_updated: updated,
    };
    apply_lead_fields(&store.orgs[org], m, &mut lead).map_err(|e| anyhow!("{e}"))?;
    for cv in m
        .get("contacts")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        let cm = cv
            .as_object()
            .ok_or_else(|| anyhow!("contact must be an object"))?;
        let seq = store.next_seq();
        let mut c = Contact {
            seq,
            id: cm
                .get("id")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| new_id(rng, "cont_", 43)),
            org,
            lead_id: lead.id.clone(),
            name: String::new(),
            title: String::new(),
            emails: Vec::new(),
            phones: Vec::new(),
            urls: Vec::new(),
            custom: BTreeMap::new(),
            created_by: creator.clone(),
            updated_by: creator.clone(),
            date_created: date_of(cm, "date_created", created),
            date_updated: date_of(cm, "date_updated", updated),
        };
        apply_contact_fields(&store.orgs[org], cm, &mut c).map_err(|e| anyhow!("{e}"))?;
        store.observe_ts(c.date_updated);
        lead.contact_ids.push(c.id.clone());
        store.insert_contact(c);
    }
    store.observe_ts(updated);
    store.insert_lead(lead);
    Ok(())
}
