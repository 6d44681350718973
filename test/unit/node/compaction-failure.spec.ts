/**
 * A failed log compaction stops the node at once, as a failed save does: the
 * log store takes no write after a failed one (types.ts LogStore: RocksDB may
 * lose what follows it), so every later save would fail too. Before, the
 * failure was logged and the compaction retried, and a node with nothing to
 * save (an idle single node here, an idle leader) stayed up on a log that
 * could not take its next entry. A real Node on the in-memory twins, whose
 * data dir fails the compaction's write.
 */
import assert from 'node:assert/strict';

import { Node } from '../../../src/node/node.js';
import { DEFAULT_SNAPSHOT_POLICY, SnapshotManager } from '../../../src/node/snapshots.js';
import { systemClock } from '../../../src/node/clock.js';
import { cryptoRng } from '../../../src/node/crypto-rng.js';
import { MemorySnapshotIo } from '../../../src/snapshot/memory-snapshot-io.js';
import { MemoryDataDir, MemoryStorage } from '../../../src/storage/memory-storage.js';
import type { MessageSender } from '../../../src/node/node.js';
import { until } from '../../harness/until.js';

const quiet = { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined };
const none: MessageSender = { send: () => undefined, setPeers: () => undefined, close: async () => undefined };

describe('node: a failed log compaction', function () {
  this.timeout(20_000);

  it('stops the node at once (its failure set, writes refused), with nothing else to save', async () => {
    const dir = new MemoryDataDir('n1');
    const storage = await MemoryStorage.open(dir);
    const snapshots = await SnapshotManager.open(
      '/n1/snapshots',
      storage,
      { ...DEFAULT_SNAPSHOT_POLICY, snapshotEntries: 1_000_000, trailingEntries: 0, retain: 2 },
      quiet,
      'test',
      systemClock,
      new MemorySnapshotIo(),
    );
    const node = await Node.start({
      id: 'n1',
      storage,
      transport: none,
      initialMembership: { voters: ['n1'], learners: [], addresses: { n1: 'mem:n1' } },
      snapshots,
      timings: { tickMs: 10, electionTimeoutTicks: 10, heartbeatIntervalTicks: 2 },
      clock: systemClock,
      rng: cryptoRng,
      logger: quiet,
    });
    try {
      await until('n1 leads', 5_000, () => (node.brief().role === 'leader' ? true : undefined));
      for (let i = 0; i < 12; i++) await node.propose({ op: 'put', key: new TextEncoder().encode(`k/${i}`), value: new Uint8Array([i]) });
      // A snapshot taken now; its compaction of the log fails. Nothing is proposed after it.
      dir.logWriteFault = (operation) => (operation === 'compact' ? new Error('EIO: i/o error, compact') : null);
      await node.snapshotNow().catch(() => undefined);
      await until('the node to fail on the compaction', 5_000, () => node.failed() ?? undefined);
      assert.match(node.failed()?.message ?? '', /EIO: i\/o error, compact/);
      await assert.rejects(node.propose({ op: 'put', key: new TextEncoder().encode('after'), value: new Uint8Array([1]) }), /the node failed/);
    } finally {
      await node.stop().catch(() => undefined);
    }
  });
});
