/**
 * ParallelGzip and GzipMemberQueue: the output is one valid multi-member gzip
 * stream (Node's gunzip and the gzip tool read it whole), the same whatever
 * the input chunking, bounded in flight, and incompressible blocks are stored.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { gunzipSync } from 'node:zlib';

import { GzipMemberQueue, ParallelGzip, blockGzipChoice, gzipBlock, gzipMember } from '../../../src/snapshot/parallel-gzip.js';
import { sink, tempDir } from './helpers.js';

const run = promisify(execFile);
const BLOCK = 64 * 1024;

/** textish: compressible bytes (words from a small vocabulary, pseudo-random order). */
function textish(bytes: number): Buffer {
  const words = ['alpha', 'bravo', 'charlie', 'delta', 'echo', 'foxtrot', 'golf', 'hotel', 'india', 'juliet', 'kilo', 'lima'];
  let x = 12345;
  const parts: string[] = [];
  let n = 0;
  while (n < bytes) {
    x = (x * 1103515245 + 12345) >>> 0;
    const w = `${words[(x >>> 16) % words.length]!}${(x >>> 8) % 97}`;
    parts.push(w);
    n += w.length + 1;
  }
  return Buffer.from(parts.join(' ')).subarray(0, bytes);
}

async function gzipAll(input: Buffer, pieceBytes: number, options: ConstructorParameters<typeof ParallelGzip>[0] = {}): Promise<{ out: Buffer; gz: ParallelGzip }> {
  const gz = new ParallelGzip({ blockBytes: BLOCK, ...options });
  const chunks: Buffer[] = [];
  async function* pieces(): AsyncGenerator<Buffer> {
    for (let o = 0; o < input.length; o += pieceBytes) yield input.subarray(o, o + pieceBytes);
  }
  await pipeline(Readable.from(pieces()), gz, sink((c) => chunks.push(c)));
  return { out: Buffer.concat(chunks), gz };
}

/** memberCount walks the gzip members of `out` by decompressing one at a time (each ends where the next 1f 8b begins). */
function memberCount(out: Buffer): number {
  let count = 0;
  let at = 0;
  while (at < out.length) {
    assert.equal(out[at], 0x1f);
    assert.equal(out[at + 1], 0x8b);
    // the next member starts at the first 1f 8b 08 after this one that makes the prefix a complete gzip stream.
    let next = at + 18;
    for (; next < out.length; next++) {
      if (out[next] !== 0x1f || out[next + 1] !== 0x8b || out[next + 2] !== 0x08) continue;
      try {
        gunzipSync(out.subarray(at, next));
        break;
      } catch {
        // not a member boundary
      }
    }
    count++;
    at = next;
  }
  return count;
}

