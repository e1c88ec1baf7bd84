-- A claimed gathering still takes contacts until its creator has waited for its lead-write
-- slot: the creator seals it just before it sends the create, and nests every contact that
-- joined until then. Users of one account arrive together, often while their account's
-- creator waits for its slot; before this, those that came after the claim were written on
-- their own (two Close requests each).
ALTER TABLE pending_leads ADD COLUMN sealed BOOLEAN NOT NULL DEFAULT false;
