-- The job that added a user's contact to its lead's gathering. That job is deferred until the
-- lead is created; when the contact is created nested in the lead, the commit that records its
-- sync state also deletes the job's scheduled return (its work is done), so a gathered user
-- costs one run of its job instead of two or more.
ALTER TABLE pending_contacts ADD COLUMN job_id UUID;
