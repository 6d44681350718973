/**
 * A snapshot asked for (a download, an operator) does not wait for a
 * creation nobody waits for any more — an automatic one, or one whose
 * download was given up: that one stops and is not stored, and the newer
 * one is taken at once (Node.snapshotNow). A creation its caller still
 * waits for is never superseded.
 */
import assert from 'node:assert/strict';

import type { Node } from '../../../src/node/node.js';
import { SnapshotSupersededError } from '../../../src/node/snapshots.js';
import { nodeSnapshotIo, type SnapshotIo } from '../../../src/snapshot/snapshot-io.js';
import { until } from '../../harness/until.js';
import { RocksCluster } from './rocks-cluster.js';

const enc = new TextEncoder();

/** GatedIo: nodeSnapshotIo whose gzip and gunzip (a delta compressing its changed members) wait while the gate is closed. */
class GatedIo {
  closed = false;
  /** waiting: calls held at the gate now. */
  waiting = 0;
  #open: (() => void)[] = [];
  readonly io: SnapshotIo = {
    ...nodeSnapshotIo,
    gzip: async (bytes, options) => {
      await this.#pass();
      return nodeSnapshotIo.gzip(bytes, options);
    },
    gunzip: async (bytes, options) => {
      await this.#pass();
      return nodeSnapshotIo.gunzip(bytes, options);
    },
  };
  async #pass(): Promise<void> {
    if (!this.closed) return;
    this.waiting++;
    await new Promise<void>((r) => this.#open.push(r));
    this.waiting--;
  }
  open(): void {
    this.closed = false;
    for (const r of this.#open.splice(0)) r();
  }
}

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
