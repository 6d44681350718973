/**
 * UploadMemberCopy (issue 15, a restore's memory): a member copied as it is
 * has its decompressed pieces hashed when it is taken, in state.bin's order,
 * and does not keep them while it waits in the queue (they were up to
 * membersMax + 2 members' gunzip pieces, ~1 MiB each, held across turns and
 * promoted: only a full collection freed them). Behind a re-encoded member
 * (whose records wait for the install) the pieces are kept and hashed in
 * turn: the copy's state.bin SHA-256 is the same either way.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { gzipSync } from 'node:zlib';

import type { GzipMemberRead } from '../../../src/snapshot/member-gunzip.js';
import { nodeSnapshotIo } from '../../../src/snapshot/snapshot-io.js';
import type { StateRecord } from '../../../src/snapshot/state-format.js';
import { UploadMemberCopy } from '../../../src/snapshot/upload-member-copy.js';
import { encodeStateBin as encode } from './helpers.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const STATE_TAR_OFFSET = 1536;
const MEMBERS = 6;
const RECORDS_PER_MEMBER = 8;
const PIECES_PER_MEMBER = 4;


/** memberRecords: member i's records (keys m<i>/<j>, 4 KiB values). */
function memberRecords(i: number): StateRecord[] {
  return Array.from({ length: RECORDS_PER_MEMBER }, (_, j) => ({ key: Buffer.from(`m${i}/${j}`), value: Buffer.alloc(4096, i * 16 + j) }));
}

const stateBin = encode(Array.from({ length: MEMBERS }, (_, i) => memberRecords(i + 1)).flat());
const memberBytes = encode(memberRecords(1)).length;

/** member: the gunzip's report of state member i (1-based) with its output in fresh pieces; `pieces` gets a WeakRef to each. */
function member(i: number, pieces: WeakRef<Buffer>[]): GzipMemberRead {
  const out = encode(memberRecords(i));
  const step = Math.ceil(out.length / PIECES_PER_MEMBER);
  const output: Buffer[] = [];
  for (let at = 0; at < out.length; at += step) {
    const piece = Buffer.from(out.subarray(at, at + step)); // a Buffer of its own, as the gunzip's pieces are
    pieces.push(new WeakRef(piece));
    output.push(piece);
  }
  const bytes = gzipSync(out);
  return { index: i, bytes, compressedBytes: bytes.length, outStart: STATE_TAR_OFFSET + (i - 1) * memberBytes, outBytes: out.length, records: { keys: RECORDS_PER_MEMBER, firstKey: Buffer.from(`m${i}/0`) }, output };
}

function copyOf(changed: { from: string; to: string }): UploadMemberCopy {
  return new UploadMemberCopy({
    stateTarOffset: STATE_TAR_OFFSET,
    stateBytes: stateBin.length,
    stateKeys: MEMBERS * RECORDS_PER_MEMBER,
    changed: { from: Buffer.from(changed.from), to: Buffer.from(changed.to) },
    membersMax: 8,
    gzipLevel: 1,
    gzipBlockBytes: 64 * 1024,
    gzipAdaptive: false,
    io: nodeSnapshotIo,
  });
}

/** reachable: how many of `pieces` are still reachable after full collections (a turn first: a new WeakRef keeps its target for the rest of its job). */
async function reachable(pieces: readonly WeakRef<Buffer>[]): Promise<number> {
  await new Promise((resolve) => setImmediate(resolve));
  gc();
  gc();
  return pieces.filter((p) => p.deref() !== undefined).length;
}

/** run takes every member and the installed records (as an install does), with the copy's producer reading; returns its result and what it delivered. */
async function run(copy: UploadMemberCopy, begun: { after?: number; stateBytes?: number; stateKeys?: number } = {}): Promise<{ stateSha256: string; stateKeys: number; delivered: number }> {
  let delivered = 0;
  const produced = copy.produce(
    async () => {
      delivered++;
    },
    async (totals) => {
      assert.equal(begun.after, undefined, 'begun twice');
      Object.assign(begun, { after: delivered, ...totals });
    },
  );
  const pieces: WeakRef<Buffer>[] = [];
  for (let i = 1; i <= MEMBERS; i++) {
    await copy.take(member(i, pieces));
    await copy.write(memberRecords(i));
  }
  copy.finish();
  const r = await produced;
  return { stateSha256: r.stateSha256, stateKeys: r.stateKeys, delivered };
}

