/**
 * Seeded fuzzing of the restore path: archives with valid framing and every
 * hash right but hostile records and meta.json
 * (test/unit/snapshot/fuzz-archives.ts) are restored through the log
 * (Node.restore) on a one-node cluster on RocksDB, one after another. The
 * contract: each is refused with NodeError `invalid` and a message, nothing
 * proposed and the whole state (reserved records too) unchanged; or it is
 * applied, and then the client keys are exactly the archive's. Either way
 * the node stays up and takes a write; at the end it restarts on its data
 * dir, and a snapshot of its state reads back.
 *
 * FUZZ_CASES=N runs more cases, FUZZ_SEED=S starts at another seed.
 */
import assert from 'node:assert/strict';
import { createReadStream } from 'node:fs';
import { Readable } from 'node:stream';

import type { RocksStorage } from '../../../src/storage/rocks-storage.js';
import { NodeError } from '../../../src/node/errors.js';
import type { Node } from '../../../src/node/node.js';
import { until } from '../../harness/until.js';
import { isReservedKey } from '../../../src/fsm/sessions.js';
import { SeededRng } from '../../harness/rng.js';
import { baseArchive, fuzzArchive, fuzzCases, fuzzSeed } from '../snapshot/fuzz-archives.js';
import { RocksCluster } from './rocks-cluster.js';
import { saveArchive } from './save-archive.js';
import { archiveRecords, hexRecords, stateRecords } from './state-records.js';

const enc = new TextEncoder();

/** clientKeys: every client key-value pair of the node (the reserved ones are never served), as hex. */
async function clientKeys(n: Node): Promise<string[]> {
  const out: string[] = [];
  let start: Uint8Array | undefined;
  for (;;) {
    const r = await n.range({ limit: 1000, ...(start !== undefined ? { start } : {}) }, true);
    out.push(...hexRecords(r.kvs));
    const last = r.kvs[r.kvs.length - 1];
    if (!r.more || last === undefined) return out;
    start = Uint8Array.from([...last.key, 0]);
  }
}

describe('fuzz: restores of hostile archives (valid hashes, hostile content)', function () {
  this.timeout(60_000 + fuzzCases(20) * 1000); // FUZZ_CASES runs by hand take longer
  let c: RocksCluster | undefined;
  afterEach(async () => {
    await c?.close();
    c = undefined;
  });

  it('each is refused (invalid, state unchanged) or applied as the archive holds it; the node stays up, restarts and snapshots', async () => {
    const cases = fuzzCases(20);
    const seed0 = fuzzSeed(7_100_000);
    // FUZZ_NODES=3 by hand: the followers apply each restore too (the archive staged on them, installed with their sessions).
    const size = Number(process.env['FUZZ_NODES'] ?? 1);
    c = await RocksCluster.start(size, { snapshotEntries: 1_000_000 });
    let leader = await c.waitForLeader();
    const idOf = (n: Node): string => (c as RocksCluster).members.find((m) => m.node === n)?.id as string;
    await leader.propose({ op: 'put', key: enc.encode('own/a'), value: enc.encode('1') });
    const outcomes = new Map<string, number>();
    const count = (k: string): void => void outcomes.set(k, (outcomes.get(k) ?? 0) + 1);
    for (let i = 0; i < cases; i++) {
      const seed = seed0 + i;
      const rng = new SeededRng(seed);
      const fuzzed = await fuzzArchive(rng.fork('mutate'), await baseArchive(rng.fork('base')));
      const where = `seed ${seed} (FUZZ_SEED=${seed} FUZZ_CASES=1): ${fuzzed.what.join('; ')}`;
      const storage: RocksStorage | null = c.member(idOf(leader)).storage;
      assert.ok(storage !== null);
      const before = await stateRecords(storage);
      const lastIndex = leader.status().lastIndex;
      try {
        await leader.restore(Readable.from([fuzzed.archive]));
      } catch (err) {
        assert.ok(err instanceof NodeError && err.code === 'invalid', `${where}: refused with ${(err as Error)?.stack ?? String(err)}`);
        assert.ok(err.message.length > 0);
        assert.equal(leader.status().lastIndex, lastIndex, `${where}: refused, but something was proposed`);
        assert.deepEqual(await stateRecords(storage), before, `${where}: refused, but the state changed`);
        count(`refused: ${err.message.replace(/\d+/g, 'N').slice(0, 70)}`);
      }
      if (leader.status().lastIndex !== lastIndex) {
        // Applied: the client keys are the archive's.
        const want: string[] = hexRecords((fuzzed.records ?? []).filter((r) => !isReservedKey(r.key))).sort();
        const applied = leader.status().applied;
        for (const m of c.members) {
          const n = m.node as Node;
          await until(`${m.id} to apply the restore`, 20_000, () => (n.status().applied >= applied || n.failed() !== null ? true : undefined));
          assert.equal(n.failed(), null, `${where}: ${m.id} failed: ${String(n.failed())}`);
          assert.deepEqual((await clientKeys(n)).sort(), want, `${where}: restored, but ${m.id}'s client keys are not the archive's`);
        }
        count('restored');
      }
      assert.equal(leader.failed(), null, `${where}: the node failed: ${String(leader.failed())}`);
      await leader.propose({ op: 'put', key: enc.encode('own/after'), value: enc.encode(String(i)) });
    }
    // The node restarts on what it was left with, serves, and a snapshot of its state reads back.
    const restarted = idOf(leader);
    await c.stop(restarted);
    await c.restart(restarted);
    leader = await c.waitForLeader();
    await leader.propose({ op: 'put', key: enc.encode('own/restarted'), value: enc.encode('y') });
    const storage = c.member(idOf(leader)).storage;
    assert.ok(storage !== null);
    const file = await saveArchive(c, leader);
    assert.deepEqual(await archiveRecords(createReadStream(file)), await stateRecords(storage));
    assert.ok((outcomes.get('restored') ?? 0) > 0, `nothing was restored: ${JSON.stringify([...outcomes])}`);
    if (process.env['FUZZ_CASES'] !== undefined) console.log(`      ${cases} cases from seed ${seed0}:`, Object.fromEntries(outcomes));
  });
});
