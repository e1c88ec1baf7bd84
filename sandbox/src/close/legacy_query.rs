//! The legacy `query=` search string of `GET /lead/` (the UI search-box grammar), limited to
//! the forms connectors use: date comparisons, `sort:`, exact field matches and bare words.

use std::cmp::Ordering;

use serde_json::Value;

use super::error::{ApiError, ApiResult};
use super::model::{Lead, ObjectKind};
use super::store::Store;
use super::time::{self, Micros};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DateField {
    Created,
    Updated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Gt,
    Gte,
    Lt,
    Lte,
    Eq,
}

#[derive(Debug, Clone)]
enum Term {
    Date(DateField, Op, Micros),
    Url(String),
    Name(String),
    Email(String),
    Status(String),
    Id(String),
    Custom { key: String, value: Option<String> },
    Word(String),
}

/// Sort key of a legacy query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    /// `date_created` / `created`.
    Created,
    /// `date_updated` / `updated`.
    Updated,
    /// `name` / `display_name`.
    Name,
}

/// A parsed legacy query: ANDed terms plus an optional sort.
#[derive(Debug, Clone, Default)]
pub struct LegacyQuery {
    terms: Vec<Term>,
    /// Sort key and whether it is descending.
    pub sort: Option<(SortKey, bool)>,
}

struct Lexer {
    chars: Vec<char>,
    pos: usize,
}

impl Lexer {
    fn skip_ws(&mut self) {
        while self.pos < self.chars.len() && self.chars[self.pos].is_whitespace() {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    /// A quoted string or a bare run ending at whitespace or any char of `stops`.
    fn atom(&mut self, stops: &[char]) -> ApiResult<String> {
        if self.peek() == Some('"') {
            self.pos += 1;
            let mut out = String::new();
            while let Some(c) = self.peek() {
                self.pos += 1;
                match c {
                    '"' => return Ok(out),
                    '\\' => {
                        if let Some(n) = self.peek() {
                            out.push(n);
                            self.pos += 1;
                        }
                    }
                    _ => out.push(c),
                }
            }
            return Err(ApiError::bad_request("Invalid query: unterminated quote."));
        }
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c.is_whitespace() || stops.contains(&c) {
                break;
            }
            self.pos += 1;
        }
        Ok(self.chars[start..self.pos].iter().collect())
    }

    fn op(&mut self) -> Option<Op> {
        let two: String = self.chars[self.pos..].iter().take(2).collect();
        let (op, len) = if two == ">=" {
            (Op::Gte, 2)
        } else if two == "<=" {
            (Op::Lte, 2)
        } else {
            match self.peek()? {
                '>' => (Op::Gt, 1),
                '<' => (Op::Lt, 1),
                '=' => (Op::Eq, 1),
                _ => return None,
            }
        };
        self.pos += len;
        Some(op)
    }
}

impl LegacyQuery {
    /// Parses a query string; unsupported keywords give a 400.
    pub fn parse(text: &str) -> ApiResult<LegacyQuery> {
        let mut lx = Lexer {
            chars: text.chars().collect(),
            pos: 0,
        };
        let mut q = LegacyQuery::default();
        loop {
            lx.skip_ws();
            if lx.peek().is_none() {
                break;
            }
            let quoted = lx.peek() == Some('"');
            let key = lx.atom(&[':', '<', '>', '='])?;
            if lx.peek() == Some(':') {
                lx.pos += 1;
                let value = lx.atom(&[])?;
                q.keyword(&key, value)?;
                continue;
            }
            let save = lx.pos;
            lx.skip_ws();
            if let Some(op) = lx.op() {
                lx.skip_ws();
                let value = lx.atom(&[])?;
                q.comparison(&key, op, &value)?;
                continue;
            }
            lx.pos = save;
            if key.is_empty() {
                return Err(ApiError::bad_request(format!("Invalid query: {text}")));
            }
            if !quoted && key.eq_ignore_ascii_case("and") {
                continue;
            }
            q.terms.push(Term::Word(key.to_lowercase()));
        }
        Ok(q)
    }

