/**
 * The state digest worker (state-digest.ts, startWorkerStateDigest) bounds its dead Buffers: every member it
 * gunzips arrives in fresh zlib pieces, dropped once copied, and a delta of a 1 GB state makes a GB of them
 * (issue 15: peak RSS). Its ExternalMemoryGc, checked as each member is done, starts a collection once they
 * gather; V8 left alone waited for 64 MiB. Each piece is also noted dead as it is copied (a scavenge every 4 MiB).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { gzipSync } from 'node:zlib';

import { EXTERNAL_GARBAGE_BYTES_MAX, GARBAGE_SCAVENGE_BYTES_DEFAULT } from '../../../src/snapshot/external-memory-gc.js';
import { localStateDigest, startWorkerStateDigest } from '../../../src/snapshot/state-digest.js';
import { nodeSnapshotIo } from '../../../src/snapshot/snapshot-io.js';

/** member: `keys` records (4-byte key length, key, 4-byte value length, value) of 1 KiB values from key `first`. */
function member(first: number, keys: number): { state: Buffer; firstKey: Buffer } {
  const parts: Buffer[] = [];
  for (let i = first; i < first + keys; i++) {
    const key = Buffer.from(`k/${String(i).padStart(8, '0')}`);
    const value = Buffer.alloc(1024, i % 251);
    const head = Buffer.alloc(4);
    head.writeUInt32BE(key.length);
    const vHead = Buffer.alloc(4);
    vHead.writeUInt32BE(value.length);
    parts.push(head, key, vHead, value);
  }
  return { state: Buffer.concat(parts), firstKey: Buffer.from(`k/${String(first).padStart(8, '0')}`) };
}

describe('startWorkerStateDigest', function () {
  this.timeout(60_000);

  it('hashes what it gunzips and collects its dead Buffers long before V8 would (ExternalMemoryGc in the worker)', async () => {
    const keysPerMember = 1_000;
    // Four times the bound's worth of gunzip output: V8 on its own collected at 64 MiB.
    const members = Math.ceil((4 * EXTERNAL_GARBAGE_BYTES_MAX) / (keysPerMember * 1_050));
    const digest = startWorkerStateDigest();
    const hash = createHash('sha256');
    try {
      for (let m = 0; m < members; m++) {
        const { state, firstKey } = member(m * keysPerMember, keysPerMember);
        hash.update(state);
        const compressed = gzipSync(state, { level: 1 });
        const r = await digest.inflate(compressed, { stateBytes: state.length, keys: keysPerMember, firstKey, compressedBytes: compressed.length }, false);
        assert.equal(r.state, null);
        await digest.hashMember();
      }
      assert.equal(await digest.digest(), hash.digest('hex'));
      assert.ok(digest.gc.scavenges + digest.gc.collections >= 1, `no collection started for ${members} MiB of gunzip output: ${JSON.stringify(digest.gc)}`);
    } finally {
      await digest.close();
    }
  });

  it('notes each gunzip piece dead once copied: a scavenge every GARBAGE_SCAVENGE_BYTES_DEFAULT of output, not only at the 16 MiB bound', async () => {
    const keysPerMember = 1_000;
    // Half the bound's worth of output: the bound alone never scavenges; noted pieces do, every 4 MiB.
    const members = Math.floor(EXTERNAL_GARBAGE_BYTES_MAX / 2 / (keysPerMember * 1_050));
    const digest = startWorkerStateDigest();
    let output = 0;
    try {
      for (let m = 0; m < members; m++) {
        const { state, firstKey } = member(m * keysPerMember, keysPerMember);
        output += state.length;
        const compressed = gzipSync(state, { level: 1 });
        await digest.inflate(compressed, { stateBytes: state.length, keys: keysPerMember, firstKey, compressedBytes: compressed.length }, false);
        await digest.hashMember();
      }
      await digest.digest();
      assert.equal(digest.gc.garbageScavenges, Math.floor(output / GARBAGE_SCAVENGE_BYTES_DEFAULT), JSON.stringify({ output, gc: digest.gc }));
    } finally {
      await digest.close();
    }
  });
});

describe('localStateDigest', () => {
  it('hashes a block where it lies: no copy (issue 15: a delta copied every merged 1 MiB block before hashing it)', async () => {
    const digest = localStateDigest(nodeSnapshotIo, 1 << 20);
    const block = Buffer.alloc(64 * 1024, 7);
    const done = digest.hashBlock(block);
    // Changed before the hash settles (hashBlock's contract forbids it): a digest that hashes the bytes where they
    // lie sees the change, one that copied them first (before: Buffer.from(block)) does not.
    block.fill(0);
    await done;
    assert.equal(await digest.digest(), createHash('sha256').update(Buffer.alloc(64 * 1024, 0)).digest('hex'));
    await digest.close();
  });
});

describe('inflating a base member (issue 15: no CRC-32 of bytes the chunk hashes checked)', () => {
  const { state, firstKey } = member(0, 300);
  const entry = { stateBytes: state.length, keys: 300, firstKey, compressedBytes: 0 };
  const gz = gzipSync(state, { level: 1 });
  const changed = (at: number, xor: number): Buffer => {
    const b = Buffer.from(gz);
    b[at] = (b[at] as number) ^ xor;
    return b;
  };

  for (const home of ['here', 'worker'] as const) {
    it(`reads a member whose trailer's CRC-32 is not its bytes' (${home}): the gunzip's CRC is not computed`, async () => {
      const digest = home === 'here' ? localStateDigest(nodeSnapshotIo, 1 << 20) : startWorkerStateDigest();
      try {
        const r = await digest.inflate(changed(gz.length - 8, 0xff), entry, false);
        assert.equal(r.lastKey.toString(), 'k/00000299');
        await digest.hashMember();
        assert.equal(await digest.digest(), createHash('sha256').update(state).digest('hex'));
      } finally {
        await digest.close();
      }
    });
  }

  it('refuses a wrong ISIZE, deflate data that end before the trailer, a cut member and a bad header (corrupt-gzip)', async () => {
    const withGap = Buffer.concat([gz.subarray(0, gz.length - 8), Buffer.from([0, 0]), gz.subarray(gz.length - 8)]);
    const bad: [string, Buffer][] = [
      ['ISIZE', changed(gz.length - 4, 0x01)],
      ['bytes between the deflate data and the trailer', withGap],
      ['cut', gz.subarray(0, gz.length - 20)],
      ['header', changed(2, 0x01)],
      ['header only', gz.subarray(0, 12)],
    ];
    for (const [what, bytes] of bad) {
      const digest = localStateDigest(nodeSnapshotIo, 1 << 20);
      await assert.rejects(digest.inflate(bytes, entry, false), (err: Error & { code?: string }) => err.code === 'corrupt-gzip', what);
      await digest.close();
    }
  });
});
