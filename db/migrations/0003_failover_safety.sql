CREATE TABLE "divergent_rows" (
	"id" text PRIMARY KEY NOT NULL,
	"failover_id" text NOT NULL,
	"instance_id" text NOT NULL,
	"table_name" text NOT NULL,
	"key" jsonb NOT NULL,
	"op" text NOT NULL,
	"row" text,
	"secondary_row" text,
	"committed_at" timestamp with time zone,
	"status" text DEFAULT 'pending' NOT NULL,
	"conflict" text,
	"note" text,
	"replayed_at" timestamp with time zone,
	"replayed_by" text
);
--> statement-breakpoint
ALTER TABLE "instances" ADD COLUMN "fenced_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "instances" ADD COLUMN "rpo_target_seconds" double precision;--> statement-breakpoint
ALTER TABLE "instances" ADD COLUMN "readiness" jsonb;--> statement-breakpoint
CREATE INDEX "divergent_rows_instance_idx" ON "divergent_rows" USING btree ("instance_id","failover_id");