//! In-memory state of the simulated organization: connectors, profiles, segments and logs.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Map, Number, Value};

use super::{Connector, FirehoseRecord, NotificationRecord, Profile};

/// Which kind of profile an operation is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    User,
    Account,
}

impl Kind {
    /// The claim that identifies a profile besides ids: `email` or `domain`.
    fn ident_key(self) -> &'static str {
        match self {
            Kind::User => "email",
            Kind::Account => "domain",
        }
    }

    /// Lower-case name used in messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::User => "user",
            Kind::Account => "account",
        }
    }
}

/// User attributes Hull keeps at the top level of the user object (no `traits_` prefix).
const USER_TOP_LEVEL: &[&str] = &[
    "email",
    "name",
    "first_name",
    "last_name",
    "external_id",
    "domain",
    "phone",
    "picture",
    "address_city",
    "address_country",
    "address_state",
    "address_street",
    "address_postal_code",
    "is_approved",
    "accepts_marketing",
    "has_password",
    "last_known_ip",
    "last_seen_at",
    "first_seen_at",
    "signup_session_id",
];

/// Attribute names that cannot be written as traits (they are managed by the platform).
const RESERVED: &[&str] = &[
    "id",
    "anonymous_ids",
    "segment_ids",
    "account_id",
    "created_at",
    "indexed_at",
    "updated_at",
];

/// Free-mail domains Hull does not store as account domains.
const GENERIC_DOMAINS: &[&str] = &[
    "gmail.com",
    "googlemail.com",
    "yahoo.com",
    "yahoo.fr",
    "yahoo.co.uk",
    "hotmail.com",
    "hotmail.fr",
    "hotmail.co.uk",
    "outlook.com",
    "live.com",
    "msn.com",
    "aol.com",
    "icloud.com",
    "me.com",
    "mac.com",
    "gmx.com",
    "gmx.de",
    "web.de",
    "mail.ru",
    "yandex.ru",
    "protonmail.com",
    "proton.me",
    "zoho.com",
];

/// Whether `domain` is a free-mail domain.
pub(crate) fn is_generic_domain(domain: &str) -> bool {
    GENERIC_DOMAINS.contains(&domain.trim().to_ascii_lowercase().as_str())
}

/// Name of a stored user attribute in notifications (`closeio/id` → `traits_closeio/id`).
pub(crate) fn user_message_key(key: &str) -> String {
    if USER_TOP_LEVEL.contains(&key) {
        key.to_string()
    } else {
        format!("traits_{key}")
    }
}

/// A profile plus the bookkeeping the notifier needs.
#[derive(Clone, Debug)]
pub(crate) struct Stored {
    pub(crate) profile: Profile,
    pub(crate) created_at: String,
    pub(crate) updated_at: String,
    /// Changed since its last delivered notification.
    pub(crate) changed: bool,
    /// Created since its last delivered notification.
    pub(crate) is_new: bool,
    /// Bumped on every modification; lets the notifier clear only what it delivered.
    pub(crate) version: u64,
    /// Pending attribute changes, stored name → `[old, new]`.
    pub(crate) changes: Map<String, Value>,
    /// Segment ids at the last delivered notification.
    pub(crate) notified_segments: Vec<String>,
}

impl Stored {
    fn touch(&mut self) {
        self.changed = true;
        self.version += 1;
        self.updated_at = now();
    }

    /// Sets (`Some`) or deletes (`None`) an attribute, recording the change.
    fn write_attr(&mut self, key: &str, value: Option<Value>) {
        let old = self.profile.attributes.get(key).cloned();
        if old == value {
            return;
        }
        match &value {
            Some(v) => {
                self.profile.attributes.insert(key.to_string(), v.clone());
            }
            None => {
                self.profile.attributes.remove(key);
            }
        }
        let first_old = match self.changes.get(key) {
            Some(Value::Array(pair)) => pair.first().cloned().unwrap_or(Value::Null),
            _ => old.unwrap_or(Value::Null),
        };
        let new = value.unwrap_or(Value::Null);
        if first_old == new {
            self.changes.remove(key);
        } else {
            self.changes
                .insert(key.to_string(), json!([first_old, new]));
        }
        self.touch();
    }

