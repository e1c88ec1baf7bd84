-- Fairness: jobs of a tenant whose budget is booked further ahead than a job waits are
-- deferred. `defer_tat` is where the next deferred job of the (key, group) comes back: deferred
-- jobs are spread one spacing apart after the booked slots, shared by every worker, so they
-- return about as fast as the budget can serve them.
ALTER TABLE close_budgets ADD COLUMN defer_tat timestamptz NOT NULL DEFAULT '-infinity';
