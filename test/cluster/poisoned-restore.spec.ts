/**
 * Poisoned restores against three real `snapcoord serve` processes (issue 14,
 * item 2): archives whose every hash is right but whose state.bin is not a
 * valid state, uploaded with PUT /v1/operator/snapshot, are refused with 400
 * and a clear message before anything is proposed; every node stays up and
 * keeps accepting writes. The same archives are refused by `snapshot
 * restore` and `serve --import-snapshot` before they leave the file.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { KvClient } from '../../src/client/kv-client.js';
import { poisonedArchives, type PoisonedArchive } from '../unit/snapshot/helpers.js';
import { Child, cleanEnv } from '../harness/child.js';
import { httpPut as put } from '../harness/http-put.js';
import { freePorts, peersFlag } from '../harness/ports.js';
import { ServeProcess, startServes } from '../harness/serve-process.js';
import { sleep, until } from '../harness/until.js';

const enc = new TextEncoder();
const dec = new TextDecoder();
const IDS = ['n1', 'n2', 'n3'] as const;
type Id = (typeof IDS)[number];


describe('cluster: poisoned restores are refused, every node stays up', function () {
  this.timeout(180_000);
  let dir = '';
  const procs = new Map<Id, ServeProcess>();
  const http = new Map<Id, string>();
  const client = new Map<Id, string>();
  const kv = new Map<Id, KvClient>();
  let poisoned: PoisonedArchive[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'snapcoord-poisoned-'));
    poisoned = await poisonedArchives();
    // Each gateway on a port from the OS at bind time (http left out: 127.0.0.1:0), read from its output.
    const s = await startServes(IDS, (id, a) => ({ id, grpc: a[id].grpc, peer: a[id].peer, peers: peersFlag(a), dataDir: join(dir, id) }));
    for (const id of IDS) {
      procs.set(id, s.procs[id]);
      client.set(id, s.addrs[id].grpc);
    }
    for (const id of IDS) {
      const p = procs.get(id) as ServeProcess;
      const m = await p.waitFor(/gateway listening on http (\S+)/);
      http.set(id, m[1] as string);
      kv.set(id, new KvClient(client.get(id) as string));
    }
  });

  after(async () => {
    for (const k of kv.values()) k.close();
    await Promise.all([...procs.values()].map((p) => p.kill('SIGTERM')));
    await rm(dir, { recursive: true, force: true });
  });

  /** write puts key=value through `via`, retrying (bounded) while the cluster elects a leader. */
  const write = async (via: Id, key: string, value: string): Promise<void> => {
    await until(`a write of ${key} through ${via}`, 20_000, async () => {
      await (kv.get(via) as KvClient).put({ key: enc.encode(key), value: enc.encode(value) }, { deadlineMs: 3_000 });
      return true;
    });
  };

  it('PUT /v1/operator/snapshot answers 400 with the reason for each poisoned archive; every node stays up and takes writes', async () => {
    await write('n1', 'k/before', 'x');
    for (const [i, p] of poisoned.entries()) {
      const via = IDS[i % IDS.length] as Id;
      const res = await put(http.get(via) as string, '/v1/operator/snapshot', p.archive);
      assert.equal(res.status, 400, `${p.name} through ${via}: ${res.status} ${res.text}`);
      assert.match(res.text, /refused, nothing changed/, p.name);
      assert.match(res.text, p.message, p.name);
      for (const id of IDS) assert.ok((procs.get(id) as ServeProcess).running, `${p.name}: ${id} is up:\n${(procs.get(id) as ServeProcess).lastLines()}`);
      await write(IDS[(i + 1) % IDS.length] as Id, `k/after-${i}`, p.name);
    }
    // Nothing was restored: the writes are all there, read through every node.
    await sleep(200);
    for (const id of IDS) {
      const r = await (kv.get(id) as KvClient).get({ key: enc.encode('k/before'), serializable: false }, { deadlineMs: 5_000 });
      assert.equal(dec.decode(r.kv?.value), 'x', id);
      for (const id2 of IDS) assert.ok((procs.get(id2) as ServeProcess).running);
    }
    for (const p of procs.values()) assert.doesNotMatch(p.output, /node failed|restore failed to apply/);
  });

  it('`snapshot restore` refuses them before anything is sent; `serve --import-snapshot` refuses to start with one', async () => {
    const p = poisoned.find((x) => x.name === 'a duplicate key') as PoisonedArchive;
    const file = join(dir, 'poisoned.tar.gz');
    await writeFile(file, p.archive);
    const cli = new Child(['snapshot', 'restore', file, '--endpoint', client.get('n1') as string, '--plaintext'], cleanEnv());
    await cli.exited;
    assert.notEqual(cli.exitCode, 0, cli.output);
    assert.match(cli.output, p.message);
    const ports = await freePorts(3);
    const imp = new ServeProcess({
      id: 'm1',
      grpc: `127.0.0.1:${ports[0]}`,
      peers: `m1=127.0.0.1:${ports[1]}`,
      dataDir: join(dir, 'm1'),
      extra: ['--peer-listen', `127.0.0.1:${ports[1]}`, '--import-snapshot', file],
    });
    await imp.exited;
    assert.notEqual(imp.exitCode, 0, imp.output);
    assert.match(imp.output, p.message);
  });
});
