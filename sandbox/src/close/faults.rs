//! Fault injection: errors, latency, dropped connections and lost responses.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// Faults to inject into API answers; settable at start and at run time.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Faults {
    /// Share of requests (0..1) answered with an error status instead of being handled.
    pub error_rate: f64,
    /// Statuses picked from for injected errors (empty → 503).
    pub error_statuses: Vec<u16>,
    /// Routes the faults apply to, as `"METHOD /template/"` (e.g. `"POST /lead/"`) or a bare
    /// template (`"/lead/{id}/"`, any method). `None` = all routes.
    pub routes: Option<Vec<String>>,
    /// Latency added to every affected request.
    pub latency_ms: u64,
    /// Share of requests whose connection is closed without a response (not applied).
    pub drop_connection_rate: f64,
    /// Share of writes (POST/PUT/DELETE) that are applied but answered 503.
    pub lost_response_rate: f64,
    /// Seed for the fault dice (deterministic sequence); `None` = random.
    pub seed: Option<u64>,
}

/// What to do with one request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultPlan {
    /// Delay before handling.
    pub latency_ms: u64,
    /// Close the connection without answering.
    pub drop_connection: bool,
    /// Answer this status without handling.
    pub error_status: Option<u16>,
    /// Handle, then answer 503.
    pub lose_response: bool,
}

/// Faults plus their random source.
#[derive(Debug)]
pub struct FaultState {
    /// Current faults.
    pub faults: Faults,
    rng: StdRng,
}

impl FaultState {
    /// State for `faults`.
    pub fn new(faults: Faults) -> Self {
        let rng = match faults.seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_entropy(),
        };
        Self { faults, rng }
    }

    fn applies(&self, method: &str, template: &str) -> bool {
        match &self.faults.routes {
            None => true,
            Some(routes) => routes.iter().any(|r| {
                let r = r.trim();
                r == template || r == format!("{method} {template}")
            }),
        }
    }

    fn roll(&mut self, rate: f64) -> bool {
        rate > 0.0 && self.rng.gen::<f64>() < rate
    }

    /// Decides the faults of one request.
    pub fn plan(&mut self, method: &str, template: &str) -> FaultPlan {
        if !self.applies(method, template) {
            return FaultPlan::default();
        }
        let mut plan = FaultPlan {
            latency_ms: self.faults.latency_ms,
            ..FaultPlan::default()
        };
        if self.roll(self.faults.drop_connection_rate) {
            plan.drop_connection = true;
        } else if self.roll(self.faults.error_rate) {
            let statuses = &self.faults.error_statuses;
            plan.error_status = Some(if statuses.is_empty() {
                503
            } else {
                statuses[self.rng.gen_range(0..statuses.len())]
            });
        } else if method != "GET" && self.roll(self.faults.lost_response_rate) {
            plan.lose_response = true;
        }
        plan
    }
}
