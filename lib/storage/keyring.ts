import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { inspect } from 'node:util';
import { z } from 'zod';

/**
 * A data key sealed under a key-encryption key (KEK), as stored in a backup
 * manifest. Only the KEK's id travels with it, so the archive can be restored
 * by any worker holding that KEK and re-sealed under a new one without
 * touching the archive.
 */
export interface WrappedKey {
  /** How the data key is sealed: AES-256-GCM under the KEK, the key id as AAD. */
  alg: 'A256GCM';
  /** The KEK that sealed it. */
  keyId: string;
  /** base64 of iv (12) | ciphertext | tag (16). */
  wrapped: string;
}

/**
 * Where KEKs live and what may be done with them: seal and unseal data keys,
 * never hand out a KEK. Shaped so a KMS (which never releases its keys
 * either) can implement it later; StaticKeyring holds keys from the
 * environment.
 */
export interface Keyring {
  /** The key id new backups are encrypted under, or null when the keyring is empty. */
  readonly activeKeyId: string | null;
  /** True when the keyring can unwrap keys sealed under `keyId`. */
  has(keyId: string): boolean;
  /** Every key id held, so operators can see which archives are restorable. */
  ids(): string[];
  /** Seals a data key under `keyId` (default: the active key). */
  wrap(dataKey: Buffer, keyId?: string): Promise<WrappedKey>;
  /**
   * Unseals a data key. Rejects with KeyUnavailableError when the key id is
   * not held and KeyMismatchError when the wrapped key does not authenticate
   * under it (wrong key behind the id, tampered, or moved to another id).
   */
  unwrap(w: WrappedKey): Promise<Buffer>;
}

/** Base of every keyring failure, so callers can tell key trouble from I/O trouble. Messages never carry key material. */
export class KeyringError extends Error {}

/** The keyring does not hold the key a backup was sealed under (rotated out, or a worker missing a key). */
export class KeyUnavailableError extends KeyringError {
  constructor(readonly keyId: string | null, detail?: string) {
    super(detail ?? `backup key ${JSON.stringify(keyId)} is not in the keyring`);
  }
}

/** A wrapped key did not authenticate under the KEK its id names: a different key behind the same id, or tampering. */
export class KeyMismatchError extends KeyringError {
  constructor(readonly keyId: string) {
    super(`wrapped data key does not authenticate under backup key ${JSON.stringify(keyId)} (wrong key for this id, or the wrapped key was altered)`);
  }
}

/** Bytes of a KEK and of a data key: AES-256. */
export const KEY_BYTES = 32;
const IV_BYTES = 12;
const TAG_BYTES = 16;

/** Key ids appear in manifests, paths and logs: keep them short and shell/URL safe. */
export const KEY_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** A fresh random data key: one per archive, so a leaked data key exposes one backup only. */
export function newDataKey(): Buffer {
  return randomBytes(KEY_BYTES);
}

const checkKeyId = (keyId: string) => {
  if (!KEY_ID_RE.test(keyId)) throw new KeyringError(`invalid backup key id ${JSON.stringify(keyId.slice(0, 80))}`);
};

/**
 * A keyring over keys held in memory (from the environment). Keys are copied
 * in and kept in a private field; `toJSON`, `toString` and `util.inspect`
 * show ids only, so a keyring logged by accident leaks nothing.
 */
export class StaticKeyring implements Keyring {
  readonly #keys = new Map<string, Buffer>();
  readonly activeKeyId: string | null;