describe('UploadMemberCopy (issue 15)', () => {
  it('keeps no decompressed piece of a member copied as it is while that member waits in the queue', async () => {
    // The changed range lies past every key: every member but the last is copied as it is.
    const copy = copyOf({ from: 'z', to: 'z\xff' });
    const pieces: WeakRef<Buffer>[] = [];
    // Nobody reads the queue yet (the archive writer is slower than the gunzip): members 1-5 wait in it.
    for (let i = 1; i <= MEMBERS; i++) await copy.take(member(i, pieces));
    const queued = pieces.slice(0, (MEMBERS - 1) * PIECES_PER_MEMBER);
    assert.equal(await reachable(queued), 0, `${await reachable(queued)} of the ${queued.length} pieces of the ${MEMBERS - 1} queued members are still reachable`);
    // The last member (its range not yet known) is still the copy's.
    assert.equal(await reachable(pieces.slice(queued.length)), PIECES_PER_MEMBER);
    copy.abandon();
  });

  it("hashes state.bin in its order either way: members hashed as taken, and behind a re-encoded member in turn", async () => {
    const want = createHash('sha256').update(stateBin).digest('hex');
    // Nothing changed at the end: members 1-5 hashed as taken, the last re-encoded (the same records).
    const atEnd = await run(copyOf({ from: 'z', to: 'z\xff' }));
    assert.deepEqual(atEnd, { stateSha256: want, stateKeys: MEMBERS * RECORDS_PER_MEMBER, delivered: MEMBERS });
    // The changed range at the start (where a restore's reserved keys lie): member 1 re-encoded, the others behind it.
    const atStart = await run(copyOf({ from: '\x00', to: '\x01' }));
    assert.deepEqual(atStart, { stateSha256: want, stateKeys: MEMBERS * RECORDS_PER_MEMBER, delivered: MEMBERS });
    // A range inside member 3: members 1-2 hashed as taken, 3 re-encoded, 4-6 hashed after its last block.
    const inside = await run(copyOf({ from: 'm3/', to: 'm3/\xff' }));
    assert.deepEqual(inside, { stateSha256: want, stateKeys: MEMBERS * RECORDS_PER_MEMBER, delivered: MEMBERS });
  });

  it('begins the archive with the new state\'s totals once past the changed range: before any member when it lies below every key', async () => {
    // A restore's reserved keys lie below every other key: member 1 meets them; its key m1/0 is replaced by two.
    const copy = copyOf({ from: 'm1/0', to: 'm1/1' });
    const begun: { after?: number; stateBytes?: number; stateKeys?: number } = {};
    let delivered = 0;
    const produced = copy.produce(
      async () => {
        delivered++;
      },
      async (totals) => {
        Object.assign(begun, { after: delivered, ...totals });
      },
    );
    const pieces: WeakRef<Buffer>[] = [];
    const installed = [{ key: Buffer.from('m1/0'), value: Buffer.from('a') }, { key: Buffer.from('m1/0+'), value: Buffer.from('bc') }];
    for (let i = 1; i <= MEMBERS; i++) {
      await copy.take(member(i, pieces));
      await copy.write(i === 1 ? [...installed, ...memberRecords(1).slice(1)] : memberRecords(i));
    }
    copy.finish();
    const r = await produced;
    const old = memberRecords(1)[0] as StateRecord;
    const stateBytes = stateBin.length - (8 + old.key.length + old.value.length) + (8 + 4 + 1) + (8 + 5 + 2);
    assert.deepEqual(begun, { after: 0, stateBytes, stateKeys: MEMBERS * RECORDS_PER_MEMBER + 1 }, 'begun before the first member, with the totals produced');
    assert.equal(r.stateBytes, stateBytes);
    assert.equal(r.stateKeys, MEMBERS * RECORDS_PER_MEMBER + 1);
  });
});
