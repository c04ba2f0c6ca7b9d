# syntax=docker/dockerfile:1
#
# One image for every process of the BCDR runbook engine:
#   node dist/api/main.js      API (default; listens on API_PORT)
#   node dist/worker/main.js   Temporal worker (scale out by running more of them)
#   node dist/db/migrate.js    applies the catalog's drizzle migrations and exits
#
# Debian trixie rather than bookworm: pg_dump refuses to dump a server newer
# than itself, bookworm's `postgresql-client` is 15 while the region clusters
# run PostgreSQL 16, and trixie's is 17 (it dumps 9.2 through 17). That keeps
# the client on Debian's own packages, with no PGDG repository.
ARG NODE_IMAGE=node:20-trixie-slim

# ---- build: install every dependency, compile TypeScript, drop dev dependencies
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN --mount=type=cache,target=/root/.npm npm ci --no-audit --no-fund
COPY . .
# rootDir is ".", so worker/main.ts -> dist/worker/main.js and so on.
RUN npx tsc -p tsconfig.json
RUN npm prune --omit=dev --no-audit --no-fund

# ---- runtime
FROM ${NODE_IMAGE} AS runtime
# pg_dump must be at least the region clusters' major (postgres:16 in docker-compose.yml).
ARG PG_CLIENT_MIN_MAJOR=16
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-client ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* \
 && pg_dump --version && pg_restore --version \
 && test "$(pg_dump --version | sed -E 's/^[^0-9]*([0-9]+).*/\1/')" -ge "$PG_CLIENT_MIN_MAJOR"

ENV NODE_ENV=production
WORKDIR /app
# The whole tree stays: dist/ to run, db/migrations/ for the migrator, and the
# workflows/ sources the worker bundles at start. Owned by root, so the app
# (running as `node`) cannot rewrite its own code.
COPY --from=build /app /app

# Mount point of the shared blob store. A new named volume takes this
# directory's owner, so `node` can write backups into it.
RUN mkdir -p /data/blobs && chown node:node /data/blobs

USER node
EXPOSE 8080
# tini reaps children (pg_dump, pg_restore) and forwards SIGTERM to node.
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["node", "dist/api/main.js"]