    fn add_anonymous_id(&mut self, anonymous_id: &str) {
        if !self.profile.anonymous_ids.iter().any(|a| a == anonymous_id) {
            self.profile.anonymous_ids.push(anonymous_id.to_string());
            self.touch();
        }
    }
}

/// Identity claims of one entity (`io.hull.asUser` / `io.hull.asAccount`).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Claims {
    pub(crate) id: Option<String>,
    pub(crate) external_id: Option<String>,
    /// `email` for users, `domain` for accounts.
    pub(crate) ident: Option<String>,
    pub(crate) anonymous_id: Option<String>,
}

impl Claims {
    /// Parses a claims object (or a bare Hull id string). Unknown keys are ignored, as the
    /// clients drop them; known keys must be strings (numbers are accepted for `external_id`).
    pub(crate) fn parse(kind: Kind, value: &Value) -> Result<Claims, String> {
        let obj = match value {
            Value::String(id) => {
                return Ok(Claims {
                    id: Some(id.clone()),
                    ..Claims::default()
                })
            }
            Value::Object(obj) => obj,
            other => {
                return Err(format!(
                    "{} claims must be an object, got {other}",
                    kind.name()
                ))
            }
        };
        let field = |key: &str| -> Result<Option<String>, String> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
                Some(Value::Number(n)) if key == "external_id" => Ok(Some(n.to_string())),
                Some(other) => Err(format!(
                    "{} claim {key:?} must be a string, got {other}",
                    kind.name()
                )),
            }
        };
        Ok(Claims {
            id: field("id")?,
            external_id: field("external_id")?,
            ident: field(kind.ident_key())?,
            anonymous_id: field("anonymous_id")?,
        })
    }

    fn is_empty(&self) -> bool {
        self.id.is_none()
            && self.external_id.is_none()
            && self.ident.is_none()
            && self.anonymous_id.is_none()
    }
}

/// One trait operation of a `traits` entry.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum TraitOp {
    Set(Value),
    SetIfNull(Value),
    Inc(Number),
    Dec(Number),
    Delete,
}

impl TraitOp {
    /// Parses a raw value or a `{"operation", "value"}` object.
    pub(crate) fn parse(key: &str, value: &Value) -> Result<TraitOp, String> {
        let Value::Object(obj) = value else {
            return Ok(match value {
                Value::Null => TraitOp::Delete,
                v => TraitOp::Set(v.clone()),
            });
        };
        let Some(op) = obj.get("operation") else {
            return Ok(TraitOp::Set(value.clone()));
        };
        let inner = obj.get("value").cloned().unwrap_or(Value::Null);
        let number = |inner: &Value| match inner {
            Value::Number(n) => Ok(n.clone()),
            other => Err(format!(
                "trait {key:?}: inc/dec value must be a number, got {other}"
            )),
        };
        match op.as_str() {
            Some("set") if inner.is_null() => Ok(TraitOp::Delete),
            Some("set") => Ok(TraitOp::Set(inner)),
            Some("setIfNull") => Ok(TraitOp::SetIfNull(inner)),
            Some("inc") => Ok(TraitOp::Inc(number(&inner)?)),
            Some("dec") => Ok(TraitOp::Dec(number(&inner)?)),
            _ => Err(format!("trait {key:?}: unknown operation {op}")),
        }
    }
}

