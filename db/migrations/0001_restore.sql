CREATE TABLE "signoffs" (
	"id" text PRIMARY KEY NOT NULL,
	"workflow_id" text NOT NULL,
	"runbook" text NOT NULL,
	"instance_ids" jsonb NOT NULL,
	"requested_by" text NOT NULL,
	"summary" text NOT NULL,
	"risk" jsonb,
	"status" text NOT NULL,
	"deadline" timestamp with time zone NOT NULL,
	"decided_by" text,
	"statement" text,
	"decided_at" timestamp with time zone,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "instances" ADD COLUMN "served_by" text;--> statement-breakpoint
CREATE INDEX "signoffs_status_created" ON "signoffs" USING btree ("status","created_at");--> statement-breakpoint
CREATE INDEX "signoffs_workflow" ON "signoffs" USING btree ("workflow_id");