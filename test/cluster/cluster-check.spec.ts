/**
 * Cluster-wide consistency check (issue 19 part 4) on three real `serve`
 * processes: `snapcoord cluster check` finds every member equal; then one
 * replica's state is altered behind its node's back (a key written straight
 * into its RocksDB while it is stopped) and `cluster check` names it, and
 * the leader's --consistency-check-interval raises the metric and logs it.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { checkConsistency, type MemberHasher } from '../../src/ops/consistency.js';
import { ClusterClient } from '../../src/client/cluster-client.js';
import { KvClient } from '../../src/client/kv-client.js';
import type { StatusResponse } from '../../src/gen/snapcoord/v1/cluster.js';
import { sealRecord } from '../../src/storage/record-checksum.js';
import { RocksDb } from '../../src/storage/rocks.js';
import { Child, plaintextClientEnv } from '../harness/child.js';
import { type NodeAddresses, peersFlag } from '../harness/ports.js';
import { ServeProcess, startServes, type ServeArgs, type StartedServes } from '../harness/serve-process.js';
import { until } from '../harness/until.js';

function httpGet(address: string, path: string): Promise<string> {
  const at = address.lastIndexOf(':');
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: address.slice(0, at), port: Number(address.slice(at + 1)), path }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve(body));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

async function runCli(args: string[]): Promise<{ code: number | null; out: string }> {
  const c = new Child(args, plaintextClientEnv());
  await c.exited;
  return { code: c.exitCode, out: c.output };
}

describe('agent: cluster check', function () {
  this.timeout(120_000);

  it('checkConsistency: equal, one differing member named, a member that fails is named, writes moving the index are retried', async () => {
    const at = (id: string, sha: string, index: number | ((t: number) => number)): MemberHasher => ({
      id,
      hash: async (t) => ({ sha256: sha, index: typeof index === 'number' ? index : index(t) }),
    });
    const eq = await checkConsistency([at('a', 'h', 5), at('b', 'h', 5), at('c', 'h', 5)], 5);
    assert.deepEqual([eq.consistent, eq.index, eq.differing], [true, 5, []]);
    const one = await checkConsistency([at('a', 'h', 5), at('b', 'x', 5), at('c', 'h', 5)], 5);
    assert.deepEqual([one.consistent, one.index, one.differing], [false, 5, ['b']]);
    const down = await checkConsistency([at('a', 'h', 5), { id: 'b', hash: () => Promise.reject(new Error('unreachable')) }, at('c', 'h', 5)], 5);
    assert.deepEqual([down.consistent, down.divergent, down.differing, down.members[1]?.error], [false, false, ['b'], 'unreachable'], 'a member that does not answer is not divergent');
    assert.equal(one.divergent, true);
    // The first ask lands on different indexes (a write in between); the second, at the highest, agrees.
    const moving = await checkConsistency([at('a', 'h', (t) => Math.max(t, 6)), at('b', 'h', (t) => t), at('c', 'h', (t) => t)], 5);
    assert.deepEqual([moving.consistent, moving.index, moving.attempts], [true, 6, 2]);
    let n = 0;
    const never = await checkConsistency([at('a', 'h', () => ++n), at('b', 'h', () => 1000 + ++n)], 1, { attempts: 3 });
    assert.deepEqual([never.consistent, never.index, never.attempts], [false, 0, 3], 'inconclusive, not divergent');
    assert.deepEqual(never.differing, ['a'], 'the member behind is named');
  });

  it('cluster check names a replica altered behind its node\'s back; the leader\'s periodic check raises the metric', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'snapcoord-check-'));
    type Id = 'c1' | 'c2' | 'c3';
    const argsOf = (id: Id, a: Readonly<Record<Id, NodeAddresses>>): ServeArgs => ({
      id,
      grpc: a[id].grpc,
      peer: a[id].peer,
      peers: peersFlag(a),
      dataDir: join(dir, id),
      extra: ['--consistency-check-interval', '1', '--metrics-open', '--tick-ms', '20'],
    });
    let started: StartedServes<Id>;
    try {
      started = await startServes(['c1', 'c2', 'c3'], argsOf);
    } catch (err) {
      await rm(dir, { recursive: true, force: true });
      throw err;
    }
    const addrs = started.addrs;
    const procs = new Map<string, ServeProcess>(Object.entries(started.procs));
    /** start: a restart on the same addresses and data dir. */
    const start = async (id: Id): Promise<ServeProcess> => {
      const p = new ServeProcess(argsOf(id, addrs));
      procs.set(id, p);
      await p.ready();
      return p;
    };
    const kv = new KvClient(addrs.c1.grpc);
    const status = (id: 'c1' | 'c2' | 'c3'): Promise<StatusResponse> => {
      const c = new ClusterClient(addrs[id].grpc);
      return c.status().finally(() => c.close());
    };
    try {
      await until('a leader', 20_000, async () => ((await status('c1')).leaderId !== '' ? true : undefined));
      for (let i = 0; i < 20; i++) {
        await kv.put({ key: Buffer.from(`key-${i}`), value: Buffer.from(`value-${i}`) });
      }
      // Asked on a follower, which forwards the check to the leader (a follower need not know the other followers' client addresses).
      const leader0 = (await status('c1')).leaderId as 'c1' | 'c2' | 'c3';
      const follower = (['c1', 'c2', 'c3'] as const).find((id) => id !== leader0)!;
      const ok = await runCli(['cluster', 'check', '--endpoint', addrs[follower].grpc, '--json']);
      assert.equal(ok.code, 0, ok.out);
      const okJson = JSON.parse(ok.out.slice(ok.out.indexOf('{'))) as { consistent: boolean; index: number; members: { id: string; sha256: string }[] };
      assert.equal(okJson.consistent, true);
      assert.ok(okJson.index >= 20, String(okJson.index));
      assert.equal(new Set(okJson.members.map((m) => m.sha256)).size, 1);

      // Alter c3's state behind its back: stop it, write a key straight into its state database, start it again.
      const victim = 'c3';
      await procs.get(victim)!.kill('SIGTERM');
      const dataDir = join(dir, victim);
      const gen = (JSON.parse(await readFile(join(dataDir, 'STATE'), 'utf8')) as { generation: number }).generation;
      const db = await RocksDb.open(join(dataDir, `state-${gen}`), { createIfMissing: false });
      // A replica that diverged (a bug, not a damaged disk: the record's checksum is good, record-checksum.ts).
      const key = Buffer.concat([Buffer.of(0x6b), Buffer.from('key-7')]);
      await db.write([{ type: 'put', key, value: sealRecord(key, Buffer.from('tampered')) }], { sync: true });
      await db.close();
      await start(victim);

      // Until the leader's channel to the restarted c3 is back (exit 3 says a member did not answer), bounded.
      let bad = await runCli(['cluster', 'check', '--endpoint', addrs.c1.grpc]);
      for (let i = 0; i < 20 && bad.code === 3; i++) {
        await new Promise((r) => setTimeout(r, 1_000));
        bad = await runCli(['cluster', 'check', '--endpoint', addrs.c1.grpc]);
      }
      assert.equal(bad.code, 1, bad.out);
      assert.match(bad.out, /DIVERGENT at index \d+: c3 differs from the majority/);
      assert.match(bad.out, /c3\s+\d+\s+[0-9a-f]{64}\s+DIFFERS/);

      // The leader's periodic check (every second) logs it and counts it.
      const leader = (await status('c1')).leaderId as 'c1' | 'c2' | 'c3';
      const lp = procs.get(leader)!;
      await lp.waitFor(/consistency check: state diverges at index \d+: c3 differ/, 30_000);
      const http = (await lp.waitFor(/gateway listening on http (\S+)\n/))[1]!;
      const metrics = await httpGet(http, '/metrics');
      assert.match(metrics, /snapcoord_consistency_checks_total\{result="divergent"\} [1-9]/);
      assert.match(metrics, /snapcoord_consistency_divergent_members 1/);
    } finally {
      kv.close();
      for (const p of procs.values()) await p.kill('SIGKILL');
      await rm(dir, { recursive: true, force: true });
    }
  });
});