/// Adds `delta` (negated when `negate`) to `current`, keeping integers integral.
fn add_numbers(current: Option<&Value>, delta: &Number, negate: bool) -> Result<Value, String> {
    let base = match current {
        None | Some(Value::Null) => Number::from(0),
        Some(Value::Number(n)) => n.clone(),
        Some(other) => return Err(format!("cannot increment non-numeric value {other}")),
    };
    if let (Some(a), Some(b)) = (base.as_i64(), delta.as_i64()) {
        let result = if negate {
            a.checked_sub(b)
        } else {
            a.checked_add(b)
        };
        if let Some(r) = result {
            return Ok(Value::Number(r.into()));
        }
    }
    let (a, b) = (base.as_f64().unwrap_or(0.0), delta.as_f64().unwrap_or(0.0));
    let r = if negate { a - b } else { a + b };
    Number::from_f64(r)
        .map(Value::Number)
        .ok_or_else(|| "increment result is not a finite number".to_string())
}

/// Current time, RFC 3339 with seconds.
pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The whole organization.
#[derive(Debug, Default)]
pub(crate) struct Store {
    pub(crate) connectors: Vec<Connector>,
    pub(crate) users: BTreeMap<String, Stored>,
    pub(crate) accounts: BTreeMap<String, Stored>,
    pub(crate) users_segments: Vec<Value>,
    pub(crate) accounts_segments: Vec<Value>,
    /// Recorded `track` events.
    pub(crate) events: Vec<Value>,
    pub(crate) firehose_log: Vec<FirehoseRecord>,
    /// Firehose calls received (one carries a batch of entries).
    pub(crate) firehose_calls: u64,
    pub(crate) status_log: Vec<Value>,
    pub(crate) notification_log: Vec<NotificationRecord>,
    /// Extract id → NDJSON.
    pub(crate) extracts: HashMap<String, String>,
    /// Connector id → batch size it last asked for.
    pub(crate) flow_size: HashMap<String, usize>,
    /// Id counter; ids are `<prefix><counter>` so creation order equals id order.
    pub(crate) next_id: u64,
    /// Claim value → profile ids, kept in step with every profile change (identity lookups
    /// stay O(1) however many profiles there are).
    pub(crate) index: ClaimIndex,
}

/// Index of identity claims (`email`/`domain` case-insensitive, `external_id`,
/// `anonymous_id`) to profile ids.
#[derive(Debug, Default)]
pub(crate) struct ClaimIndex {
    by_claim:
        std::collections::HashMap<(Kind, &'static str, String), std::collections::BTreeSet<String>>,
    by_profile: std::collections::HashMap<(Kind, String), Vec<(&'static str, String)>>,
}

impl ClaimIndex {
    fn claims_of(kind: Kind, profile: &Profile) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let ident: &'static str = match kind {
            Kind::User => "email",
            Kind::Account => "domain",
        };
        if let Some(v) = profile.attributes.get(ident).and_then(Value::as_str) {
            out.push((ident, v.to_ascii_lowercase()));
        }
        match profile.attributes.get("external_id") {
            Some(Value::String(v)) => out.push(("external_id", v.clone())),
            Some(Value::Number(n)) => out.push(("external_id", n.to_string())),
            _ => {}
        }
        for a in &profile.anonymous_ids {
            out.push(("anonymous_id", a.clone()));
        }
        out
    }

    /// Re-indexes one profile (`None`: it was removed).
    fn update(&mut self, kind: Kind, id: &str, profile: Option<&Profile>) {
        if let Some(old) = self.by_profile.remove(&(kind, id.to_string())) {
            for (key, value) in old {
                if let Some(ids) = self.by_claim.get_mut(&(kind, key, value.clone())) {
                    ids.remove(id);
                    if ids.is_empty() {
                        self.by_claim.remove(&(kind, key, value));
                    }
                }
            }
        }
        if let Some(p) = profile {
            let claims = Self::claims_of(kind, p);
            for (key, value) in &claims {
                self.by_claim
                    .entry((kind, key, value.clone()))
                    .or_default()
                    .insert(id.to_string());
            }
            self.by_profile.insert((kind, id.to_string()), claims);
        }
    }

    fn first(&self, kind: Kind, key: &'static str, value: &str) -> Option<String> {
        self.by_claim
            .get(&(kind, key, value.to_string()))
            .and_then(|ids| ids.iter().next().cloned())
    }

