import { createCipheriv, createDecipheriv, createSecretKey, randomBytes, type KeyObject } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';

/*
 * Streaming authenticated encryption of backup archives: the STREAM
 * construction (Hoang, Reyhanitabar, Rogaway, Vizár 2015) over AES-256-GCM,
 * laid out like Tink's streaming AEAD. An archive is cut into fixed-size
 * chunks, each sealed on its own, so any length streams through in bounded
 * memory and every chunk is verified before a byte of it is released.
 *
 *   header (20 bytes, also the AAD of every chunk):
 *     0..7    magic "BCDRENC1"
 *     8       version (1)
 *     9..12   plaintext chunk size, u32 big-endian
 *     13..19  nonce prefix, 7 random bytes
 *   records, one per chunk:
 *     AES-256-GCM ciphertext of the chunk (chunk size bytes; the last one
 *     shorter, possibly empty) followed by its 16-byte tag
 *   nonce of chunk i (12 bytes): prefix (7) | i as u32 big-endian (4) | final flag (1: 0x01 last chunk, else 0x00)
 *
 * The counter in the nonce makes a reordered, dropped or duplicated chunk fail
 * authentication; the final flag makes truncation detectable, also exactly at
 * a chunk boundary, because only the last chunk is sealed as final and the
 * encryptor always writes one (empty when the length is a multiple of the
 * chunk size). Every non-final record is exactly chunk size + 16 bytes and the
 * final one is shorter, so the decryptor knows where records end without
 * looking ahead. The header as AAD binds chunk size and version to the key.
 */

/** The name of this format for manifests (what `encryptStream` writes by default). The header carries the real chunk size. */
export const ENVELOPE_ALG = 'AES-256-GCM-STREAM-1MiB';

/** The first bytes of every envelope; `isEnvelope` looks for them. */
export const ENVELOPE_MAGIC = Buffer.from('BCDRENC1', 'latin1');
/** The format version this module writes and reads. */
export const ENVELOPE_VERSION = 1;
/** Plaintext bytes per chunk unless told otherwise: big enough that per-chunk costs vanish, small enough to hold one in memory. */
export const DEFAULT_CHUNK_BYTES = 1024 * 1024;
/** Largest chunk size accepted: a tampered header must not make the decryptor buffer without bound. */
export const MAX_CHUNK_BYTES = 16 * 1024 * 1024;
/** Header length: magic, version, chunk size, nonce prefix. */
export const ENVELOPE_HEADER_BYTES = 8 + 1 + 4 + 7;

const PREFIX_OFFSET = 13;
const PREFIX_BYTES = 7;
const TAG_BYTES = 16;
const KEY_BYTES = 32;
const MAX_CHUNKS = 2 ** 32;
// Pieces smaller than this are copied together instead of being encrypted one native call at a time.
const SMALL_PIECE = 16 * 1024;
const STAGE_BYTES = 64 * 1024;

/** Why an envelope could not be read. */
export type EnvelopeErrorKind = 'format' | 'truncated' | 'authentication';

/**
 * An envelope is not what it should be: not an envelope, cut short, or a
 * chunk that does not authenticate (tampered, reordered, wrong data key).
 * Decryption stops before releasing any byte of the failing chunk; bytes of
 * earlier chunks already emitted were authentic, but the archive as a whole
 * is not, so whoever consumed them must abandon the restore.
 */
export class EnvelopeError extends Error {
  constructor(readonly kind: EnvelopeErrorKind, message: string, readonly chunk?: number) {
    super(message);
  }
}

/** True when the bytes begin with the envelope magic: tells an encrypted archive from a plain one. */
export function isEnvelope(firstBytes: Buffer): boolean {
  return firstBytes.length >= ENVELOPE_MAGIC.length && firstBytes.subarray(0, ENVELOPE_MAGIC.length).equals(ENVELOPE_MAGIC);
}

const secretKey = (dataKey: Buffer): KeyObject => {
  if (!Buffer.isBuffer(dataKey) || dataKey.length !== KEY_BYTES) throw new TypeError(`the data key must be exactly ${KEY_BYTES} bytes`);
  // A KeyObject holds its own copy: the caller may zero its buffer once the stream exists.
  return createSecretKey(dataKey);
};

const nonceOf = (prefix: Buffer, counter: number, final: boolean): Buffer => {
  const nonce = Buffer.allocUnsafe(12);
  prefix.copy(nonce, 0, 0, PREFIX_BYTES);
  nonce.writeUInt32BE(counter, PREFIX_BYTES);
  nonce[11] = final ? 1 : 0;
  return nonce;
};

