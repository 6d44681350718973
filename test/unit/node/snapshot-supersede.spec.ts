/**
 * A snapshot asked for (a download, an operator) does not wait for a
 * creation nobody waits for any more — an automatic one, or one whose
 * download was given up: that one stops and is not stored, and the newer
 * one is taken at once (Node.snapshotNow). A creation its caller still
 * waits for is never superseded. Nor is an automatic creation made beside a
 * snapshot the follower fetches from its leader (Node.startFetch): the
 * fetched one replaces the state.
 */
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';

import type { Node } from '../../../src/node/node.js';
import { SnapshotSupersededError } from '../../../src/node/snapshots.js';
import { STORE_ID_PATTERN } from '../../../src/snapshot/index.js';
import type { RocksStorage } from '../../../src/storage/rocks-storage.js';
import type { KeyValue, NodeStorage, SnapshotStateOptions, StateSnapshotReader } from '../../../src/storage/types.js';
import { GatedIo } from './gated-io.js';
import { until } from '../../harness/until.js';
import { RocksCluster } from './rocks-cluster.js';

const enc = new TextEncoder();

describe('node: a snapshot nobody waits for is superseded', function () {
  this.timeout(120_000);
  let c: RocksCluster | undefined;
  afterEach(async () => {
    await c?.close();
    c = undefined;
  });

  /** setup: one node with ~40 gzip members of state and a snapshot of it (the base of the next, a delta), the gate closed. */
  async function setup(): Promise<{ node: Node; gate: GatedIo; c: RocksCluster }> {
    const gate = new GatedIo();
    const cluster = await RocksCluster.start(1, { snapshotEntries: 1_000_000, trailingEntries: 0, gzipBlockBytes: 64 * 1024 }, {}, { snapshotIo: gate.io });
    c = cluster;
    const node = await cluster.waitForLeader();
    const value = enc.encode('v'.repeat(2048));
    for (let i = 0; i < 1300; i++) await node.propose({ op: 'put', key: enc.encode(`k/${String(i).padStart(5, '0')}`), value });
    await node.snapshotNow();
    await node.propose({ op: 'put', key: enc.encode('a/changed'), value: enc.encode('1') });
    gate.closed = true;
    return { node, gate, c: cluster };
  }

  async function storedIndexes(cluster: RocksCluster): Promise<number[]> {
    return ((await cluster.member('n1').snapshots?.store.list()) ?? []).map((s) => s.meta.index).sort((a, b) => a - b);
  }

  it('a creation whose caller went away stops when a newer snapshot is asked for, and is not stored', async () => {
    const { node, gate, c: cluster } = await setup();
    const gone = new AbortController();
    const first = node.snapshotNow(gone.signal);
    first.catch(() => undefined);
    await until('the first creation to read its base', 10_000, () => (gate.waiting > 0 ? true : undefined));
    const firstIndex = node.status().applied;
    gone.abort(); // its download was given up
    const last = await node.propose({ op: 'put', key: enc.encode('a/later'), value: enc.encode('2') });
    // The second finds the first with no waiter and supersedes it; the first goes on to its next member and stops.
    const second = node.snapshotNow();
    gate.open();
    await assert.rejects(first, SnapshotSupersededError);
    const meta = await second;
    assert.ok(meta.index >= last.index, `the new snapshot (${meta.index}) holds the write before it (${last.index})`);
    assert.ok(!(await storedIndexes(cluster)).includes(firstIndex), 'the superseded snapshot was not stored');
  });

  it('a creation nobody waits for is cut by the node\'s stop (issue 15: an automatic delta went on for seconds after SIGTERM, the stop\'s peak RSS), and is not stored', async () => {
    const { node, gate, c: cluster } = await setup();
    const dir = cluster.member('n1').snapshots?.store.dir as string;
    const gone = new AbortController();
    const first = node.snapshotNow(gone.signal);
    first.catch(() => undefined);
    await until('the creation to read its base', 10_000, () => (gate.waiting > 0 ? true : undefined));
    gone.abort(); // as an automatic one: nobody waits for it
    const stopped = node.stop();
    gate.open();
    await stopped;
    await assert.rejects(first, (err: unknown) => err instanceof SnapshotSupersededError && err.by === 'stop');
    assert.equal((await readdir(dir)).filter((f) => STORE_ID_PATTERN.test(f)).length, 1, 'only the snapshot before it is stored');
  });

  it('a creation its caller still waits for is not superseded: the next one waits for it', async () => {
    const { node, gate, c: cluster } = await setup();
    const waited = new AbortController();
    const first = node.snapshotNow(waited.signal);
    await until('the first creation to read its base', 10_000, () => (gate.waiting > 0 ? true : undefined));
    const firstIndex = node.status().applied;
    await node.propose({ op: 'put', key: enc.encode('a/later'), value: enc.encode('2') });
    const second = node.snapshotNow();
    await new Promise((r) => setTimeout(r, 200)); // several of snapshotNow's waits
    gate.open();
    const a = await first;
    const b = await second;
    assert.equal(a.index, firstIndex);
    assert.ok(b.index > a.index);
    assert.ok((await storedIndexes(cluster)).includes(firstIndex));
  });
});

/**
 * ViewGate: what a snapshot creation reads of a storage (snapshotState's batches): refused (`fail`: the creation
 * fails and is retried later), handed over one record at a time, each SLOW_RECORD_MS after the one before (`slow`:
 * a creation that takes a while, as a full one of a large state does), or as it is (`open`).
 */
