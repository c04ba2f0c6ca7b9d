import { randomBytes } from 'node:crypto';
import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import {
  KeyMismatchError,
  KeyUnavailableError,
  KeyringError,
  StaticKeyring,
  backupKeysSchema,
  keyringFromEnv,
  newDataKey,
  rewrap,
  type WrappedKey,
} from '../../lib/storage/keyring.js';

const k1 = randomBytes(32);
const k2 = randomBytes(32);
const env = (keys: Record<string, string>, active?: string) => ({ BACKUP_KEYS: JSON.stringify(keys), ...(active === undefined ? {} : { BACKUP_KEY_ACTIVE: active }) });

/** Every spelling of a key that could leak into text. */
const spellings = (key: Buffer) => [key.toString('base64'), key.toString('base64url'), key.toString('hex'), key.toString('hex').toUpperCase(), key.toString('base64').slice(0, 20)];
const expectNoKeys = (text: string, keys: Buffer[]) => {
  for (const key of keys) for (const s of spellings(key)) expect(text).not.toContain(s);
  // Buffer's own inspect form, `<Buffer 1a 2b ...>`
  for (const key of keys) expect(text).not.toContain(inspect(key).slice(8, 40));
};

/** The error `f` throws (or rejects with). */
async function failure(f: () => unknown): Promise<Error> {
  try {
    await f();
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected a failure');
}

describe('keyring from the environment', () => {
  it('parses BACKUP_KEYS and BACKUP_KEY_ACTIVE', async () => {
    const ring = keyringFromEnv(env({ 'kek-2024': k1.toString('base64'), 'kek-2025.b_1': k2.toString('base64') }, 'kek-2025.b_1'));
    expect(ring.activeKeyId).toBe('kek-2025.b_1');
    expect(ring.ids().sort()).toEqual(['kek-2024', 'kek-2025.b_1']);
    expect(ring.has('kek-2024')).toBe(true);
    expect(ring.has('nope')).toBe(false);
    const w = await ring.wrap(newDataKey());
    expect(w.keyId).toBe('kek-2025.b_1');
    // the keys the environment named are the keys used: a ring built directly from them unwraps it
    expect((await new StaticKeyring(new Map([['kek-2025.b_1', k2]]), 'kek-2025.b_1').unwrap(w)).length).toBe(32);
  });

  it('accepts unpadded base64 and gives the schema output as a map of buffers', () => {
    const parsed = backupKeysSchema.parse(env({ a: k1.toString('base64').replace(/=+$/, '') }, 'a'));
    expect(parsed.activeKeyId).toBe('a');
    expect(parsed.keys.get('a')?.equals(k1)).toBe(true);
  });

  it('is empty without either setting', async () => {
    const ring = keyringFromEnv({});
    expect(ring.activeKeyId).toBeNull();
    expect(ring.ids()).toEqual([]);
    const err = await failure(() => ring.wrap(newDataKey()));
    expect(err).toBeInstanceOf(KeyUnavailableError);
    expect(err.message).toMatch(/empty/);
  });

  const bad: [string, Record<string, string | undefined>, RegExp][] = [
    ['bad JSON', { BACKUP_KEYS: `{"k1": "${k1.toString('base64')}"`, BACKUP_KEY_ACTIVE: 'k1' }, /BACKUP_KEYS: .*not valid JSON/],
    ['a JSON array', { BACKUP_KEYS: JSON.stringify([k1.toString('base64')]), BACKUP_KEY_ACTIVE: 'k1' }, /BACKUP_KEYS: must be a JSON object/],
    ['a short key', env({ k1: k1.subarray(0, 16).toString('base64') }, 'k1'), /BACKUP_KEYS\.k1: each key must be base64 of exactly 32 bytes/],
    ['a long key', env({ k1: Buffer.concat([k1, k2]).toString('base64') }, 'k1'), /BACKUP_KEYS\.k1: each key must be base64 of exactly 32 bytes/],
    ['hex instead of base64', env({ k1: k1.toString('hex') }, 'k1'), /BACKUP_KEYS\.k1: .*32 bytes/],
    ['junk in the base64', env({ k1: `${k1.toString('base64').slice(0, 40)}!!!=` }, 'k1'), /BACKUP_KEYS\.k1: .*32 bytes/],
    ['a key that is not a string', { BACKUP_KEYS: JSON.stringify({ k1: [...k1] }), BACKUP_KEY_ACTIVE: 'k1' }, /BACKUP_KEYS\.k1/],
    ['a bad key id', env({ '../etc': k1.toString('base64') }, '../etc'), /BACKUP_KEYS.*key ids must be/],
    ['no keys', env({}, 'k1'), /BACKUP_KEYS: must hold at least one key/],
    ['the active id missing from the keys', env({ k1: k1.toString('base64'), k2: k2.toString('base64') }, 'k3'), /BACKUP_KEY_ACTIVE: must name one of the keys in BACKUP_KEYS \(k1, k2\)/],
    ['no active id', env({ k1: k1.toString('base64') }), /BACKUP_KEY_ACTIVE: must name the key/],
    ['an active id without keys', { BACKUP_KEY_ACTIVE: 'k1' }, /BACKUP_KEYS: must be set/],
  ];
  for (const [name, e, msg] of bad) {
    it(`rejects ${name}, without key material in the error`, async () => {
      const err = await failure(() => keyringFromEnv(e));
      expect(err).toBeInstanceOf(KeyringError);
      expect(err.message).toMatch(msg);
      expectNoKeys(err.message, [k1, k2]);
      expectNoKeys(inspect(err), [k1, k2]);
      // the schema alone (as the configuration uses it) says the same, also without key material
      const parsed = backupKeysSchema.safeParse(e);
      expect(parsed.success).toBe(false);
      expectNoKeys(JSON.stringify(parsed.error?.issues), [k1, k2]);
      expectNoKeys(String(parsed.error), [k1, k2]);
    });
  }

  it('reports every problem at once', async () => {
    const err = await failure(() => keyringFromEnv(env({ k1: 'short', k2: 'alsoshort' }, 'k1')));
    expect(err.message).toMatch(/BACKUP_KEYS\.k1/);
    expect(err.message).toMatch(/BACKUP_KEYS\.k2/);
  });
});

describe('wrapping data keys', () => {
  const ring = new StaticKeyring(
    new Map([
      ['k1', k1],
      ['k2', k2],
    ]),
    'k1',
  );

  it('wraps under the active key and unwraps', async () => {
    const dk = newDataKey();
    expect(dk.length).toBe(32);
    expect(newDataKey().equals(dk)).toBe(false);
    const w = await ring.wrap(dk);
    expect(w).toMatchObject({ alg: 'A256GCM', keyId: 'k1' });
    expect(Buffer.from(w.wrapped, 'base64').length).toBe(12 + 32 + 16);
    expect(w.wrapped).not.toContain(dk.toString('base64').slice(0, 12));
    expect((await ring.unwrap(w)).equals(dk)).toBe(true);
    // survives a round trip through a manifest
    expect((await ring.unwrap(JSON.parse(JSON.stringify(w)) as WrappedKey)).equals(dk)).toBe(true);
    // a fresh IV each time
    expect((await ring.wrap(dk)).wrapped).not.toBe(w.wrapped);
  });

  it('wraps under a named key', async () => {
    const dk = newDataKey();
    const w = await ring.wrap(dk, 'k2');
    expect(w.keyId).toBe('k2');
    expect((await ring.unwrap(w)).equals(dk)).toBe(true);
  });

  it('refuses to wrap something that is not a 32-byte data key, or under a key it lacks', async () => {
    expect(await failure(() => ring.wrap(randomBytes(16)))).toBeInstanceOf(KeyringError);
    const err = await failure(() => ring.wrap(newDataKey(), 'k9'));
    expect(err).toBeInstanceOf(KeyUnavailableError);
    expect((err as KeyUnavailableError).keyId).toBe('k9');
  });

  it('names the id when the key behind it is different (KeyMismatchError)', async () => {
    const w = await ring.wrap(newDataKey());
    const other = new StaticKeyring(new Map([['k1', randomBytes(32)]]), 'k1');
    const err = await failure(() => other.unwrap(w));
    expect(err).toBeInstanceOf(KeyMismatchError);
    expect((err as KeyMismatchError).keyId).toBe('k1');
    expect(err.message).toContain('"k1"');
  });

  it('rejects a tampered or relabelled wrapped key (KeyMismatchError)', async () => {
    const w = await ring.wrap(newDataKey());
    const raw = Buffer.from(w.wrapped, 'base64');
    for (const at of [0, 11, 12, 40, raw.length - 1]) {
      const bad = Buffer.from(raw);
      bad[at] = (bad[at] ?? 0) ^ 0x80;
      const err = await failure(() => ring.unwrap({ ...w, wrapped: bad.toString('base64') }));
      expect(err, `byte ${at}`).toBeInstanceOf(KeyMismatchError);
    }
    expect(await failure(() => ring.unwrap({ ...w, wrapped: raw.subarray(0, 50).toString('base64') }))).toBeInstanceOf(KeyMismatchError);
    expect(await failure(() => ring.unwrap({ ...w, wrapped: '' }))).toBeInstanceOf(KeyMismatchError);
    // The key id is AAD: the same KEK under another id does not accept it.
    const twin = new StaticKeyring(
      new Map([
        ['k1', k1],
        ['k1-copy', k1],
      ]),
      'k1',
    );
    const moved = await failure(() => twin.unwrap({ ...w, keyId: 'k1-copy' }));
    expect(moved).toBeInstanceOf(KeyMismatchError);
    expect((moved as KeyMismatchError).keyId).toBe('k1-copy');
    expect(await failure(() => ring.unwrap({ ...w, alg: 'A128KW' as 'A256GCM' }))).toBeInstanceOf(KeyringError);
  });

  it('names the id it does not hold (KeyUnavailableError)', async () => {
    const w = await ring.wrap(newDataKey());
    const err = await failure(() => new StaticKeyring(new Map([['k2', k2]]), 'k2').unwrap(w));
    expect(err).toBeInstanceOf(KeyUnavailableError);
    expect((err as KeyUnavailableError).keyId).toBe('k1');
    expect(err.message).toContain('"k1"');
  });

  it('rewraps under a new key, which alone then unwraps it', async () => {
    const dk = newDataKey();
    const old = await ring.wrap(dk, 'k1');
    const rotated = await rewrap(ring, old, 'k2');
    expect(rotated.keyId).toBe('k2');
    const onlyNew = new StaticKeyring(new Map([['k2', k2]]), 'k2');
    expect((await onlyNew.unwrap(rotated)).equals(dk)).toBe(true);
    expect(await failure(() => onlyNew.unwrap(old))).toBeInstanceOf(KeyUnavailableError);
    expect(await failure(() => rewrap(ring, old, 'k9'))).toBeInstanceOf(KeyUnavailableError);
  });

  it('copies the keys it is given', async () => {
    const mine = Buffer.from(k1);
    const r = new StaticKeyring(new Map([['k1', mine]]), 'k1');
    const w = await r.wrap(newDataKey());
    mine.fill(0);
    await expect(r.unwrap(w)).resolves.toHaveLength(32);
  });

  it('refuses an inconsistent construction', () => {
    expect(() => new StaticKeyring(new Map([['k1', k1]]), 'k2')).toThrow(KeyUnavailableError);
    expect(() => new StaticKeyring(new Map([['k1', k1]]), null)).toThrow(KeyringError);
    expect(() => new StaticKeyring(new Map([['k1', k1.subarray(0, 31)]]), 'k1')).toThrow(/exactly 32 bytes/);
    expect(() => new StaticKeyring(new Map([['bad id', k1]]), 'bad id')).toThrow(/invalid backup key id/);
  });

  it('shows ids only: JSON, inspect, toString and string templates carry no key bytes', () => {
    const fromEnv = keyringFromEnv(env({ k1: k1.toString('base64'), k2: k2.toString('base64') }, 'k1'));
    for (const r of [ring, fromEnv]) {
      const texts = [JSON.stringify(r), JSON.stringify({ nested: { r } }), inspect(r), inspect({ nested: { r } }, { depth: 10, showHidden: true }), String(r), `${r}`, r.toString()];
      for (const text of texts) {
        expect(text).toContain('k1');
        expect(text).toContain('k2');
        expectNoKeys(text, [k1, k2]);
      }
      expect(JSON.parse(JSON.stringify(r))).toEqual({ activeKeyId: 'k1', ids: ['k1', 'k2'] });
      expect(Object.keys(r)).toEqual(['activeKeyId']);
    }
  });
});