    /// Forgets everything.
    pub(crate) fn clear(&mut self) {
        self.by_claim.clear();
        self.by_profile.clear();
    }
}

impl Store {
    /// Brings the claim index in step with profile `id` after a change.
    fn reindex(&mut self, kind: Kind, id: &str) {
        let profile = match kind {
            Kind::User => self.users.get(id),
            Kind::Account => self.accounts.get(id),
        }
        .map(|s| s.profile.clone());
        self.index.update(kind, id, profile.as_ref());
    }

    pub(crate) fn table(&self, kind: Kind) -> &BTreeMap<String, Stored> {
        match kind {
            Kind::User => &self.users,
            Kind::Account => &self.accounts,
        }
    }

    pub(crate) fn table_mut(&mut self, kind: Kind) -> &mut BTreeMap<String, Stored> {
        match kind {
            Kind::User => &mut self.users,
            Kind::Account => &mut self.accounts,
        }
    }

    pub(crate) fn connector(&self, id: &str) -> Option<&Connector> {
        self.connectors.iter().find(|c| c.id == id)
    }

    /// Updates the given connector fields; unknown ids are ignored.
    pub(crate) fn update_connector(
        &mut self,
        id: &str,
        url: Option<&str>,
        private_settings: Option<Value>,
        settings: Option<Value>,
    ) -> bool {
        let Some(c) = self.connectors.iter_mut().find(|c| c.id == id) else {
            return false;
        };
        if let Some(url) = url {
            c.url = Some(url.trim_end_matches('/').to_string());
        }
        if let Some(ps) = private_settings {
            c.private_settings = ps;
        }
        if let Some(s) = settings {
            c.settings = s;
        }
        c.updated_at = now();
        true
    }

    /// A new 24-hex id; users and accounts get different prefixes.
    pub(crate) fn new_id(&mut self, kind: Kind) -> String {
        self.next_id += 1;
        let prefix: u32 = match kind {
            Kind::User => 0x5b00_0001,
            Kind::Account => 0x5b00_0002,
        };
        format!("{prefix:08x}{:016x}", self.next_id)
    }

    pub(crate) fn profiles(&self, kind: Kind) -> Vec<Profile> {
        self.table(kind)
            .values()
            .map(|s| s.profile.clone())
            .collect()
    }

    /// Looks a profile up by one identifier.
    pub(crate) fn find_id(&self, kind: Kind, key: &str, value: &str) -> Option<String> {
        match key {
            "id" => self
                .table(kind)
                .contains_key(value)
                .then(|| value.to_string()),
            "anonymous_id" => self.index.first(kind, "anonymous_id", value),
            "email" if kind == Kind::User => {
                self.index.first(kind, "email", &value.to_ascii_lowercase())
            }
            "domain" if kind == Kind::Account => {
                self.index
                    .first(kind, "domain", &value.to_ascii_lowercase())
            }
            "external_id" => self.index.first(kind, "external_id", value),
            // Not an identity claim of this kind: a plain scan (rare, control API only).
            "email" | "domain" => self
                .table(kind)
                .values()
                .find(|s| {
                    s.profile
                        .attributes
                        .get(key)
                        .and_then(Value::as_str)
                        .is_some_and(|v| v.eq_ignore_ascii_case(value))
                })
                .map(|s| s.profile.id.clone()),
            _ => None,
        }
    }

    pub(crate) fn find_by(&self, kind: Kind, key: &str, value: &str) -> Option<Profile> {
        let id = self.find_id(kind, key, value)?;
        self.table(kind).get(&id).map(|s| s.profile.clone())
    }

    /// Resolves claims to a profile id (see [`Store::resolve_unindexed`]) and re-indexes it.
    pub(crate) fn resolve(
        &mut self,
        kind: Kind,
        claims: &Claims,
        create: bool,
    ) -> Result<String, String> {
        let id = self.resolve_unindexed(kind, claims, create)?;
        self.reindex(kind, &id);
        Ok(id)
    }

