/**
 * A node whose state holds a record that does not verify stops (simulator
 * seed 210903, 5 nodes): its leader's state had a corrupt value, every
 * automatic snapshot failed on it and was retried, so a learner that joined
 * later was never sent a snapshot and stayed at applied 0 for good. A snapshot
 * that meets such a record (StorageError `corrupt`, RocksDB's Corruption
 * status) now stops the node like a failed write; a failed IO is still retried.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { Node } from '../../../src/node/node.js';
import { silentLogger, type Logger } from '../../../src/node/logger.js';
import { DEFAULT_SNAPSHOT_POLICY, SnapshotManager } from '../../../src/node/snapshots.js';
import { systemClock } from '../../../src/node/clock.js';
import { cryptoRng } from '../../../src/node/crypto-rng.js';
import { FaultyStorage } from './faulty-storage.js';

const enc = new TextEncoder();

describe('node: a snapshot that meets a corrupt state record', function () {
  this.timeout(20_000);
  let dir = '';
  const nodes: Node[] = [];

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'snapcoord-corrupt-state-'));
  });

  afterEach(async () => {
    for (const n of nodes.splice(0)) await n.stop().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  });

  /** start: n1 alone on a FaultyStorage, a real SnapshotManager that snapshots after every 4 entries. */
  const start = async (): Promise<{ node: Node; storage: FaultyStorage; errors: { obj: object; msg: string }[] }> => {
    const storage = await FaultyStorage.open();
    const errors: { obj: object; msg: string }[] = [];
    const logger: Logger = { ...silentLogger, error: (obj, msg) => errors.push({ obj, msg: msg ?? '' }) };
    const snapshots = await SnapshotManager.open(join(dir, 'snapshots'), storage, { ...DEFAULT_SNAPSHOT_POLICY, snapshotEntries: 4, trailingEntries: 0 }, silentLogger, 'test', systemClock);
    const node = await Node.start({
      clock: systemClock,
      rng: cryptoRng,
      id: 'n1',
      storage,
      snapshots,
      transport: { send() {}, setPeers() {}, close: async () => {} },
      initialMembership: { voters: ['n1'], learners: [], addresses: { n1: '127.0.0.1:1' } },
      logger,
    });
    nodes.push(node);
    for (let i = 0; node.status().role !== 'leader'; i++) {
      if (i > 500) throw new Error('n1 did not elect itself');
      await new Promise((r) => setTimeout(r, 10));
    }
    return { node, storage, errors };
  };

  /** writeUntil proposes puts (at most 200) until `done`; the writes after a failure are refused. */
  const writeUntil = async (node: Node, done: () => boolean): Promise<void> => {
    for (let i = 0; i < 200 && !done(); i++) {
      await node.propose({ op: 'put', key: enc.encode(`k${i}`), value: enc.encode('v') }).catch(() => undefined);
      await new Promise((r) => setTimeout(r, 5));
    }
  };

  it('stops the node, says why once, and refuses writes after', async () => {
    const { node, storage, errors } = await start();
    storage.corruptStateReads = true;
    await writeUntil(node, () => node.failed() !== null);
    const failure = node.failed();
    assert.ok(failure !== null, `the node did not stop; errors logged: ${errors.map((e) => e.msg).join(' | ')}`);
    assert.match(failure.message, /Corruption: block checksum mismatch/);
    const failed = errors.filter((e) => e.msg.startsWith('node failed'));
    assert.equal(failed.length, 1);
    assert.match(failed[0]?.msg ?? '', /holds a record that does not verify/);
    await assert.rejects(node.propose({ op: 'put', key: enc.encode('after'), value: enc.encode('v') }), /the node failed/);
  });

  it('a failed node tries no more snapshots: no retry is scheduled after the failure', async () => {
    // Before: the failure went on to maybeSnapshot's retry ("automatic snapshot failed; retrying later"), and 1 s
    // later the failed node read its state again for a new snapshot, and so on with the backoff until it was stopped.
    const { node, storage, errors } = await start();
    storage.corruptStateReads = true;
    await writeUntil(node, () => node.failed() !== null);
    assert.ok(node.failed() !== null, 'the node did not stop');
    const views = storage.stateViews;
    // Past the first retry's backoff (SNAPSHOT_RETRY_MS_MIN, 1 s), bounded.
    await new Promise((r) => setTimeout(r, 1_600));
    assert.equal(storage.stateViews, views, 'the failed node read its state again for another snapshot');
    const at = errors.findIndex((e) => e.msg.startsWith('node failed'));
    assert.deepEqual(errors.slice(at + 1).map((e) => e.msg), [], 'logged after the failure');
  });

  it('a client read that meets a record that does not verify fails, and the node stops (once, with one log line)', async () => {
    // Before: the read failed (INTERNAL) and the node went on leading with a state it could not read.
    const { node, storage, errors } = await start();
    await node.propose({ op: 'put', key: enc.encode('k1'), value: enc.encode('v') });
    storage.corruptRangeReads = true;
    await assert.rejects(node.range({ start: enc.encode('k'), limit: 10 }), /fails its checksum/);
    assert.match(node.failed()?.message ?? '', /fails its checksum/);
    assert.deepEqual(errors.filter((e) => e.msg.startsWith('node failed')).map((e) => e.msg), ['node failed: its data dir holds a record that does not verify; the Raft loop stopped (replace this data dir)']);
    await assert.rejects(node.propose({ op: 'put', key: enc.encode('after'), value: enc.encode('v') }), /the node failed/);
  });

  it('control: the same node with a readable state snapshots and keeps running', async () => {
    const { node, errors } = await start();
    await writeUntil(node, () => node.status().snapshotIndex >= 8);
    assert.ok(node.status().snapshotIndex >= 8, `snapshot index ${node.status().snapshotIndex}`);
    assert.equal(node.failed(), null);
    assert.deepEqual(errors, []);
  });
});
