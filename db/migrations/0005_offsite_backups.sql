CREATE TABLE "backup_copies" (
	"backup_id" text NOT NULL,
	"region" text NOT NULL,
	"store_kind" text NOT NULL,
	"status" text NOT NULL,
	"size_bytes" bigint,
	"sha256" text,
	"attempts" integer DEFAULT 0 NOT NULL,
	"error" text,
	"verified_at" timestamp with time zone,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "backup_copies_backup_id_region_pk" PRIMARY KEY("backup_id","region")
);
--> statement-breakpoint
CREATE TABLE "backup_readers" (
	"backup_id" text NOT NULL,
	"reader_id" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "backup_readers_backup_id_reader_id_pk" PRIMARY KEY("backup_id","reader_id")
);
--> statement-breakpoint
ALTER TABLE "regions" ADD COLUMN "store_kind" text DEFAULT 'fs' NOT NULL;--> statement-breakpoint
ALTER TABLE "backups" ADD COLUMN "layout" text DEFAULT 'flat' NOT NULL;--> statement-breakpoint
ALTER TABLE "backups" ADD COLUMN "archive_key" text;--> statement-breakpoint
ALTER TABLE "backups" ADD COLUMN "encryption" jsonb;--> statement-breakpoint
ALTER TABLE "backups" ADD COLUMN "offsite_verified_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "backups" ADD COLUMN "hold_reason" text;--> statement-breakpoint
ALTER TABLE "backups" ADD COLUMN "held_by" text;--> statement-breakpoint
ALTER TABLE "backups" ADD COLUMN "held_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "backups" ADD COLUMN "locked_until" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "backups" ADD COLUMN "lock_mode" text;--> statement-breakpoint
ALTER TABLE "backup_copies" ADD CONSTRAINT "backup_copies_backup_id_backups_id_fk" FOREIGN KEY ("backup_id") REFERENCES "public"."backups"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "backup_copies_status" ON "backup_copies" USING btree ("status");--> statement-breakpoint
-- A backup is good only once its offsite copy is verified: a backup that lives only in its own
-- region is lost with it. last_good_backup_at (and so staleness) follows that from now on.
CREATE OR REPLACE FUNCTION bcdr_refresh_last_good_backup(inst text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  PERFORM 1 FROM instances WHERE id = inst FOR UPDATE;
  UPDATE instances i SET last_good_backup_at = b.at
  FROM (SELECT max(completed_at) AS at FROM backups WHERE instance_id = inst AND status = 'completed' AND offsite_verified_at IS NOT NULL) b
  WHERE i.id = inst AND i.last_good_backup_at IS DISTINCT FROM b.at;
END $$;--> statement-breakpoint
CREATE OR REPLACE FUNCTION bcdr_backups_last_good() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.status = 'completed' AND OLD.offsite_verified_at IS NOT NULL THEN PERFORM bcdr_refresh_last_good_backup(OLD.instance_id); END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.status = 'completed' AND NEW.offsite_verified_at IS NOT NULL AND (TG_OP = 'INSERT' OR OLD.status IS DISTINCT FROM 'completed' OR OLD.offsite_verified_at IS NULL OR NEW.instance_id IS DISTINCT FROM OLD.instance_id OR NEW.completed_at IS DISTINCT FROM OLD.completed_at) THEN
    PERFORM bcdr_refresh_last_good_backup(NEW.instance_id);
  END IF;
  RETURN NULL;
END $$;--> statement-breakpoint
DROP TRIGGER backups_last_good ON backups;--> statement-breakpoint
CREATE TRIGGER backups_last_good AFTER INSERT OR DELETE OR UPDATE OF status, completed_at, instance_id, offsite_verified_at ON backups
  FOR EACH ROW EXECUTE FUNCTION bcdr_backups_last_good();