    /// Applies trait operations (see [`Store::apply_traits_unindexed`]) and re-indexes.
    pub(crate) fn apply_traits(
        &mut self,
        kind: Kind,
        id: &str,
        ops: &[(String, TraitOp)],
    ) -> Result<(), String> {
        let res = self.apply_traits_unindexed(kind, id, ops);
        self.reindex(kind, id);
        res
    }

    /// `alias`/`unalias` (see [`Store::alias_unindexed`]) and re-indexes.
    pub(crate) fn alias(
        &mut self,
        kind: Kind,
        id: &str,
        anonymous_id: &str,
        add: bool,
    ) -> Result<(), String> {
        let res = self.alias_unindexed(kind, id, anonymous_id, add);
        self.reindex(kind, id);
        res
    }

    /// Creates or updates a profile (see [`Store::upsert_unindexed`]) and re-indexes it.
    pub(crate) fn upsert(&mut self, kind: Kind, attrs: &Value) -> String {
        let id = self.upsert_unindexed(kind, attrs);
        self.reindex(kind, &id);
        id
    }

    /// Resolves claims to a profile id, creating the profile when allowed.
    ///
    /// Order: `id`, `external_id`, `email`/`domain`, `anonymous_id`. On a match the
    /// `anonymous_id` accumulates and missing `email`/`domain`/`external_id` are filled.
    fn resolve_unindexed(
        &mut self,
        kind: Kind,
        claims: &Claims,
        create: bool,
    ) -> Result<String, String> {
        let mut claims = claims.clone();
        if kind == Kind::Account && claims.ident.as_deref().is_some_and(is_generic_domain) {
            claims.ident = None;
        }
        if claims.is_empty() {
            return Err(format!("no usable {} claims", kind.name()));
        }
        if let Some(id) = &claims.id {
            if !self.table(kind).contains_key(id) {
                return Err(format!("no {} with id {id}", kind.name()));
            }
        }
        let ident_key = kind.ident_key();
        let found = claims
            .id
            .clone()
            .or_else(|| {
                claims
                    .external_id
                    .as_deref()
                    .and_then(|v| self.find_id(kind, "external_id", v))
            })
            .or_else(|| {
                claims
                    .ident
                    .as_deref()
                    .and_then(|v| self.find_id(kind, ident_key, v))
            })
            .or_else(|| {
                claims
                    .anonymous_id
                    .as_deref()
                    .and_then(|v| self.find_id(kind, "anonymous_id", v))
            });
        let id = match found {
            Some(id) => id,
            None if !create => {
                return Err(format!(
                    "{} not found and io.hull.create is false",
                    kind.name()
                ))
            }
            None => self.create(kind),
        };
        if let Some(stored) = self.table_mut(kind).get_mut(&id) {
            for (key, value) in [
                ("external_id", &claims.external_id),
                (ident_key, &claims.ident),
            ] {
                if let Some(v) = value {
                    if stored
                        .profile
                        .attributes
                        .get(key)
                        .is_none_or(Value::is_null)
                    {
                        stored.write_attr(key, Some(Value::String(v.clone())));
                    }
                }
            }
            if let Some(anon) = &claims.anonymous_id {
                stored.add_anonymous_id(anon);
            }
        }
        Ok(id)
    }

    /// Creates an empty profile and returns its id.
    fn create(&mut self, kind: Kind) -> String {
        let id = self.new_id(kind);
        let ts = now();
        let stored = Stored {
            profile: Profile {
                id: id.clone(),
                attributes: Map::new(),
                anonymous_ids: Vec::new(),
                account_id: None,
                segment_ids: Vec::new(),
            },
            created_at: ts.clone(),
            updated_at: ts,
            changed: true,
            is_new: true,
            version: 0,
            changes: Map::new(),
            notified_segments: Vec::new(),
        };
        self.table_mut(kind).insert(id.clone(), stored);
        id
    }

