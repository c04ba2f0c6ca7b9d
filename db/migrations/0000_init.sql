CREATE TABLE "regions" (
	"name" text PRIMARY KEY NOT NULL,
	"pair" text NOT NULL,
	"blob_dir" text NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "instances" (
	"id" text PRIMARY KEY NOT NULL,
	"name" text NOT NULL,
	"type" text NOT NULL,
	"edition" text NOT NULL,
	"home_region" text NOT NULL,
	"active_region" text NOT NULL,
	"state" text NOT NULL,
	"database_name" text NOT NULL,
	"endpoint" text NOT NULL,
	"locked_by_run" text,
	"locked_runbook" text,
	"locked_at" timestamp with time zone,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "backups" (
	"id" text PRIMARY KEY NOT NULL,
	"instance_id" text NOT NULL,
	"instance_name" text NOT NULL,
	"region" text NOT NULL,
	"kind" text NOT NULL,
	"label" text,
	"status" text NOT NULL,
	"object_key" text NOT NULL,
	"edition" text NOT NULL,
	"server_version" text,
	"size_bytes" bigint,
	"sha256" text,
	"sequences" jsonb,
	"error" text,
	"workflow_id" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"completed_at" timestamp with time zone,
	"expires_at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
CREATE TABLE "backup_schedules" (
	"instance_id" text PRIMARY KEY NOT NULL,
	"schedule_id" text NOT NULL,
	"start_time" text DEFAULT '02:00' NOT NULL,
	"interval_days" integer DEFAULT 1 NOT NULL,
	"retention_days" integer DEFAULT 3 NOT NULL,
	"keep_at_least_one" boolean DEFAULT true NOT NULL,
	"enabled" boolean DEFAULT true NOT NULL,
	"last_run_at" timestamp with time zone,
	"last_run_status" text,
	"last_run_error" text,
	"last_run_workflow_id" text,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "audit_events" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"at" timestamp with time zone DEFAULT now() NOT NULL,
	"actor" text NOT NULL,
	"action" text NOT NULL,
	"instance_id" text,
	"subject" text,
	"details" jsonb
);
--> statement-breakpoint
CREATE UNIQUE INDEX "instances_name_key" ON "instances" USING btree ("name");--> statement-breakpoint
CREATE UNIQUE INDEX "backups_region_object_key" ON "backups" USING btree ("region","object_key");--> statement-breakpoint
CREATE INDEX "backups_instance_created" ON "backups" USING btree ("instance_id","created_at");--> statement-breakpoint
CREATE INDEX "audit_instance_at" ON "audit_events" USING btree ("instance_id","at");--> statement-breakpoint
CREATE INDEX "audit_actor_at" ON "audit_events" USING btree ("actor","at");