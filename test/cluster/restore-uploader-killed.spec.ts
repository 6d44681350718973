/**
 * The uploader is killed right after the restore commits (issue 14 item 3),
 * on three real `snapcoord serve` processes: an archive is restored through
 * the leader's gateway (PUT /v1/operator/snapshot) and the leader gets SIGKILL
 * as soon as a follower sees the restore entry committed, or the restore
 * returns, whichever comes first (so the followers have had no time to fetch
 * the archive when they learn of the entry). The two survivors elect a leader, apply the
 * restore (each holds exactly the archive's state: the leader staged the
 * archive on a quorum before proposing the entry, so its disk is not needed)
 * and accept new writes.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { ClusterClient } from '../../src/client/cluster-client.js';
import { KvClient } from '../../src/client/kv-client.js';
import { goodEntries, rawState, tarGz } from '../unit/snapshot/helpers.js';
import { httpPut as put } from '../harness/http-put.js';
import { type NodeAddresses, peersFlag } from '../harness/ports.js';
import { startServes, type ServeProcess } from '../harness/serve-process.js';
import { until } from '../harness/until.js';

const enc = new TextEncoder();
const dec = new TextDecoder();
const IDS = ['n1', 'n2', 'n3'] as const;
type Id = (typeof IDS)[number];

/** RECORDS / VALUE_BYTES: the archive's state (~16 MB of incompressible values). */
const RECORDS = 8_000;
const VALUE_BYTES = 2_048;


describe('cluster: the uploader is killed right after the restore commits', function () {
  this.timeout(240_000);
  let dir = '';
  let addrs: Record<Id, NodeAddresses>;
  const procs = new Map<Id, ServeProcess>();
  const kv = new Map<Id, KvClient>();
  const cluster = new Map<Id, ClusterClient>();

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'snapcoord-restore-killed-'));
    const started = await startServes(IDS, (id, all) => ({ id, grpc: all[id].grpc, peer: all[id].peer, http: all[id].http, peers: peersFlag(all), dataDir: join(dir, id) }));
    addrs = started.addrs;
    for (const id of IDS) {
      procs.set(id, started.procs[id]);
      kv.set(id, new KvClient(addrs[id].grpc));
      cluster.set(id, new ClusterClient(addrs[id].grpc));
    }
  });

  after(async () => {
    for (const c of [...kv.values(), ...cluster.values()]) c.close();
    await Promise.all([...procs.values()].map((p) => p.kill('SIGTERM')));
    await rm(dir, { recursive: true, force: true });
  });

  /** leaderAmong: the id of the node that `ids` agree leads (asked of each; bounded). */
  async function leaderAmong(ids: readonly Id[], timeoutMs: number): Promise<Id> {
    return until(`a leader among ${ids.join(', ')}`, timeoutMs, async () => {
      for (const id of ids) {
        const st = await (cluster.get(id) as ClusterClient).status({ deadlineMs: 2_000 });
        if (st.leaderId !== '' && (ids as readonly string[]).includes(st.leaderId) && st.leaderId === id) return id;
      }
      return undefined;
    });
  }

  it('the two survivors elect a leader, apply the restore (the archive\'s exact state) and accept new writes', async () => {
    const leader = await leaderAmong(IDS, 30_000);
    // State that the restore must replace.
    for (let i = 0; i < 50; i++) {
      await (kv.get(leader) as KvClient).put({ key: enc.encode(`pre/${i}`), value: enc.encode('before the restore') }, { deadlineMs: 5_000 });
    }
    const records = Array.from({ length: RECORDS }, (_, i) => ({ key: `k/${String(i).padStart(6, '0')}`, value: randomBytes(VALUE_BYTES) }));
    const archive = await tarGz(goodEntries(rawState(records), RECORDS).entries);

    const survivors = IDS.filter((id) => id !== leader);
    // Nothing else writes: the restore entry is the next one after the leader's commit index.
    const restoreIndex = Number((await (cluster.get(leader) as ClusterClient).status({ deadlineMs: 2_000 })).commitIndex) + 1;
    let uploaded = false;
    const upload = put(addrs[leader].http, '/v1/operator/snapshot', archive).then(
      (res) => {
        uploaded = true;
        return res;
      },
      (err: unknown) => ({ status: 0, text: String(err) }), // the leader may die before it answers
    );
    // The entry is committed once a follower learns it is: kill the uploader then, or when the restore returns.
    let committedSeen = false;
    while (!uploaded && !committedSeen) {
      for (const id of survivors) {
        const st = await (cluster.get(id) as ClusterClient).status({ deadlineMs: 1_000 }).catch(() => null);
        if (st !== null && Number(st.commitIndex) >= restoreIndex) committedSeen = true;
      }
    }
    await (procs.get(leader) as ServeProcess).kill('SIGKILL');
    const res = await upload;
    if (!committedSeen) assert.equal(res.status, 200, `restore: ${res.status} ${res.text}`);

    const next = await leaderAmong(survivors, 30_000);
    for (const id of survivors) {
      const c = kv.get(id) as KvClient;
      // Every record of the archive, nothing else (the pre/ keys are gone), read locally on each survivor.
      await until(`${id} to hold the archive's state`, 60_000, async () => {
        const got = { kvs: [] as { key: Uint8Array; value: Uint8Array }[] };
        for await (const page of c.rangePages({ start: enc.encode(''), serializable: true }, 10_000, { deadlineMs: 5_000 })) got.kvs.push(...page.kvs);
        if (got.kvs.length !== RECORDS) return undefined;
        return got.kvs.every((kvp, i) => dec.decode(kvp.key) === records[i]?.key && Buffer.from(kvp.value).equals(records[i]?.value ?? Buffer.alloc(0))) ? true : undefined;
      });
    }
    // The same state hash on both, once both applied the same index.
    await until('the survivors to agree on the state hash', 30_000, async () => {
      const [a, b] = await Promise.all(survivors.map((id) => (cluster.get(id) as ClusterClient).hashState({ deadlineMs: 5_000 })));
      return a !== undefined && b !== undefined && a.appliedIndex === b.appliedIndex && a.sha256 === b.sha256 ? true : undefined;
    });
    // New writes are accepted and reach both survivors.
    await until('a write after the restore', 30_000, async () => {
      await (kv.get(next) as KvClient).put({ key: enc.encode('after/1'), value: enc.encode('x') }, { deadlineMs: 3_000 });
      return true;
    });
    for (const id of survivors) {
      const r = await (kv.get(id) as KvClient).get({ key: enc.encode('after/1'), serializable: false }, { deadlineMs: 10_000 });
      assert.equal(dec.decode(r.kv?.value), 'x', id);
    }
    for (const id of survivors) {
      const p = procs.get(id) as ServeProcess;
      assert.ok(p.running, `${id} is up:\n${p.lastLines()}`);
      const bad = /.*(node failed|restore failed to apply).*/.exec(p.output);
      assert.equal(bad, null, `${id}: ${bad?.[0] ?? ''}`);
    }
  });
});
