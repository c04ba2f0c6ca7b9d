import { createHash, randomBytes } from 'node:crypto';
import { Readable, Writable, type Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import {
  DEFAULT_CHUNK_BYTES,
  ENVELOPE_ALG,
  ENVELOPE_HEADER_BYTES,
  EnvelopeError,
  decryptStream,
  encryptStream,
  isEnvelope,
} from '../../lib/storage/envelope.js';

const TAG = 16;
const key = randomBytes(32);

/** Byte equality; vitest's toEqual walks Buffers element by element, far too slow for MiBs. */
const same = (got: Buffer, want: Buffer, what = '') => {
  expect(got.length, `${what} length`).toBe(want.length);
  expect(got.equals(want), `${what} bytes`).toBe(true);
};

/** Splits `buf` into pieces of the given size (the last shorter). */
const piecesOf = (buf: Buffer, size: number): Buffer[] => {
  const out: Buffer[] = [];
  for (let i = 0; i < buf.length; i += size) out.push(buf.subarray(i, i + size));
  return out;
};

/** Splits `buf` into pieces of random sizes from 1 to `max`. */
const randomPieces = (buf: Buffer, max: number): Buffer[] => {
  const out: Buffer[] = [];
  for (let i = 0; i < buf.length; ) {
    const n = 1 + Math.floor(Math.random() * max);
    out.push(buf.subarray(i, i + n));
    i += n;
  }
  return out;
};

/** Runs `pieces` through `t`; returns everything it emitted and the error it failed with, if any. */
async function run(t: Transform, pieces: Buffer[]): Promise<{ out: Buffer; err: unknown }> {
  const got: Buffer[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      got.push(chunk);
      cb();
    },
  });
  let err: unknown = null;
  await pipeline(Readable.from(pieces), t, sink).catch((e: unknown) => {
    err = e;
  });
  return { out: Buffer.concat(got), err };
}

async function encrypt(pt: Buffer, opts: { chunkBytes?: number; piece?: number } = {}): Promise<Buffer> {
  const r = await run(encryptStream(key, { chunkBytes: opts.chunkBytes }), opts.piece ? piecesOf(pt, opts.piece) : [pt]);
  if (r.err) throw r.err;
  return r.out;
}

async function decrypt(ct: Buffer, opts: { piece?: number; key?: Buffer } = {}): Promise<Buffer> {
  const r = await run(decryptStream(opts.key ?? key), opts.piece ? piecesOf(ct, opts.piece) : [ct]);
  if (r.err) throw r.err;
  return r.out;
}

/** Decrypts expecting failure: the EnvelopeError and the bytes emitted before it. */
async function decryptFails(ct: Buffer, piece = 997, k = key): Promise<{ err: EnvelopeError; out: Buffer }> {
  const r = await run(decryptStream(k), piecesOf(ct, piece));
  expect(r.err).toBeInstanceOf(EnvelopeError);
  return { err: r.err as EnvelopeError, out: r.out };
}

