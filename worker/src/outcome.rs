//! What a job did, in either direction: the one outcome type of the worker. The consume loop
//! turns it (or the job's error) into a [`crate::Disposition`].

/// What a job did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    // Hull → Close.
    /// Written to Close (created, updated or adopted an existing object).
    Written { close_id: String, action: Action },
    /// The mapped body equals the last one sent: no Close call.
    Unchanged { close_id: String },
    /// Filtered out.
    Skipped(String),
    // Close → Hull.
    /// A run was planned into this many windows (and this many deletions/merges applied).
    Planned {
        /// Windows.
        windows: usize,
        /// Events from the event log applied.
        events: usize,
    },
    /// A page was written to Hull.
    Page {
        /// Leads written.
        leads: usize,
        /// Contacts written.
        contacts: usize,
        /// The run is complete.
        run_completed: bool,
    },
    /// One lead (and its contacts) was refreshed.
    Refreshed {
        /// Contacts written.
        contacts: usize,
    },
    /// A deletion or merge was recorded in Hull.
    Marked,
    /// Nothing to do (stale job, finished run, object gone).
    Stale(String),
}

impl Outcome {
    /// The metric label (`worker_jobs_total{outcome}`).
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Written { .. } => "written",
            Outcome::Unchanged { .. } => "unchanged",
            Outcome::Skipped(_) => "skipped",
            Outcome::Stale(_) => "stale",
            Outcome::Planned { .. }
            | Outcome::Page { .. }
            | Outcome::Refreshed { .. }
            | Outcome::Marked => "imported",
        }
    }
}

/// The Close write made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// POST.
    Created,
    /// PUT on a known id.
    Updated,
    /// Found by lookup, then PUT.
    Adopted,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_has_its_metric_label() {
        let cases = [
            (
                Outcome::Written {
                    close_id: "lead_1".into(),
                    action: Action::Created,
                },
                "written",
            ),
            (
                Outcome::Unchanged {
                    close_id: "lead_1".into(),
                },
                "unchanged",
            ),
            (Outcome::Skipped("not in a segment".into()), "skipped"),
            (
                Outcome::Planned {
                    windows: 2,
                    events: 0,
                },
                "imported",
            ),
            (
                Outcome::Page {
                    leads: 5,
                    contacts: 9,
                    run_completed: false,
                },
                "imported",
            ),
            (Outcome::Refreshed { contacts: 1 }, "imported"),
            (Outcome::Marked, "imported"),
            (Outcome::Stale("run ended".into()), "stale"),
        ];
        for (outcome, label) in cases {
            assert_eq!(outcome.label(), label, "{outcome:?}");
        }
    }
}
