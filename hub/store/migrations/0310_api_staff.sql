-- API users act as staff members (issue 7 work orders): a technician or butler accepts, arrives
-- at and resolves the orders assigned to *their* staff id. NULL = the user is not a staff
-- member (an operator desk, a machine user). Staff rows are only ever deactivated by the
-- registry sync, never deleted, so the reference stays valid; ON DELETE SET NULL for safety.
ALTER TABLE api_users ADD COLUMN staff_id text REFERENCES staff (id) ON DELETE SET NULL;
CREATE UNIQUE INDEX api_users_one_per_staff ON api_users (staff_id) WHERE staff_id IS NOT NULL;