describe('envelope round trips', () => {
  const C = 1000;
  const sizes = [0, 1, C - 1, C, C + 1, 2 * C, 5 * C + 17];
  for (const size of sizes) {
    it(`round-trips ${size} bytes with ${C}-byte chunks, fed whole, in 1-byte pieces and in random pieces`, async () => {
      const pt = randomBytes(size);
      const ct = await encrypt(pt, { chunkBytes: C });
      // header + one record per full chunk + a final record (possibly empty), each with a tag
      expect(ct.length).toBe(ENVELOPE_HEADER_BYTES + size + (Math.floor(size / C) + 1) * TAG);
      expect(isEnvelope(ct)).toBe(true);
      same(await decrypt(ct), pt);
      same(await decrypt(ct, { piece: 1 }), pt);
      same((await run(decryptStream(key), randomPieces(ct, 300))).out, pt);
      // the encryptor's output does not depend on how its input was cut (apart from the random prefix)
      const tiny = await encrypt(pt, { chunkBytes: C, piece: 1 });
      expect(tiny.length).toBe(ct.length);
      same(await decrypt(tiny, { piece: 7 }), pt);
      const mixed = await run(encryptStream(key, { chunkBytes: C }), randomPieces(pt, 3 * C));
      same(await decrypt(mixed.out), pt);
    });
  }

  it('round-trips around the default 1 MiB chunk with small, fs-sized and huge pieces', async () => {
    const C1 = DEFAULT_CHUNK_BYTES;
    for (const size of [0, 1, C1 - 1, C1, C1 + 1, 3 * C1 + 12345]) {
      const pt = randomBytes(size);
      const ct = await encrypt(pt, { piece: 64 * 1024 });
      expect(ct.readUInt32BE(9)).toBe(C1);
      expect(ct.length).toBe(ENVELOPE_HEADER_BYTES + size + (Math.floor(size / C1) + 1) * TAG);
      same(await decrypt(ct), pt);
      same(await decrypt(ct, { piece: 64 * 1024 }), pt);
      same(await decrypt(ct, { piece: 1000 }), pt);
      same((await run(decryptStream(key), randomPieces(ct, 50_000))).out, pt);
      same(await decrypt(await encrypt(pt, { piece: 333 })), pt);
    }
  });

  it('never repeats: the same plaintext and key encrypt differently each time (random nonce prefix)', async () => {
    const pt = Buffer.alloc(5000, 7);
    const a = await encrypt(pt, { chunkBytes: 1000 });
    const b = await encrypt(pt, { chunkBytes: 1000 });
    expect(a.equals(b)).toBe(false);
    expect(a.subarray(ENVELOPE_HEADER_BYTES, ENVELOPE_HEADER_BYTES + 1000).equals(b.subarray(ENVELOPE_HEADER_BYTES, ENVELOPE_HEADER_BYTES + 1000))).toBe(false);
  });

  it('hides the plaintext: neither the dump magic nor a repeated row appears in the ciphertext', async () => {
    const row = "INSERT INTO accounts VALUES (42, 'alice@example.com', 'secret-balance');\n";
    const pt = Buffer.concat([Buffer.from('PGDMP\x01\x0e\x00'), Buffer.from(row.repeat(40_000))]);
    const ct = await encrypt(pt, { piece: 65536 });
    expect(ct.length).toBeGreaterThan(pt.length);
    expect(ct.includes('PGDMP')).toBe(false);
    expect(ct.includes(row)).toBe(false);
    expect(ct.includes('alice@example.com')).toBe(false);
    expect(ct.includes(Buffer.alloc(8, 0))).toBe(false);
    same(await decrypt(ct), pt);
  });

  it('names its format and recognises envelopes by their magic', async () => {
    expect(ENVELOPE_ALG).toMatch(/AES-256-GCM/);
    const ct = await encrypt(Buffer.from('x'));
    expect(isEnvelope(ct.subarray(0, 8))).toBe(true);
    expect(ct.subarray(0, 8).toString('latin1')).toBe('BCDRENC1');
    expect(ct[8]).toBe(1);
    expect(isEnvelope(Buffer.from('PGDMP\x01\x0e\x00rest'))).toBe(false);
    expect(isEnvelope(ct.subarray(0, 7))).toBe(false);
    expect(isEnvelope(Buffer.alloc(0))).toBe(false);
  });

  it('rejects bad keys and chunk sizes up front', () => {
    expect(() => encryptStream(randomBytes(16))).toThrow(/32 bytes/);
    expect(() => decryptStream(randomBytes(31))).toThrow(/32 bytes/);
    expect(() => encryptStream(key, { chunkBytes: 0 })).toThrow(RangeError);
    expect(() => encryptStream(key, { chunkBytes: 1.5 })).toThrow(RangeError);
    expect(() => encryptStream(key, { chunkBytes: 64 * 1024 * 1024 })).toThrow(RangeError);
  });
});