/**
 * The bytes of one chunk or record gathered so far, kept as references to the
 * input (no copy) except for small pieces, which are packed into a staging
 * buffer so a trickle of tiny writes neither costs a native call each nor
 * piles up thousands of Buffer objects.
 */
class Pending {
  pieces: Buffer[] = [];
  bytes = 0;
  private stage: Buffer | null = null;
  private staged = 0;

  add(part: Buffer): void {
    this.bytes += part.length;
    if (part.length >= SMALL_PIECE) {
      this.flushStage();
      this.pieces.push(part);
      return;
    }
    if (this.stage && this.staged + part.length > this.stage.length) this.flushStage();
    this.stage ??= Buffer.allocUnsafe(STAGE_BYTES);
    part.copy(this.stage, this.staged);
    this.staged += part.length;
  }

  /** The gathered pieces, in order, and a fresh start. */
  take(): Buffer[] {
    this.flushStage();
    const pieces = this.pieces;
    this.pieces = [];
    this.bytes = 0;
    return pieces;
  }

  private flushStage(): void {
    if (this.stage && this.staged > 0) this.pieces.push(this.stage.subarray(0, this.staged));
    this.stage = null;
    this.staged = 0;
  }
}

class EncryptStream extends Transform {
  private readonly key: KeyObject;
  private readonly header: Buffer;
  private readonly chunkBytes: number;
  private readonly pending = new Pending();
  private counter = 0;

  constructor(dataKey: Buffer, chunkBytes: number) {
    super();
    this.key = secretKey(dataKey);
    this.chunkBytes = chunkBytes;
    this.header = Buffer.alloc(ENVELOPE_HEADER_BYTES);
    ENVELOPE_MAGIC.copy(this.header, 0);
    this.header[8] = ENVELOPE_VERSION;
    this.header.writeUInt32BE(chunkBytes, 9);
    // A random prefix keeps nonces distinct even if a data key were ever reused for a second archive.
    randomBytes(PREFIX_BYTES).copy(this.header, PREFIX_OFFSET);
    this.push(this.header);
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    try {
      let rest = chunk;
      while (rest.length > 0) {
        const take = Math.min(this.chunkBytes - this.pending.bytes, rest.length);
        this.pending.add(take === rest.length ? rest : rest.subarray(0, take));
        rest = rest.subarray(take);
        // A full chunk is never the last one (the last is always shorter), so it is sealed at once.
        if (this.pending.bytes === this.chunkBytes) this.seal(false);
      }
      cb();
    } catch (err) {
      cb(err as Error);
    }
  }

  override _flush(cb: TransformCallback): void {
    try {
      this.seal(true);
      cb();
    } catch (err) {
      cb(err as Error);
    }
  }

  private seal(final: boolean): void {
    if (this.counter >= MAX_CHUNKS) throw new EnvelopeError('format', `archive too long: more than ${MAX_CHUNKS} chunks`);
    const cipher = createCipheriv('aes-256-gcm', this.key, nonceOf(this.header.subarray(PREFIX_OFFSET), this.counter, final), { authTagLength: TAG_BYTES });
    cipher.setAAD(this.header);
    for (const piece of this.pending.take()) this.push(cipher.update(piece));
    cipher.final();
    this.push(cipher.getAuthTag());
    this.counter++;
  }
}

/** The last `n` bytes spread over `pieces`, copied into one buffer. */
const tailOf = (pieces: Buffer[], total: number, n: number): Buffer => {
  const out = Buffer.allocUnsafe(n);
  let at = 0;
  let offset = 0;
  for (const p of pieces) {
    const start = Math.max(total - n - offset, 0);
    if (start < p.length) at += p.copy(out, at, start);
    offset += p.length;
  }
  return out;
};

class DecryptStream extends Transform {
  private readonly key: KeyObject;
  private header: Buffer = Buffer.alloc(0);
  private recordBytes = 0;
  private readonly pending = new Pending();
  private counter = 0;

  constructor(dataKey: Buffer) {
    super();
    this.key = secretKey(dataKey);
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    try {
      let rest = chunk;
      if (this.recordBytes === 0) rest = this.readHeader(rest);
      while (rest.length > 0) {
        const take = Math.min(this.recordBytes - this.pending.bytes, rest.length);
        this.pending.add(take === rest.length ? rest : rest.subarray(0, take));
        rest = rest.subarray(take);
        // Only a non-final record is this long, so it can be opened without waiting for the next byte.
        if (this.pending.bytes === this.recordBytes) this.open(false);
      }
      cb();
    } catch (err) {
      cb(err as Error);
    }
  }