describe('ParallelGzip', function () {
  this.timeout(60_000);

  it('writes one gzip member per block; Node gunzip, gzip -t and gzip -dc read the whole stream', async () => {
    const input = textish(5 * BLOCK + 1234);
    const { out, gz } = await gzipAll(input, 10_000);
    assert.equal(gz.members, 6);
    assert.equal(memberCount(out), 6);
    assert.equal(gz.bytesIn, input.length);
    assert.equal(gz.bytesOut, out.length);
    assert.ok(out.length < input.length / 2, `text should compress, got ${out.length} of ${input.length}`);
    assert.deepEqual(gunzipSync(out), input);
    const { dir, cleanup } = await tempDir();
    try {
      const path = join(dir, 'x.gz');
      await writeFile(path, out);
      await run('gzip', ['-t', path]);
      const { stdout } = await run('gzip', ['-dc', path], { encoding: 'buffer', maxBuffer: 64 * 1024 * 1024 });
      assert.deepEqual(stdout, input);
    } finally {
      await cleanup();
    }
  });

  it('gives the same bytes whatever the input chunking (block boundaries are byte offsets)', async () => {
    const input = textish(3 * BLOCK + 77);
    const a = await gzipAll(input, 1);
    const b = await gzipAll(input, 4096);
    const c = await gzipAll(input, input.length);
    const d = await gzipAll(input, 4096, { inFlightMax: 1 });
    assert.deepEqual(a.out, b.out);
    assert.deepEqual(a.out, c.out);
    assert.deepEqual(a.out, d.out);
  });

  it('turns empty input into a valid gzip stream of nothing', async () => {
    const { out, gz } = await gzipAll(Buffer.alloc(0), 1);
    assert.equal(gz.members, 1);
    assert.equal(gunzipSync(out).length, 0);
  });

  it('stores incompressible blocks, Huffman codes those LZ does not help, deflates the rest; all read back', async () => {
    const random = randomBytes(4 * BLOCK);
    const stored = await gzipAll(random, 8192);
    assert.deepEqual(gunzipSync(stored.out), random);
    // stored blocks: 5 bytes per stored block (16 KiB or more) + 18 per member.
    assert.ok(stored.out.length <= random.length + 4 * (18 + 5 * 8), `stored ${stored.out.length}`);
    const deflated = await gzipAll(random, 8192, { adaptive: false });
    assert.deepEqual(gunzipSync(deflated.out), random);
    assert.equal(await blockGzipChoice(random.subarray(0, BLOCK * 2), 1, true), 'stored', 'random bytes are stored');
    assert.equal(await blockGzipChoice(random.subarray(0, BLOCK * 2), 1, false), 'deflate', 'unless told not to');
    assert.equal(await blockGzipChoice(textish(BLOCK * 2), 1, true), 'deflate', 'redundant text is deflated');
    // half random, half redundant text: the sample (start and middle) sees the text half, so the block is not stored.
    assert.notEqual(await blockGzipChoice(Buffer.concat([random.subarray(0, BLOCK), textish(BLOCK)]), 1, true), 'stored');
    // random letters: LZ finds nothing Huffman coding does not, so Huffman coding alone.
    const letters = Buffer.from(random.subarray(0, BLOCK * 2).map((b) => 97 + (b % 26)));
    assert.equal(await blockGzipChoice(letters, 1, true), 'huffman');
    const huffman = await gzipBlock(letters, 1, true);
    assert.deepEqual(gunzipSync(huffman), letters);
    assert.ok(huffman.length < letters.length * 0.7, `letters are Huffman coded: ${huffman.length}`);
    const member = await gzipBlock(textish(BLOCK * 2), 1, true);
    assert.ok(member.length < BLOCK, 'a redundant block is deflated');
    assert.deepEqual(gunzipSync(member), textish(BLOCK * 2));
  });

  it('hands each member on as zlib wrote it, without copying it into another buffer (issue 15: every compressed byte was copied once more)', async () => {
    const block = textish(1 << 20);
    const concat = Buffer.concat;
    let copied = 0;
    Buffer.concat = ((list: readonly Uint8Array[], total?: number) => {
      const out = concat(list, total);
      copied += out.length;
      return out;
    }) as typeof Buffer.concat;
    let members: Buffer[];
    try {
      // Estimated (gzipBlock's sample), and sized for the worst case (no estimate).
      members = [await gzipBlock(block, 1, true), await gzipMember(block, 1), await gzipMember(block, 6)];
    } finally {
      Buffer.concat = concat;
    }
    for (const m of members) assert.deepEqual(gunzipSync(m), block);
    // Only gzipBlock's 64 KiB sample is joined; before, each member's two pieces (deflate, then the final flush) were.
    assert.ok(copied <= 64 * 1024, `${copied} bytes copied for ${members.map((m) => m.length).join(' + ')} bytes of members`);
  });

  it('holds at most inFlightMax blocks, delivering members in order even when they finish out of order', async () => {
    const delivered: number[] = [];
    let pendingMax = 0;
    const queue = new GzipMemberQueue(1, 3, async (member) => {
      delivered.push(gunzipSync(member)[0]!);
      await new Promise((r) => setTimeout(r, 2));
    });
    for (let i = 0; i < 20; i++) {
      // alternate large and tiny blocks so later ones finish first.
      const block = i % 2 === 0 ? Buffer.alloc(BLOCK * 4, i) : Buffer.alloc(16, i);
      await queue.add(block);
      pendingMax = Math.max(pendingMax, queue.pending);
    }
    await queue.finish();
    assert.ok(pendingMax <= 2, `pending after add resolved: ${pendingMax}`);
    assert.deepEqual(delivered, Array.from({ length: 20 }, (_, i) => i));
    assert.equal(queue.memberCount, 20);
  });

  it('passes a delivery failure to add or finish, and to every later call', async () => {
    const queue = new GzipMemberQueue(1, 2, () => {
      throw new Error('disk full');
    });
    await queue.add(Buffer.alloc(10));
    await assert.rejects(queue.add(Buffer.alloc(10)), /disk full/);
    await assert.rejects(queue.finish(), /disk full/);
    await assert.rejects(queue.add(Buffer.alloc(10)), /disk full/);
  });

  it('refuses bad options', () => {
    assert.throws(() => new ParallelGzip({ level: 10 }), RangeError);
    assert.throws(() => new ParallelGzip({ blockBytes: 100 }), RangeError);
    assert.throws(() => new ParallelGzip({ inFlightMax: 0 }), RangeError);
  });
});