describe('envelope tampering', () => {
  const C = 1000;
  const R = C + TAG;
  const H = ENVELOPE_HEADER_BYTES;
  const pt = randomBytes(3 * C + 500); // three full chunks and a final one of 500 bytes
  const sealed = encrypt(pt, { chunkBytes: C });
  const record = (ct: Buffer, i: number) => ct.subarray(H + i * R, H + (i + 1) * R);
  const flip = (ct: Buffer, at: number) => {
    const copy = Buffer.from(ct);
    copy[at] = (copy[at] ?? 0) ^ 0x01;
    return copy;
  };

  it('is intact to start with', async () => {
    const ct = await sealed;
    expect(ct.length).toBe(H + 3 * R + 500 + TAG);
    same(await decrypt(ct, { piece: 997 }), pt);
  });

  it('rejects a flipped byte in the header, releasing nothing', async () => {
    const ct = await sealed;
    const cases: [number, RegExp][] = [
      [0, /bad magic/],
      [7, /bad magic/],
      [8, /unsupported envelope version/],
      [9, /invalid chunk size/], // 1000 ^ 2^24 > the maximum
      [12, /chunk 0 failed authentication/], // 1000 -> 1001: the header is AAD of every chunk
      [13, /chunk 0 failed authentication/], // nonce prefix
      [19, /chunk 0 failed authentication/],
    ];
    for (const [at, msg] of cases) {
      const { err, out } = await decryptFails(flip(ct, at));
      expect(err.message, `header byte ${at}`).toMatch(msg);
      expect(out.length).toBe(0);
    }
  });

  it('rejects a flipped byte in any chunk ciphertext or tag, releasing only the chunks before it', async () => {
    const ct = await sealed;
    for (const i of [0, 1, 2, 3]) {
      const start = H + i * R;
      const end = i === 3 ? ct.length : start + R;
      for (const at of [start, start + 123, end - TAG - 1, end - TAG, end - 1]) {
        const { err, out } = await decryptFails(flip(ct, at));
        expect(err.kind).toBe('authentication');
        expect(err.chunk).toBe(i);
        expect(err.message).toBe(`chunk ${i} failed authentication (wrong data key, or the archive was altered, reordered or cut)`);
        same(out, pt.subarray(0, i * C));
      }
    }
  });

  it('rejects truncation: by one byte, at every chunk boundary, to the header, inside the header, to nothing', async () => {
    const ct = await sealed;
    const short = await decryptFails(ct.subarray(0, ct.length - 1));
    expect(short.err.message).toMatch(/chunk 3 failed authentication/);
    same(short.out, pt.subarray(0, 3 * C));
    for (const chunks of [3, 2, 1, 0]) {
      const { err, out } = await decryptFails(ct.subarray(0, H + chunks * R));
      expect(err.message).toBe('archive is truncated');
      expect(err.kind).toBe('truncated');
      same(out, pt.subarray(0, chunks * C));
    }
    // cut inside the final record's tag, and a few bytes into a record
    expect((await decryptFails(ct.subarray(0, H + 3 * R + 10))).err.message).toBe('archive is truncated');
    expect((await decryptFails(ct.subarray(0, H + 3 * R + 20))).err.message).toMatch(/chunk 3 failed authentication/);
    expect((await decryptFails(ct.subarray(0, H + 1 * R + 600))).err.message).toMatch(/chunk 1 failed authentication/);
    for (const n of [H - 1, 8, 3, 0]) expect((await decryptFails(ct.subarray(0, n))).err.message, `${n} bytes`).toBe('archive is truncated');
  });

  it('rejects the loss of the empty final chunk when the length is a multiple of the chunk size', async () => {
    const even = randomBytes(3 * C);
    const ct = await encrypt(even, { chunkBytes: C });
    expect(ct.length).toBe(H + 3 * R + TAG);
    same(await decrypt(ct), even);
    for (const cut of [TAG, 1, TAG - 1]) {
      const { err, out } = await decryptFails(ct.subarray(0, ct.length - cut));
      expect(err.kind).toBe('truncated');
      same(out, even);
    }
  });

  it('rejects swapped, dropped and duplicated chunks, and trailing bytes', async () => {
    const ct = await sealed;
    const header = ct.subarray(0, H);
    const final = ct.subarray(H + 3 * R);
    const [r0, r1, r2] = [record(ct, 0), record(ct, 1), record(ct, 2)];
    const cases: [string, Buffer, number][] = [
      ['swap 0 and 1', Buffer.concat([header, r1, r0, r2, final]), 0],
      ['swap 1 and 2', Buffer.concat([header, r0, r2, r1, final]), 1],
      ['drop 1', Buffer.concat([header, r0, r2, final]), 1],
      ['duplicate 1', Buffer.concat([header, r0, r1, r1, r2, final]), 2],
      ['duplicate final', Buffer.concat([header, r0, r1, r2, final, final]), 3],
      ['final moved early', Buffer.concat([header, r0, final]), 1],
      ['trailing byte', Buffer.concat([ct, Buffer.from([0])]), 3],
    ];
    for (const [name, bad, chunk] of cases) {
      const { err, out } = await decryptFails(bad);
      expect(err.message, name).toMatch(new RegExp(`chunk ${chunk} failed authentication`));
      same(out, pt.subarray(0, chunk * C), name);
    }
  });

  it('rejects a chunk spliced in from another archive under the same key', async () => {
    const ct = await sealed;
    const other = await encrypt(pt, { chunkBytes: C });
    const { err, out } = await decryptFails(Buffer.concat([ct.subarray(0, H + R), record(other, 1), ct.subarray(H + 2 * R)]));
    expect(err.chunk).toBe(1);
    same(out, pt.subarray(0, C));
  });

  it('rejects the wrong data key at the first chunk', async () => {
    const ct = await sealed;
    const { err, out } = await decryptFails(ct, 997, randomBytes(32));
    expect(err.message).toMatch(/chunk 0 failed authentication/);
    expect(out.length).toBe(0);
  });

  it('rejects a plain (unencrypted) archive as soon as the magic is wrong', async () => {
    const { err, out } = await decryptFails(Buffer.from('PGDMP\x01\x0e\x00'.padEnd(5000, 'x')));
    expect(err.kind).toBe('format');
    expect(out.length).toBe(0);
  });
});

