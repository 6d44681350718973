/**
 * Fault draws per site (draw-sites.ts): on the simulator's disks and network, calls of one kind more or less (what a
 * change to the real node does: a disk call added, a message more) move no draw of any other kind. Before, every
 * fault came from one stream per disk and one for the whole network, so one call more shifted every later draw and
 * the pinned regression seeds of sim.spec.ts stopped drawing what they were pinned for.
 */
import assert from 'node:assert/strict';

import type { Message } from '../../src/raft/types.js';
import { MemoryDataDir } from '../../src/storage/memory-storage.js';
import { MemorySnapshotIo } from '../../src/snapshot/memory-snapshot-io.js';
import { SeededRng } from '../harness/rng.js';
import { NodeClock, SimClock } from './sim-clock.js';
import { NO_SNAPSHOT_DISK_FAULTS, SimSnapshotIo } from './sim-snapshot-io.js';
import { NO_DISK_FAULTS, SimStorage, type DiskObserver } from './sim-storage.js';
import { SimNetwork } from './sim-network.js';

const SEEDS = [1, 2, 3, 4, 5, 6, 7, 8];
const quiet: DiskObserver = { onSave: () => undefined, onCompact: () => undefined, onStateWrite: () => undefined, onStateHash: () => undefined, onInstall: () => undefined };
const outcome = (p: Promise<unknown>): Promise<string> =>
  p.then(
    () => 'ok',
    (e: unknown) => String((e as Error).message).replace(/^.*(EIO|ENOSPC|refused).*$/s, '$1'),
  );

describe('sim: fault draws per site (draw-sites.ts)', () => {
  it('SimStorage: state writes in between do not move the faults the log saves draw', async () => {
    /** saves: the outcome of 12 saves on a disk failing 30% of its writes, with `stateWrites` state writes before each. */
    const saves = async (seed: number, stateWrites: number): Promise<string[]> => {
      const s = await SimStorage.open(new MemoryDataDir('n1'), {
        observer: quiet,
        clock: new NodeClock(new SimClock()),
        faults: { ...NO_DISK_FAULTS, writeErrorChance: 0.3 },
        rng: new SeededRng(seed).fork('disk/n1/1'),
        mayFail: () => true,
      });
      const out: string[] = [];
      for (let i = 1; i <= 12; i++) {
        for (let w = 0; w < stateWrites; w++) await outcome(s.write({ writes: [{ key: Buffer.from(`k${w}`), value: Buffer.from('v') }], appliedIndex: 0 }));
        out.push(await outcome(s.save({ entries: [{ index: i, term: 1, type: 'normal', data: Buffer.from(`e${i}`) }] })));
      }
      return out;
    };
    let faulted = 0;
    for (const seed of SEEDS) {
      const alone = await saves(seed, 0);
      if (alone.includes('EIO')) faulted++;
      assert.deepEqual(await saves(seed, 2), alone, `seed ${seed}`);
    }
    assert.ok(faulted > 0, 'some save drew a fault');
  });

  it('SimSnapshotIo: reads of meta.json and directory listings in between do not move the faults an archive\'s writes draw', async () => {
    /** writes: the outcome of 20 writes to an archive on a disk failing 30% of its calls, with `reads` opens of meta.json and listings before each. */
    const writes = async (seed: number, reads: number): Promise<string[]> => {
      const disk = new MemorySnapshotIo();
      const faults = { ...NO_SNAPSHOT_DISK_FAULTS };
      const io = new SimSnapshotIo(disk, 'n1', faults, new SeededRng(seed).fork('snapdisk/n1/1'), () => true);
      await io.mkdir('/s/1', { recursive: true });
      await (await io.open('/s/1/meta.json', 'w')).close();
      const file = await io.open('/s/1/archive.tar.gz', 'w');
      Object.assign(faults, { snapErrorChance: 0.3 });
      const out: string[] = [];
      for (let i = 0; i < 20; i++) {
        for (let r = 0; r < reads; r++) {
          await outcome(io.open('/s/1/meta.json', 'r').then((h) => h.close()));
          await outcome(io.readdir('/s'));
        }
        out.push(await outcome(file.write(Buffer.from('x'), 0, 1, null)));
      }
      return out;
    };
    let faulted = 0;
    for (const seed of SEEDS) {
      const alone = await writes(seed, 0);
      if (alone.includes('EIO')) faulted++;
      assert.deepEqual(await writes(seed, 1), alone, `seed ${seed}`);
    }
    assert.ok(faulted > 0, 'some write drew a fault');
  });

  it('SimNetwork: heartbeats in between do not move the drops, delays and duplicates of the appends on the link, nor the messages on other links', async () => {
    /** arrivals: when each append n1 -> n2 and each vote n3 -> n2 arrived, with `heartbeats` heartbeats n1 -> n2 sent before each append. */
    const arrivals = async (seed: number, heartbeats: number): Promise<string[]> => {
      const clock = new SimClock();
      const net = new SimNetwork(clock, new SeededRng(seed).fork('net'), {
        latencyMinMs: 1,
        latencyMaxMs: 20,
        dropChance: 0.2,
        dupChance: 0.2,
        reorderChance: 0.2,
        reorderMaxMs: 50,
        imageFlipChance: 0,
      });
      const got: string[] = [];
      const handler = (id: string) => ({
        handleRequest: (m: Message) => {
          if (m.type !== 'heartbeat') got.push(`${m.type} ${m.from}>${id} ${m.type === 'append' ? m.commit : m.term} at ${clock.nowMs()}`);
          return Promise.resolve([]);
        },
        handleReport: () => undefined,
        receive: () => undefined,
      });
      const n1 = net.attach('n1', 1, handler('n1'));
      net.attach('n2', 1, handler('n2'));
      const n3 = net.attach('n3', 1, handler('n3'));
      for (let i = 1; i <= 30; i++) {
        for (let h = 0; h < heartbeats; h++) n1.send({ type: 'heartbeat', from: 'n1', to: 'n2', term: 1, commit: i, readSeq: 0 });
        n1.send({ type: 'append', from: 'n1', to: 'n2', term: 1, prevLogIndex: 0, prevLogTerm: 0, entries: [], commit: i });
        n3.send({ type: 'vote', from: 'n3', to: 'n2', term: i, lastLogIndex: 0, lastLogTerm: 0, preVote: false, transfer: false });
      }
      while (clock.fireNext(10_000)) await Promise.resolve();
      return got.sort();
    };
    for (const seed of SEEDS) assert.deepEqual(await arrivals(seed, 2), await arrivals(seed, 0), `seed ${seed}`);
  });
});