    /// Applies trait operations atomically: either all apply or none (error returned).
    fn apply_traits_unindexed(
        &mut self,
        kind: Kind,
        id: &str,
        ops: &[(String, TraitOp)],
    ) -> Result<(), String> {
        let Some(stored) = self.table_mut(kind).get_mut(id) else {
            return Err(format!("no {} with id {id}", kind.name()));
        };
        let mut writes: Vec<(&str, Option<Value>)> = Vec::with_capacity(ops.len());
        for (key, op) in ops {
            if RESERVED.contains(&key.as_str()) {
                return Err(format!("attribute {key:?} is read-only"));
            }
            let current = stored.profile.attributes.get(key.as_str());
            let write = match op {
                TraitOp::Set(v) => Some(Some(v.clone())),
                TraitOp::Delete => Some(None),
                TraitOp::SetIfNull(v) => {
                    current.is_none_or(Value::is_null).then(|| Some(v.clone()))
                }
                TraitOp::Inc(n) => Some(Some(
                    add_numbers(current, n, false).map_err(|e| format!("{key}: {e}"))?,
                )),
                TraitOp::Dec(n) => Some(Some(
                    add_numbers(current, n, true).map_err(|e| format!("{key}: {e}"))?,
                )),
            };
            if let Some(w) = write {
                writes.push((key.as_str(), w));
            }
        }
        for (key, value) in writes {
            let value = match (kind, key, value) {
                (Kind::Account, "domain", Some(Value::String(d))) if is_generic_domain(&d) => {
                    continue
                }
                (_, _, v) => v,
            };
            stored.write_attr(key, value);
        }
        Ok(())
    }

    /// Links a user to an account.
    pub(crate) fn link(&mut self, user_id: &str, account_id: &str) -> Result<(), String> {
        if !self.accounts.contains_key(account_id) {
            return Err(format!("no account with id {account_id}"));
        }
        let Some(user) = self.users.get_mut(user_id) else {
            return Err(format!("no user with id {user_id}"));
        };
        if user.profile.account_id.as_deref() != Some(account_id) {
            user.profile.account_id = Some(account_id.to_string());
            user.touch();
        }
        Ok(())
    }

    /// `alias` (add) or `unalias` (remove) an anonymous id.
    fn alias_unindexed(
        &mut self,
        kind: Kind,
        id: &str,
        anonymous_id: &str,
        add: bool,
    ) -> Result<(), String> {
        let Some(stored) = self.table_mut(kind).get_mut(id) else {
            return Err(format!("no {} with id {id}", kind.name()));
        };
        if add {
            stored.add_anonymous_id(anonymous_id);
        } else if stored
            .profile
            .anonymous_ids
            .iter()
            .any(|a| a == anonymous_id)
        {
            stored.profile.anonymous_ids.retain(|a| a != anonymous_id);
            stored.touch();
        }
        Ok(())
    }

    /// Replaces a profile's segments; unknown profiles are ignored.
    pub(crate) fn set_segments(&mut self, kind: Kind, id: &str, segment_ids: &[&str]) {
        if let Some(stored) = self.table_mut(kind).get_mut(id) {
            let ids: Vec<String> = segment_ids.iter().map(|s| s.to_string()).collect();
            if stored.profile.segment_ids != ids {
                stored.profile.segment_ids = ids;
                stored.touch();
            }
        }
    }

