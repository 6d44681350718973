/**
 * Starting from a snapshot, as an operator does after a disaster: a new
 * cluster whose first node is given --import-snapshot FILE, and a node
 * started with --data-dir on a directory written by a Typesense-style
 * directory snapshot. Real `serve` processes, ports from the OS.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { KvClient } from '../../src/client/kv-client.js';
import { SnapshotClient } from '../../src/client/snapshot-client.js';
import type { GetSnapshotResponse } from '../../src/gen/snapcoord/v1/snapshot.js';
import { type NodeAddresses, peersFlag } from '../harness/ports.js';
import { ServeProcess, startServes } from '../harness/serve-process.js';
import { until } from '../harness/until.js';

const enc = new TextEncoder();
const dec = new TextDecoder();


async function putAll(kv: KvClient, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    await until('a write', 20_000, async () => {
      await kv.put({ key: enc.encode(`k/${i}`), value: enc.encode(`v${i}`) }, { deadlineMs: 3_000 });
      return true;
    });
  }
}

async function dump(kv: KvClient): Promise<string[]> {
  const r = await kv.range({ prefix: enc.encode('k/'), limit: 1000 }, { deadlineMs: 3_000 });
  return r.kvs.map((x) => `${dec.decode(x.key)}=${dec.decode(x.value)}`);
}

describe('cluster: starting from a snapshot', function () {
  this.timeout(180_000);
  let dir = '';
  const procs: ServeProcess[] = [];
  const clients: { close(): void }[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'snapcoord-start-from-'));
  });

  after(async () => {
    for (const c of clients) c.close();
    await Promise.all(procs.map((p) => p.kill('SIGKILL')));
    await rm(dir, { recursive: true, force: true });
  });

  /** startCluster starts `ids` and returns each node's client (grpc) address; `planes` gets both of each node's addresses. */
  const startCluster = async (
    name: string,
    ids: string[],
    extraFor: (id: string) => string[] = () => [],
    planes: Record<string, NodeAddresses> = {},
  ): Promise<Record<string, string>> => {
    const s = await startServes(ids, (id, all) => ({
      id,
      grpc: all[id]?.grpc ?? '',
      peer: all[id]?.peer ?? '',
      peers: peersFlag(all),
      dataDir: join(dir, name, id),
      extra: ['--snapshot-root', join(dir, 'roots'), ...extraFor(id)],
    }));
    procs.push(...ids.map((id) => s.procs[id] as ServeProcess));
    Object.assign(planes, s.addrs);
    return Object.fromEntries(ids.map((id) => [id, s.addrs[id]?.grpc ?? '']));
  };

  it('--import-snapshot on the first node of a new cluster restores the archive on every member', async () => {
    const a = await startCluster('a', ['n1', 'n2', 'n3']);
    const kvA = new KvClient(a.n1 ?? '');
    clients.push(kvA);
    await putAll(kvA, 25);
    const saved = await dump(kvA);
    // Save the archive with GetSnapshot.
    const snap = new SnapshotClient(a.n2 ?? '');
    clients.push(snap);
    const parts: Buffer[] = [];
    for await (const m of snap.getSnapshot(false) as AsyncIterable<GetSnapshotResponse>) if (m.data !== undefined) parts.push(Buffer.from(m.data));
    const file = join(dir, 'backup.tgz');
    await writeFile(file, Buffer.concat(parts));

    const b = await startCluster('b', ['m1', 'm2', 'm3'], (id) => (id === 'm1' ? ['--import-snapshot', file] : []));
    for (const id of ['m1', 'm2', 'm3']) {
      const kv = new KvClient(b[id] ?? '');
      clients.push(kv);
      await until(`${id} to hold the imported state`, 30_000, async () => ((await dump(kv)).length === saved.length ? true : undefined));
      assert.deepEqual(await dump(kv), saved);
    }
  });

  it('a node started with --data-dir on a Typesense-style snapshot directory serves the saved state', async () => {
    const planes: Record<string, NodeAddresses> = {};
    const c = await startCluster('c', ['t1', 't2', 't3'], () => [], planes);
    const kv = new KvClient(c.t1 ?? '');
    clients.push(kv);
    await putAll(kv, 10);
    const saved = await dump(kv);
    const snap = new SnapshotClient(c.t2 ?? '');
    clients.push(snap);
    const target = join(dir, 'roots', 'typesense-style');
    // A directory snapshot is of the node's own applied state (Typesense's habit): wait until t2 has applied every write.
    const kvT2 = new KvClient(c.t2 ?? '');
    clients.push(kvT2);
    await until('t2 to apply every write', 20_000, async () => {
      const r = await kvT2.range({ prefix: enc.encode('k/'), limit: 1000, serializable: true }, { deadlineMs: 3_000 });
      return r.kvs.length === saved.length ? true : undefined;
    });
    await until('the directory snapshot', 20_000, () => snap.createSnapshot({ directory: target }));
    // Start a one-node cluster from the directory: same node id and addresses as the member it was taken on.
    const t2 = procs.find((p) => p.args.id === 't2');
    await t2?.kill('SIGKILL');
    const t2Peer = planes['t2']?.peer ?? '';
    const p = new ServeProcess({ id: 't2', grpc: c.t2 ?? '', peer: t2Peer, peers: `t2=${t2Peer}`, dataDir: target });
    procs.push(p);
    await p.ready();
    const kv2 = new KvClient(c.t2 ?? '');
    clients.push(kv2);
    await until('the restored node to lead and serve', 20_000, async () => ((await dump(kv2)).length === saved.length ? true : undefined)).catch((err: Error) => {
      throw new Error(`${err.message}\n${p.lastLines()}`);
    });
    assert.deepEqual(await dump(kv2), saved);
    await kv2.put({ key: enc.encode('k/after'), value: enc.encode('x') }, { deadlineMs: 5_000 });
  });
});
