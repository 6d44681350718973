/**
 * The compaction guard of a follower's snapshot install on real nodes (issue
 * 14 item 5; Typesense #2859, etcd #5317): a follower installing a large
 * snapshot (its install slowed down) under steady writes catches up with one
 * install, and a leader change in the middle of that install neither restarts
 * it nor strands it: the new leader learns of the install and keeps the
 * entries after it while it snapshots and compacts.
 */
import assert from 'node:assert/strict';
import { sep } from 'node:path';

import type { Node } from '../../../src/node/node.js';
import { SnapshotManager } from '../../../src/node/snapshots.js';
import type { StoredSnapshot } from '../../../src/snapshot/index.js';
import { RocksCluster } from './rocks-cluster.js';
import { until } from '../../harness/until.js';

const enc = new TextEncoder();
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** INSTALL_HOLD_MS_MAX: the longest the test holds the follower's install open (the RocksDB write of a big state). */
const INSTALL_HOLD_MS_MAX = 60_000;

describe('snapshot install guard on real nodes (issue 14 item 5)', function () {
  this.timeout(420_000);
  let c: RocksCluster;
  const originalInstall = SnapshotManager.prototype.install;

  afterEach(async function () {
    SnapshotManager.prototype.install = originalInstall;
    // A failure prints what each member logged last (the node, its snapshots and transport), to see where it stuck.
    if (this.currentTest?.state === 'failed' && c !== undefined) {
      for (const m of c.members) console.error(`--- ${m.id}'s last log lines:\n${c.recentLog(m.id, 60)}`);
    }
    await c?.close();
  });

  // This spec was skipped for a while: in the whole suite the restarted follower sometimes never began installing. The
  // cause was a liveness bug, now fixed and tested on its own (offered-snapshot.spec.ts): with snapshots every 300
  // entries the leader removed the snapshot it had offered (retain 2) before the follower's fetch began, offered its
  // newest, and so on for ever. The guard itself is also tested deterministically on the core (snapshot-guard.spec.ts).
  it('a follower installing a large snapshot under steady writes catches up; a leader change mid-install does not restart it', async () => {
    c = await RocksCluster.start(3, { snapshotEntries: 300, trailingEntries: 20, chunkBytes: 256 * 1024 });
    const first = await c.waitForLeader();
    const f = c.members.find((m) => m.node !== first)?.id as string;
    let t: string | undefined;
    const leaderNow = (): Node | undefined => c.members.map((m) => m.node).find((n) => n?.status().role === 'leader') ?? undefined;
    // A write through whoever leads now, again after a refusal (an election under load): puts of the same value, so
    // a retry of one that did apply changes nothing. Bounded.
    const put = async (key: string, value: Uint8Array): Promise<void> => {
      for (let attempt = 1; ; attempt++) {
        try {
          await (leaderNow() ?? first).propose({ op: 'put', key: enc.encode(key), value });
          return;
        } catch (err) {
          if (attempt >= 100) throw err;
          await sleep(20);
        }
      }
    };
    await c.stop(f);
    // A state of a few MB; the leader snapshots and compacts far past what f holds.
    const value = enc.encode('v'.repeat(1024));
    for (let i = 0; i < 4_000; i += 50) {
      await Promise.all(Array.from({ length: 50 }, (_, j) => put(`big/${String(i + j).padStart(5, '0')}`, value)));
    }
    // Both running members compact past f's log: were only the leader to, a leader change (an election under load)
    // would give f a leader whose log still holds what f lacks, and f would catch up from it with no install.
    await until('both running members to compact', 60_000, () =>
      c.members.every((m) => m.id === f || (c.node(m.id).status().firstIndex > 1_000)) ? true : undefined,
    );

    // f's installs are held open until the test has checked the guard (a gate, not a fixed delay: on a loaded machine
    // the checks below can take longer than any fixed delay), at most INSTALL_HOLD_MS_MAX; counted, to see there is one.
    let releaseInstall = (): void => undefined;
    const installGate = new Promise<void>((resolve) => {
      releaseInstall = resolve;
      setTimeout(resolve, INSTALL_HOLD_MS_MAX).unref();
    });
    const installs: number[] = [];
    SnapshotManager.prototype.install = async function (this: SnapshotManager, s: StoredSnapshot): Promise<void> {
      if (this.store.dir.includes(`${sep}${f}${sep}`)) {
        installs.push(s.meta.index);
        await installGate;
      }
      return originalInstall.call(this, s);
    };

    // Steady writes through whoever leads, all along.
    let stop = false;
    let written = 0;
    const writer = (async () => {
      for (let i = 0; !stop; i++) {
        const l = leaderNow();
        try {
          if (l === undefined) throw new Error('no leader');
          await l.propose({ op: 'put', key: enc.encode(`w/${i}`), value: enc.encode(String(i)) });
          written++;
        } catch {
          await sleep(10);
        }
      }
    })();

    try {
      await c.restart(f);
      const fn = c.node(f);
      await until(`${f} to begin installing`, 60_000, () => (installs.length > 0 ? true : undefined)).catch((err: Error) => {
        const st = c.members.map((m) => m.node && { s: m.node.status(), snap: m.node.snapshotStats }).map((x) => x && { id: x.s.id, role: x.s.role, leader: x.s.leader, term: x.s.term, commit: x.s.commit, first: x.s.firstIndex, applied: x.s.applied, snap: x.s.snapshotIndex, installing: x.s.installingSnapshot, stats: x.snap });
        throw new Error(`${err.message}; members: ${JSON.stringify(st)}; leader's progress: ${JSON.stringify(leaderNow()?.status().progress)}`);
      });
      const s = installs[0] as number;
      assert.equal(fn.status().installingSnapshot, s, `${f} says it installs ${s}`);

      // Mid-install, leadership moves to t: the running member that does not lead now.
      const l = await until('a leader', 30_000, leaderNow);
      t = c.members.find((m) => m.id !== f && m.node !== l)?.id as string;
      await l.transferLeadership(t);
      const tn = c.node(t);
      await until(`${t} to learn of the install`, 30_000, () => (tn.status().progress[f]?.installGuard === s ? true : undefined));
      // t snapshots (and would compact) while f installs and writes go on: it keeps what f needs next.
      const before = written;
      await until('more writes', 60_000, () => (written > before + 200 ? true : undefined));
      await tn.snapshotNow();
      assert.ok(tn.status().snapshotIndex > s + 100, `${t} has a newer snapshot`);
      assert.ok(tn.status().firstIndex <= s + 1, `${t} kept entry ${s + 1} (its first index is ${tn.status().firstIndex})`);
      assert.equal(fn.status().installingSnapshot, s, 'the install goes on');
      releaseInstall();

      // f finishes the install it started and catches up from t's log, with writes still coming.
      await until(`${f} to finish installing`, 60_000, () => (fn.snapshotStats.installed > 0 ? true : undefined));
      const mark = written;
      await until(`${f} to catch up under writes`, 60_000, () => (written > mark + 100 && fn.status().applied >= tn.status().commit - 50 ? true : undefined));
    } finally {
      releaseInstall();
      stop = true;
      await writer;
    }
    const fn = c.node(f);
    const tn = c.node(t);
    await until(`${f} to apply everything`, 60_000, () => (fn.status().applied >= tn.status().commit && tn.status().applied >= tn.status().commit ? true : undefined));
    assert.deepEqual(installs, [installs[0]], 'one install, never restarted');
    assert.equal(fn.snapshotStats.installed, 1);
    assert.equal(await c.member(f).storage?.stateDigest(), await c.member(t).storage?.stateDigest());
  });
});