    /// Creates or updates a profile from flat attributes (the seed / control API form).
    ///
    /// Identification keys: `id`, `external_id`, `email`|`domain`, `anonymous_id`. Special keys:
    /// `anonymous_ids` (array), `segment_ids` (array) and, for users, `account_id`,
    /// `account_domain`, `account_external_id` (link). Every other key is set as an attribute
    /// (`null` deletes it).
    fn upsert_unindexed(&mut self, kind: Kind, attrs: &Value) -> String {
        let empty = Map::new();
        let obj = attrs.as_object().unwrap_or(&empty);
        let text = |key: &str| match obj.get(key) {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let lookup = [
            ("id", text("id")),
            ("external_id", text("external_id")),
            (kind.ident_key(), text(kind.ident_key())),
            ("anonymous_id", text("anonymous_id")),
        ];
        let found = lookup
            .iter()
            .find_map(|(key, value)| value.as_deref().and_then(|v| self.find_id(kind, key, v)));
        let id = found.unwrap_or_else(|| self.create(kind));
        let account_link = match kind {
            Kind::User => text("account_id")
                .filter(|a| self.accounts.contains_key(a))
                .or_else(|| {
                    text("account_domain").and_then(|d| self.find_id(Kind::Account, "domain", &d))
                })
                .or_else(|| {
                    text("account_external_id")
                        .and_then(|e| self.find_id(Kind::Account, "external_id", &e))
                }),
            Kind::Account => None,
        };
        let special = [
            "id",
            "anonymous_id",
            "anonymous_ids",
            "segment_ids",
            "account_id",
            "account_domain",
            "account_external_id",
            "created_at",
            "updated_at",
            "indexed_at",
        ];
        let Some(stored) = self.table_mut(kind).get_mut(&id) else {
            return id;
        };
        for (key, value) in obj {
            if special.contains(&key.as_str()) {
                continue;
            }
            let value = (!value.is_null()).then(|| value.clone());
            stored.write_attr(key, value);
        }
        let mut anonymous: Vec<String> = text("anonymous_id").into_iter().collect();
        if let Some(Value::Array(list)) = obj.get("anonymous_ids") {
            anonymous.extend(list.iter().filter_map(Value::as_str).map(str::to_string));
        }
        for anon in &anonymous {
            stored.add_anonymous_id(anon);
        }
        if let Some(Value::Array(list)) = obj.get("segment_ids") {
            let ids: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
            self.set_segments(kind, &id, &ids);
        }
        if let Some(account_id) = account_link {
            // Both ids exist at this point; a failure would only mean a concurrent reset.
            let _ = self.link(&id, &account_id);
        }
        if let Some(stored) = self.table_mut(kind).get_mut(&id) {
            stored.touch();
        }
        id
    }

    /// Segment objects for these ids, from the org's list of `kind`'s segments.
    pub(crate) fn segment_objects(&self, kind: Kind, ids: &[String]) -> Vec<Value> {
        let list = match kind {
            Kind::User => &self.users_segments,
            Kind::Account => &self.accounts_segments,
        };
        ids.iter()
            .filter_map(|id| {
                list.iter()
                    .find(|s| s.get("id").and_then(Value::as_str) == Some(id.as_str()))
                    .cloned()
            })
            .collect()
    }

    /// Marks a delivered message: clears change tracking if the profile did not change since
    /// the message was built.
    pub(crate) fn mark_delivered(&mut self, kind: Kind, id: &str, version: u64) {
        if let Some(stored) = self.table_mut(kind).get_mut(id) {
            if stored.version == version {
                stored.changed = false;
                stored.is_new = false;
                stored.changes.clear();
                stored.notified_segments = stored.profile.segment_ids.clone();
            }
        }
    }

    /// The `/_sandbox/state` document.
    pub(crate) fn state_json(&self) -> Value {
        let profiles = |kind: Kind| -> Vec<Value> {
            self.table(kind)
                .values()
                .map(|s| {
                    let mut v = serde_json::to_value(&s.profile).unwrap_or(Value::Null);
                    if let Value::Object(obj) = &mut v {
                        obj.insert("created_at".into(), json!(s.created_at));
                        obj.insert("updated_at".into(), json!(s.updated_at));
                        obj.insert("changed".into(), json!(s.changed));
                        obj.insert("changes".into(), Value::Object(s.changes.clone()));
                    }
                    v
                })
                .collect()
        };
        json!({
            "connectors": self.connectors,
            "accounts": profiles(Kind::Account),
            "users": profiles(Kind::User),
            "users_segments": self.users_segments,
            "accounts_segments": self.accounts_segments,
            "events": self.events,
        })
    }
}