/** A source of `total` bytes: `pattern` over and over, in pieces of `piece` bytes, pushed without copying. */
const patternSource = (pattern: Buffer, total: number, piece: number) => {
  let sent = 0;
  return new Readable({
    highWaterMark: 4 * piece,
    read() {
      while (sent < total) {
        const at = sent % pattern.length;
        const n = Math.min(piece, total - sent, pattern.length - at);
        sent += n;
        if (!this.push(pattern.subarray(at, at + n))) return;
      }
      this.push(null);
    },
  });
};

const nullSink = () =>
  new Writable({
    highWaterMark: 1024 * 1024,
    write(_chunk, _enc, cb) {
      cb();
    },
  });

describe('envelope throughput', () => {
  const GiB = 1024 ** 3;
  const piece = 64 * 1024; // what fs streams and pipes hand over

  it('encrypts and decrypts 1 GiB of random data in bounded memory', async () => {
    const pattern = randomBytes(64 * 1024 * 1024);
    const mbps = (bytes: number, ms: number) => (bytes / 1e6 / (ms / 1000)).toFixed(0);

    // sha256 over the same bytes, for scale: the machine is shared, so absolute figures move with its load.
    let t = performance.now();
    const h = createHash('sha256');
    for (let off = 0; off < GiB; off += piece) h.update(pattern.subarray(off % pattern.length, (off % pattern.length) + piece));
    h.digest();
    const shaMs = performance.now() - t;

    t = performance.now();
    const rssBefore = process.memoryUsage().rss;
    await pipeline(patternSource(pattern, GiB, piece), encryptStream(key), nullSink());
    const encMs = performance.now() - t;
    const rssGrowth = process.memoryUsage().rss - rssBefore;

    // Capture 1 GiB of ciphertext once (not timed), then decrypt it from memory in fs-sized pieces.
    const ct = Buffer.allocUnsafe(ENVELOPE_HEADER_BYTES + GiB + (GiB / DEFAULT_CHUNK_BYTES + 1) * TAG);
    let at = 0;
    await pipeline(
      patternSource(pattern, GiB, piece),
      encryptStream(key),
      new Writable({
        write(chunk: Buffer, _enc, cb) {
          at += chunk.copy(ct, at);
          cb();
        },
      }),
    );
    expect(at).toBe(ct.length);

    t = performance.now();
    let plain = 0;
    await pipeline(
      patternSource(ct, ct.length, piece),
      decryptStream(key),
      new Writable({
        highWaterMark: 1024 * 1024,
        write(chunk: Buffer, _enc, cb) {
          plain += chunk.length;
          cb();
        },
      }),
    );
    const decMs = performance.now() - t;
    expect(plain).toBe(GiB);

    console.log(
      `envelope throughput (1 GiB, 64 KiB input pieces, 1 MiB chunks): encrypt ${mbps(GiB, encMs)} MB/s (${encMs.toFixed(0)} ms), decrypt ${mbps(GiB, decMs)} MB/s (${decMs.toFixed(0)} ms); sha256 alone ${mbps(GiB, shaMs)} MB/s; RSS growth while encrypting ${(rssGrowth / 1e6).toFixed(1)} MB`,
    );
    // Generous floor so a loaded CI box does not flake; the printed figure is the measurement.
    expect(GiB / 1e6 / (encMs / 1000)).toBeGreaterThan(200);
  }, 300_000);
});