class ViewGate {
  mode: 'open' | 'fail' | 'slow' = 'open';
  /** slowViews: views read in `slow` mode; ended: those of them given up or read to the end. */
  slowViews = 0;
  ended = 0;
  /** records: those the slow views held; handed: those of them handed over. */
  records = 0;
  handed = 0;

  wrap(storage: RocksStorage): NodeStorage {
    return new Proxy(storage, {
      get: (target, prop): unknown => {
        if (prop === 'snapshotState') {
          return async (options?: SnapshotStateOptions): Promise<StateSnapshotReader> => {
            if (this.mode === 'fail') throw new Error('view refused by the test');
            const reader = await target.snapshotState(options);
            if (this.mode !== 'slow') return reader;
            return {
              appliedIndex: reader.appliedIndex,
              membership: reader.membership,
              changes: reader.changes,
              close: () => reader.close(),
              batches: (entriesMax?: number, bytesMax?: number) => this.#slow(reader, entriesMax, bytesMax),
            };
          };
        }
        const v: unknown = Reflect.get(target, prop, target);
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    }) as NodeStorage;
  }

  /** #slow: `reader`'s records one at a time, each SLOW_RECORD_MS after the one before while the mode is `slow`. */
  async *#slow(reader: StateSnapshotReader, entriesMax?: number, bytesMax?: number): AsyncGenerator<KeyValue[], void, undefined> {
    this.slowViews++;
    try {
      const all: KeyValue[] = [];
      for await (const b of reader.batches(entriesMax, bytesMax)) all.push(...b);
      this.records += all.length;
      for (const r of all) {
        if (this.mode === 'slow') await new Promise((done) => setTimeout(done, SLOW_RECORD_MS));
        this.handed++;
        yield [r];
      }
    } finally {
      this.ended++;
    }
  }
}

/** SLOW_RECORD_MS: the pace of a slow view (ViewGate): ~300 records of state take ~15 s. */
const SLOW_RECORD_MS = 50;

describe('node: a follower fetching a snapshot from its leader stops its own automatic one', function () {
  this.timeout(120_000);
  let c: RocksCluster | undefined;
  let gate: ViewGate | undefined;
  afterEach(async () => {
    if (gate !== undefined) gate.mode = 'open';
    await c?.close();
    c = undefined;
  });

  it('a restarted follower cut off past compaction: its automatic creation is superseded by the fetch, not stored, and the install lands', async () => {
    const cluster = await RocksCluster.start(3, { snapshotEntries: 40, trailingEntries: 5, chunkBytes: 4096 });
    c = cluster;
    const leader = await cluster.waitForLeader();
    const followerId = cluster.members.find((m) => m.id !== leader.id)?.id ?? '';
    const g = new ViewGate();
    gate = g;
    cluster.wrapStorage = (id, storage) => (id === followerId ? g.wrap(storage) : storage);
    await cluster.stop(followerId);
    await cluster.restart(followerId);
    // The premise: restarted, the follower starts its automatic snapshot before the leader's offer starts its fetch
    // (then none is made). Both race at the restart; on a loaded machine the offer can come first (seen once in a
    // whole-suite run): the scenario is then played again, at most 3 times, each a whole instance of it.
    let appliedBefore = 0;
    let heldBefore = new Set<string>();
    for (let attempt = 1; attempt <= 3 && g.slowViews === 0; attempt++) {
      // The follower applies 80 entries and has no snapshot of them (its creations fail): due for one at its restart.
      g.mode = 'fail';
      for (let i = 0; i < 80; i++) await leader.propose({ op: 'put', key: enc.encode(`k/${attempt}/${i}`), value: enc.encode(`v${i}`.repeat(20)) });
      const follower = cluster.node(followerId);
      await until('the follower to apply', 20_000, () => (follower.status().applied >= leader.status().commit ? true : undefined));
      appliedBefore = follower.status().applied;
      // Snapshots it holds already (a slow restart may have it install the leader's at 40 while the 80 go in): not what this test is about.
      heldBefore = new Set(((await cluster.member(followerId).snapshots?.store.list()) ?? []).map((s) => s.id));
      await cluster.stop(followerId);
      for (let i = 80; i < 230; i++) await leader.propose({ op: 'put', key: enc.encode(`k/${attempt}/${i}`), value: enc.encode(`v${i}`.repeat(20)) });
      await until('the leader to compact past the follower', 10_000, () => (leader.status().firstIndex > appliedBefore + 1 ? true : undefined));
      // Restarted, it starts its automatic snapshot (a slow one) and is offered the leader's.
      g.mode = 'slow';
      await cluster.restart(followerId);
      const f = cluster.node(followerId);
      await until('the follower to catch up by install', 60_000, () =>
        f.status().applied >= leader.status().commit && f.snapshotStats.installed > 0 ? true : undefined,
      );
    }
    assert.ok(g.slowViews > 0, 'the follower started its automatic snapshot at its restart (the premise of this test)');
    await until('the slow creation to end', 60_000, () => (g.ended >= g.slowViews ? true : undefined));
    g.mode = 'open';
    assert.ok(g.handed < g.records, `the creation stopped part way: ${g.handed} of ${g.records} records read\n${cluster.recentLog(followerId, 40)}`);
    await until('the superseded creation to be logged', 10_000, () =>
      /automatic snapshot superseded by the snapshot being fetched/.test(cluster.recentLog(followerId)) ? true : undefined,
    );
    const stored = ((await cluster.member(followerId).snapshots?.store.list()) ?? []).filter((s) => !heldBefore.has(s.id)).map((s) => s.meta.index);
    assert.ok(stored.every((i) => i > appliedBefore), `the follower stored no snapshot of its state from before the install (stored since its restart ${stored.join(', ')}; applied before ${appliedBefore})`);
  });
});
