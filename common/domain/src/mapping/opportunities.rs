//! Opportunity summary traits on the account (opt-in `sync_opportunities`; the original
//! connector ignored opportunities).
//!
//! Amounts stay in Close's units: Close stores `value` as an integer number of cents of
//! `value_currency`, and the sums are written as they are (no conversion, no currency
//! conversion: opportunities in several currencies are summed together, and the currency
//! trait reports the most recently updated opportunity's currency).

use serde_json::{Map, Number, Value};

use super::inbound::{set, TRAIT_PREFIX};

/// `status_type` of an open opportunity.
const STATUS_ACTIVE: &str = "active";

/// `status_type` of a won opportunity.
const STATUS_WON: &str = "won";

/// Summary traits from `lead.opportunities`:
/// - `closeio/opportunities_count`: number of opportunities;
/// - `closeio/opportunities_open_value`: sum of `value` over `status_type = "active"`;
/// - `closeio/opportunities_won_value`: sum of `value` over `status_type = "won"`;
/// - `closeio/opportunities_currency`: `value_currency` of the most recently updated one;
/// - `closeio/last_opportunity_status`: `status_label` of the most recently updated one.
///
/// "Most recently updated" is the greatest `date_updated` (Close's ISO timestamps compare as
/// text; the first one wins a tie). With no opportunities the count and sums are `0` and the
/// other two traits `null`, so Hull forgets removed opportunities. A lead without an
/// `opportunities` list (e.g. fetched with a `_fields` selection) gives no traits at all.
pub fn opportunity_traits(lead: &Value) -> Map<String, Value> {
    let mut traits = Map::new();
    let Some(opportunities) = lead.get("opportunities").and_then(Value::as_array) else {
        return traits;
    };
    let mut open = Sum::default();
    let mut won = Sum::default();
    let mut latest: Option<&Value> = None;
    for opportunity in opportunities {
        let value = opportunity.get("value");
        match opportunity.get("status_type").and_then(Value::as_str) {
            Some(STATUS_ACTIVE) => open.add(value),
            Some(STATUS_WON) => won.add(value),
            _ => {}
        }
        let updated = |o: &Value| {
            o.get("date_updated")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        if latest.is_none_or(|current| updated(opportunity) > updated(current)) {
            latest = Some(opportunity);
        }
    }
    let field =
        |o: Option<&Value>, key: &str| o.and_then(|o| o.get(key)).cloned().unwrap_or(Value::Null);
    let entries = [
        ("opportunities_count", Value::from(opportunities.len())),
        ("opportunities_open_value", open.into_value()),
        ("opportunities_won_value", won.into_value()),
        ("opportunities_currency", field(latest, "value_currency")),
        ("last_opportunity_status", field(latest, "status_label")),
    ];
    for (name, value) in entries {
        traits.insert(format!("{TRAIT_PREFIX}{name}"), set(value));
    }
    traits
}

/// A sum that stays an integer while every term is one.
#[derive(Default)]
struct Sum {
    integer: i64,
    float: f64,
    is_float: bool,
}

impl Sum {
    fn add(&mut self, value: Option<&Value>) {
        let Some(Value::Number(n)) = value else {
            return;
        };
        match n.as_i64() {
            Some(i) if !self.is_float => match self.integer.checked_add(i) {
                Some(total) => self.integer = total,
                None => self.switch_to_float(i as f64),
            },
            _ => {
                let term = n.as_f64().unwrap_or_default();
                if self.is_float {
                    self.float += term;
                } else {
                    self.switch_to_float(term);
                }
            }
        }
    }

    fn switch_to_float(&mut self, term: f64) {
        self.float = self.integer as f64 + term;
        self.is_float = true;
    }

    fn into_value(self) -> Value {
        if self.is_float {
            Number::from_f64(self.float).map_or(Value::Null, Value::Number)
        } else {
            Value::from(self.integer)
        }
    }
}