    fn keyword(&mut self, key: &str, value: String) -> ApiResult<()> {
        let lower = key.to_ascii_lowercase();
        let term = match lower.as_str() {
            "sort" => {
                let (desc, field) = match value.strip_prefix('-') {
                    Some(f) => (true, f),
                    None => (false, value.as_str()),
                };
                let key = match field {
                    "date_updated" | "updated" => SortKey::Updated,
                    "date_created" | "created" => SortKey::Created,
                    "name" | "display_name" => SortKey::Name,
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "Invalid query: unsupported sort field \"{other}\"."
                        )))
                    }
                };
                self.sort = Some((key, desc));
                return Ok(());
            }
            "url" => Term::Url(value),
            "name" | "company" | "lead_name" => Term::Name(value),
            "email_address" | "email" => Term::Email(value),
            "status" | "lead_status" => Term::Status(value),
            "id" | "lead_id" => Term::Id(value),
            "date_updated" | "updated" | "date_created" | "created" => {
                return self.comparison(key, Op::Eq, &value);
            }
            _ => match key.strip_prefix("custom.") {
                Some(field) => Term::Custom {
                    key: field.to_string(),
                    value: (value != "*").then_some(value),
                },
                None => {
                    return Err(ApiError::bad_request(format!(
                        "Invalid query: unsupported keyword \"{key}\"."
                    )))
                }
            },
        };
        self.terms.push(term);
        Ok(())
    }

    fn comparison(&mut self, key: &str, op: Op, value: &str) -> ApiResult<()> {
        let field = match key.to_ascii_lowercase().as_str() {
            "date_updated" | "updated" => DateField::Updated,
            "date_created" | "created" => DateField::Created,
            other => {
                return Err(ApiError::bad_request(format!(
                    "Invalid query: cannot compare \"{other}\"."
                )))
            }
        };
        let t = time::parse(value).ok_or_else(|| {
            ApiError::bad_request(format!("Invalid query: invalid date \"{value}\"."))
        })?;
        self.terms.push(Term::Date(field, op, t));
        Ok(())
    }

    /// Checks that every `custom.<x>` term names a lead custom field of `org`.
    pub fn validate(&self, store: &Store, org: usize) -> ApiResult<()> {
        for term in &self.terms {
            if let Term::Custom { key, .. } = term {
                if store.orgs[org]
                    .custom_field(ObjectKind::Lead, key)
                    .is_none()
                {
                    return Err(ApiError::bad_request(format!(
                        "Invalid query: unknown custom field \"{key}\"."
                    )));
                }
            }
        }
        Ok(())
    }

    /// Whether `lead` matches every term.
    pub fn matches(&self, store: &Store, lead: &Lead) -> bool {
        self.terms.iter().all(|t| term_matches(store, lead, t))
    }

    /// Orders two leads by the query's sort (insertion order when there is none).
    pub fn compare(&self, a: &Lead, b: &Lead) -> Ordering {
        let ord = match self.sort {
            None => Ordering::Equal,
            Some((key, desc)) => {
                let o = match key {
                    SortKey::Created => a.date_created.cmp(&b.date_created),
                    SortKey::Updated => a.date_updated.cmp(&b.date_updated),
                    SortKey::Name => a.name.to_lowercase().cmp(&b.name.to_lowercase()),
                };
                if desc {
                    o.reverse()
                } else {
                    o
                }
            }
        };
        ord.then(a.seq.cmp(&b.seq))
    }
}

fn eq_ci(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

fn value_text(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items.iter().flat_map(value_text).collect(),
        Value::String(s) => vec![s.clone()],
        Value::Null => Vec::new(),
        other => vec![other.to_string()],
    }
}

fn term_matches(store: &Store, lead: &Lead, term: &Term) -> bool {
    let contacts = || {
        lead.contact_ids
            .iter()
            .filter_map(|c| store.contacts.get(c))
    };
    match term {
        Term::Date(field, op, t) => {
            let v = match field {
                DateField::Created => lead.date_created,
                DateField::Updated => lead.date_updated,
            };
            match op {
                Op::Gt => v > *t,
                Op::Gte => v >= *t,
                Op::Lt => v < *t,
                Op::Lte => v <= *t,
                Op::Eq => time::format_date(v) == time::format_date(*t),
            }
        }
        Term::Url(u) => lead
            .url
            .as_deref()
            .is_some_and(|l| eq_ci(l.trim_end_matches('/'), u.trim_end_matches('/'))),
        Term::Name(n) => eq_ci(&lead.name, n),
        Term::Email(e) => contacts().any(|c| c.email_addresses().any(|x| eq_ci(x, e))),
        Term::Status(s) => store.orgs[lead.org]
            .status_by_id(&lead.status_id)
            .is_some_and(|st| eq_ci(&st.label, s)),
        Term::Id(id) => &lead.id == id,
        Term::Custom { key, value } => {
            let Some(field) = store.orgs[lead.org].custom_field(ObjectKind::Lead, key) else {
                return false;
            };
            match (lead.custom.get(&field.id), value) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(v), Some(want)) => value_text(v).iter().any(|x| eq_ci(x, want)),
            }
        }
        Term::Word(w) => {
            lead.name.to_lowercase().contains(w)
                || lead
                    .url
                    .as_deref()
                    .is_some_and(|u| u.to_lowercase().contains(w))
                || contacts().any(|c| {
                    c.name.to_lowercase().contains(w)
                        || c.email_addresses().any(|e| e.to_lowercase().contains(w))
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_connector_forms() {
        for q in [
            r#"date_updated>="2024-01-01T10:00" sort:date_updated"#,
            r#"sort:updated date_updated >= 2024-01-01T10:00:00"#,
            r#"sort:-date_updated"#,
            r#"url:"https://acme.com" name:"Acme" email_address:"a@b.com""#,
            r#""custom.cf_x":"value" "custom.Some Field":*"#,
        ] {
            assert!(LegacyQuery::parse(q).is_ok(), "{q}");
        }
        assert!(LegacyQuery::parse("frobnicate:1").is_err());
        assert!(LegacyQuery::parse("date_updated >= yesterday").is_err());
    }
}