  override _flush(cb: TransformCallback): void {
    try {
      if (this.recordBytes === 0 || this.pending.bytes < TAG_BYTES) throw new EnvelopeError('truncated', 'archive is truncated', this.counter);
      this.open(true);
      cb();
    } catch (err) {
      cb(err as Error);
    }
  }

  /** Gathers and checks the header; returns what follows it. */
  private readHeader(chunk: Buffer): Buffer {
    const need = ENVELOPE_HEADER_BYTES - this.header.length;
    this.header = Buffer.concat([this.header, chunk.subarray(0, need)]);
    const magicSeen = Math.min(this.header.length, ENVELOPE_MAGIC.length);
    // Checked as soon as the bytes are there, so a plain archive fails fast rather than as "truncated".
    if (!this.header.subarray(0, magicSeen).equals(ENVELOPE_MAGIC.subarray(0, magicSeen))) throw new EnvelopeError('format', 'not an encrypted BCDR archive (bad magic)');
    if (this.header.length < ENVELOPE_HEADER_BYTES) return Buffer.alloc(0);
    const version = this.header[8];
    if (version !== ENVELOPE_VERSION) throw new EnvelopeError('format', `unsupported envelope version ${version}`);
    const chunkBytes = this.header.readUInt32BE(9);
    if (chunkBytes < 1 || chunkBytes > MAX_CHUNK_BYTES) throw new EnvelopeError('format', `invalid chunk size ${chunkBytes} in the envelope header`);
    this.recordBytes = chunkBytes + TAG_BYTES;
    return chunk.subarray(need);
  }

  private open(final: boolean): void {
    if (this.counter >= MAX_CHUNKS) throw new EnvelopeError('authentication', `chunk ${this.counter} failed authentication (beyond the last possible chunk)`, this.counter);
    const total = this.pending.bytes;
    const pieces = this.pending.take();
    const ctBytes = total - TAG_BYTES;
    const decipher = createDecipheriv('aes-256-gcm', this.key, nonceOf(this.header.subarray(PREFIX_OFFSET), this.counter, final), { authTagLength: TAG_BYTES });
    decipher.setAAD(this.header);
    decipher.setAuthTag(tailOf(pieces, total, TAG_BYTES));
    // Held back until the tag verifies: unauthenticated plaintext must never leave.
    const out: Buffer[] = [];
    let done = 0;
    for (const p of pieces) {
      if (done >= ctBytes) break;
      const use = Math.min(p.length, ctBytes - done);
      out.push(decipher.update(use === p.length ? p : p.subarray(0, use)));
      done += use;
    }
    try {
      decipher.final();
    } catch {
      throw new EnvelopeError('authentication', `chunk ${this.counter} failed authentication (wrong data key, or the archive was altered, reordered or cut)`, this.counter);
    }
    for (const b of out) if (b.length > 0) this.push(b);
    this.counter++;
  }
}

/** Options of encryptStream. */
export interface EncryptOptions {
  /** Plaintext bytes per chunk, 1 to MAX_CHUNK_BYTES; default DEFAULT_CHUNK_BYTES. Smaller only for tests. */
  chunkBytes?: number;
}

/**
 * A Transform that encrypts an archive of any length under `dataKey` (32
 * bytes, fresh per archive) into the envelope format above. Memory stays
 * within one chunk. Input buffers are referenced until their chunk is sealed,
 * so a writer must not reuse a buffer after writing it (as with any stream).
 */
export function encryptStream(dataKey: Buffer, opts: EncryptOptions = {}): Transform {
  const chunkBytes = opts.chunkBytes ?? DEFAULT_CHUNK_BYTES;
  if (!Number.isInteger(chunkBytes) || chunkBytes < 1 || chunkBytes > MAX_CHUNK_BYTES) throw new RangeError(`chunkBytes must be an integer from 1 to ${MAX_CHUNK_BYTES}`);
  return new EncryptStream(dataKey, chunkBytes);
}

/**
 * A Transform that decrypts an envelope, chunk by chunk, emitting each chunk
 * only after it authenticates. Fails with EnvelopeError on anything wrong
 * (including truncation at a chunk boundary); it never ends cleanly with
 * short output.
 */
export function decryptStream(dataKey: Buffer): Transform {
  return new DecryptStream(dataKey);
}
