CREATE TABLE "failovers" (
	"id" text PRIMARY KEY NOT NULL,
	"workflow_id" text NOT NULL,
	"instance_id" text NOT NULL,
	"from_region" text NOT NULL,
	"to_region" text NOT NULL,
	"kind" text NOT NULL,
	"status" text NOT NULL,
	"declared_at" timestamp with time zone NOT NULL,
	"signed_off_at" timestamp with time zone,
	"serving_at" timestamp with time zone NOT NULL,
	"estimate" jsonb NOT NULL,
	"rto_from_declared_seconds" double precision NOT NULL,
	"rto_from_signoff_seconds" double precision,
	"slot" text,
	"failback_workflow_id" text,
	"measured" jsonb,
	"old_primary_backup_id" text,
	"write_blocked_seconds" double precision,
	"failed_back_at" timestamp with time zone
);
--> statement-breakpoint
CREATE TABLE "replicas" (
	"instance_id" text PRIMARY KEY NOT NULL,
	"direction" text NOT NULL,
	"source_region" text NOT NULL,
	"source_database" text NOT NULL,
	"target_region" text NOT NULL,
	"target_database" text NOT NULL,
	"subscription" text NOT NULL,
	"state" text NOT NULL,
	"lag_bytes" bigint,
	"lag_seconds" double precision,
	"caught_up_at" timestamp with time zone,
	"checked_at" timestamp with time zone,
	"sample_lsn" text,
	"sample_at" timestamp with time zone,
	"drift" jsonb,
	"error" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "regions" ADD COLUMN "health" text DEFAULT 'unknown' NOT NULL;--> statement-breakpoint
ALTER TABLE "regions" ADD COLUMN "latency_ms" double precision;--> statement-breakpoint
ALTER TABLE "regions" ADD COLUMN "checked_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "regions" ADD COLUMN "failed_checks" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "regions" ADD COLUMN "outage_since" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "regions" ADD COLUMN "last_error" text;--> statement-breakpoint
ALTER TABLE "backups" ADD COLUMN "source_database" text;--> statement-breakpoint
CREATE INDEX "failovers_instance" ON "failovers" USING btree ("instance_id","declared_at");