  constructor(keys: Map<string, Buffer>, activeKeyId: string | null) {
    for (const [id, key] of keys) {
      checkKeyId(id);
      if (!Buffer.isBuffer(key) || key.length !== KEY_BYTES) throw new KeyringError(`backup key ${JSON.stringify(id)} must be exactly ${KEY_BYTES} bytes`);
      // A copy, so the caller zeroing or reusing its buffer cannot change ours.
      this.#keys.set(id, Buffer.from(key));
    }
    if (activeKeyId !== null && !this.#keys.has(activeKeyId)) throw new KeyUnavailableError(activeKeyId, `active backup key ${JSON.stringify(activeKeyId)} is not in the keyring`);
    if (activeKeyId === null && this.#keys.size > 0) throw new KeyringError('a keyring with keys must name its active key');
    this.activeKeyId = activeKeyId;
  }

  has(keyId: string): boolean {
    return this.#keys.has(keyId);
  }

  ids(): string[] {
    return [...this.#keys.keys()];
  }

  wrap(dataKey: Buffer, keyId?: string): Promise<WrappedKey> {
    return Promise.resolve().then(() => {
      const id = keyId ?? this.activeKeyId;
      if (id === null) throw new KeyUnavailableError(null, 'the keyring is empty: there is no active backup key to encrypt under');
      const kek = this.#keys.get(id);
      if (!kek) throw new KeyUnavailableError(id);
      if (!Buffer.isBuffer(dataKey) || dataKey.length !== KEY_BYTES) throw new KeyringError(`a data key must be exactly ${KEY_BYTES} bytes`);
      const iv = randomBytes(IV_BYTES);
      const cipher = createCipheriv('aes-256-gcm', kek, iv, { authTagLength: TAG_BYTES });
      // The id as AAD: a wrapped key relabelled with another id no longer authenticates.
      cipher.setAAD(Buffer.from(id, 'utf8'));
      const ct = Buffer.concat([cipher.update(dataKey), cipher.final()]);
      return { alg: 'A256GCM', keyId: id, wrapped: Buffer.concat([iv, ct, cipher.getAuthTag()]).toString('base64') };
    });
  }

  unwrap(w: WrappedKey): Promise<Buffer> {
    return Promise.resolve().then(() => {
      if (w?.alg !== 'A256GCM') throw new KeyringError(`unsupported key wrapping ${JSON.stringify(String(w?.alg).slice(0, 40))}`);
      const kek = this.#keys.get(w.keyId);
      if (!kek) throw new KeyUnavailableError(w.keyId);
      const raw = typeof w.wrapped === 'string' ? Buffer.from(w.wrapped, 'base64') : Buffer.alloc(0);
      if (raw.length !== IV_BYTES + KEY_BYTES + TAG_BYTES) throw new KeyMismatchError(w.keyId);
      const decipher = createDecipheriv('aes-256-gcm', kek, raw.subarray(0, IV_BYTES), { authTagLength: TAG_BYTES });
      decipher.setAAD(Buffer.from(w.keyId, 'utf8'));
      decipher.setAuthTag(raw.subarray(raw.length - TAG_BYTES));
      const pt = decipher.update(raw.subarray(IV_BYTES, raw.length - TAG_BYTES));
      try {
        decipher.final();
      } catch {
        pt.fill(0);
        throw new KeyMismatchError(w.keyId);
      }
      return pt;
    });
  }

  /** Ids only: keys must never reach logs or API responses. */
  toJSON(): { activeKeyId: string | null; ids: string[] } {
    return { activeKeyId: this.activeKeyId, ids: this.ids() };
  }

  toString(): string {
    return `StaticKeyring(active=${this.activeKeyId ?? 'none'}, ids=[${this.ids().join(', ')}])`;
  }

  [inspect.custom](): string {
    return this.toString();
  }
}

/**
 * Re-seals a data key under another KEK, for rotation: the archive stays as
 * it is, only its manifest's wrapped key changes. The plaintext data key is
 * zeroed before returning.
 */
export async function rewrap(keyring: Keyring, w: WrappedKey, toKeyId: string): Promise<WrappedKey> {
  const dataKey = await keyring.unwrap(w);
  try {
    return await keyring.wrap(dataKey, toKeyId);
  } finally {
    dataKey.fill(0);
  }
}

const BASE64_32 = /^[A-Za-z0-9+/]{43}=?$/;
// Canonical base64 only (Buffer.from is lenient and would silently drop stray characters or bits).
const isBase64Of32Bytes = (v: string) => BASE64_32.test(v) && Buffer.from(v, 'base64').toString('base64') === v.padEnd(44, '=');

/**
 * BACKUP_KEYS and BACKUP_KEY_ACTIVE from the environment: BACKUP_KEYS is a
 * JSON object of key id to base64 of a 32-byte KEK; BACKUP_KEY_ACTIVE names
 * the one new backups are sealed under (older ids stay to restore and
 * rewrap). Parses to `{ keys, activeKeyId }`. Issue messages name env vars
 * and key ids, never key material (JSON.parse's own message quotes the input,
 * so it is not passed on).
 */
export const backupKeysSchema = z
  .object({
    BACKUP_KEYS: z
      .string({ error: 'must be set to a JSON object of key id to base64 of a 32-byte key' })
      .transform((raw, ctx) => {
        try {
          return JSON.parse(raw) as unknown;
        } catch {
          ctx.addIssue({ code: 'custom', message: 'must be a JSON object of key id to base64 of a 32-byte key (not valid JSON)' });
          return z.NEVER;
        }
      })
      .pipe(
        z
          .record(
            z.string().regex(KEY_ID_RE),
            z
              .string({ error: 'each key must be a base64 string of exactly 32 bytes' })
              .refine(isBase64Of32Bytes, { error: 'each key must be base64 of exactly 32 bytes' }),
            {
              // A bad id is reported on the record itself; its nested issue would not reach the message.
              error: (iss) => (iss.code === 'invalid_key' ? 'key ids must be 1-64 letters, digits, ".", "_" or "-", starting with a letter or digit' : 'must be a JSON object of key id to base64 of a 32-byte key'),
            },
          )
          .refine((r) => Object.keys(r).length > 0, { error: 'must hold at least one key' }),
      ),
    BACKUP_KEY_ACTIVE: z.string({ error: 'must name the key new backups are encrypted under' }),
  })
  .superRefine((v, ctx) => {
    if (!Object.hasOwn(v.BACKUP_KEYS, v.BACKUP_KEY_ACTIVE)) {
      ctx.addIssue({ code: 'custom', path: ['BACKUP_KEY_ACTIVE'], message: `must name one of the keys in BACKUP_KEYS (${Object.keys(v.BACKUP_KEYS).join(', ')})` });
    }
  })
  .transform((v) => ({
    keys: new Map(Object.entries(v.BACKUP_KEYS).map(([id, b64]) => [id, Buffer.from(b64, 'base64')] as const)),
    activeKeyId: v.BACKUP_KEY_ACTIVE,
  }));

/**
 * The keyring the environment describes. With neither BACKUP_KEYS nor
 * BACKUP_KEY_ACTIVE set it is empty (regions that do not encrypt); otherwise
 * both must be valid, and a KeyringError lists every problem without key
 * material.
 */
export function keyringFromEnv(env: NodeJS.ProcessEnv): Keyring {
  if (!env.BACKUP_KEYS && !env.BACKUP_KEY_ACTIVE) return new StaticKeyring(new Map(), null);
  const parsed = backupKeysSchema.safeParse({ BACKUP_KEYS: env.BACKUP_KEYS, BACKUP_KEY_ACTIVE: env.BACKUP_KEY_ACTIVE });
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${i.path.join('.') || 'BACKUP_KEYS'}: ${i.message}`);
    throw new KeyringError(`Invalid backup keys:\n${lines.join('\n')}`);
  }
  try {
    return new StaticKeyring(parsed.data.keys, parsed.data.activeKeyId);
  } finally {
    for (const k of parsed.data.keys.values()) k.fill(0);
  }
}
