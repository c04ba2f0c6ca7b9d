ALTER TABLE "instances" ADD COLUMN "last_good_backup_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "instances" ADD COLUMN "stale_after_hours" double precision;--> statement-breakpoint
ALTER TABLE "instances" ADD COLUMN "stale_since" timestamp with time zone;--> statement-breakpoint
-- instances.last_good_backup_at follows the newest completed backup through every path that
-- completes, deletes or expires one (the backup runbook, retention, a deleted backup). Only a change
-- that involves a completed backup can move it; then the instance row is locked first, so the
-- newest backup is read after any concurrent change to the same instance's backups has committed
-- (a statement's snapshot taken before that lock could miss a backup completed meanwhile).
CREATE OR REPLACE FUNCTION bcdr_refresh_last_good_backup(inst text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  PERFORM 1 FROM instances WHERE id = inst FOR UPDATE;
  UPDATE instances i SET last_good_backup_at = b.at
  FROM (SELECT max(completed_at) AS at FROM backups WHERE instance_id = inst AND status = 'completed') b
  WHERE i.id = inst AND i.last_good_backup_at IS DISTINCT FROM b.at;
END $$;--> statement-breakpoint
CREATE OR REPLACE FUNCTION bcdr_backups_last_good() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.status = 'completed' THEN PERFORM bcdr_refresh_last_good_backup(OLD.instance_id); END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.status = 'completed' AND (TG_OP = 'INSERT' OR OLD.status IS DISTINCT FROM 'completed' OR NEW.instance_id IS DISTINCT FROM OLD.instance_id OR NEW.completed_at IS DISTINCT FROM OLD.completed_at) THEN
    PERFORM bcdr_refresh_last_good_backup(NEW.instance_id);
  END IF;
  RETURN NULL;
END $$;--> statement-breakpoint
CREATE TRIGGER backups_last_good AFTER INSERT OR DELETE OR UPDATE OF status, completed_at, instance_id ON backups
  FOR EACH ROW EXECUTE FUNCTION bcdr_backups_last_good();--> statement-breakpoint
UPDATE instances i SET last_good_backup_at = b.at
  FROM (SELECT instance_id, max(completed_at) AS at FROM backups WHERE status = 'completed' GROUP BY instance_id) b
  WHERE b.instance_id = i.id;--> statement-breakpoint
-- The API keeps the instance list in memory until the catalog says it changed.
CREATE OR REPLACE FUNCTION bcdr_notify_catalog() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('bcdr_catalog', TG_TABLE_NAME);
  RETURN NULL;
END $$;--> statement-breakpoint
CREATE TRIGGER instances_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON instances FOR EACH STATEMENT EXECUTE FUNCTION bcdr_notify_catalog();--> statement-breakpoint
CREATE TRIGGER replicas_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON replicas FOR EACH STATEMENT EXECUTE FUNCTION bcdr_notify_catalog();
