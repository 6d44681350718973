/**
 * Three real `serve` processes with TLS on every plane (certificates from
 * `snapcoord certs`'s library), keys on every call: what a client can and
 * cannot do, and a hostile 60 MiB message that must not grow the node.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { ClusterClient } from '../../src/client/cluster-client.js';
import { KvClient } from '../../src/client/kv-client.js';
import { Role } from '../../src/gen/snapcoord/v1/cluster.js';
import { caFiles, channelCredentialsFromFiles, nodeCertFiles, writeCa, writeNodeCert } from '../../src/tls/index.js';
import { type NodeAddresses, peersFlag } from '../harness/ports.js';
import { startServes, type ServeProcess } from '../harness/serve-process.js';
import { until } from '../harness/until.js';

const IDS = ['t1', 't2', 't3'] as const;
const ADMIN = 'admin-key-for-the-trust-test-0123';
const READER = 'reader-key-for-the-trust-test-0123';
const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (m === null) throw new Error('no VmRSS');
  return Number(m[1]) * 1024;
}

describe('trust on real processes: TLS on both planes, keys on every call', function () {
  this.timeout(120_000);
  let dir: string;
  let addrs: Record<(typeof IDS)[number], NodeAddresses>;
  const procs: ServeProcess[] = [];
  let creds: grpc.ChannelCredentials;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'snapcoord-trust-'));
    const tls = join(dir, 'tls');
    await writeCa(tls);
    for (const id of IDS) await writeNodeCert(tls, id, { ips: ['127.0.0.1'], dns: ['localhost'] });
    const ca = caFiles(tls).caFile;
    creds = channelCredentialsFromFiles({ caFile: ca });
    const started = await startServes(IDS, (id, a) => {
      const f = nodeCertFiles(tls, id);
      return {
        id,
        grpc: a[id].grpc,
        peer: a[id].peer,
        peers: peersFlag(a),
        http: a[id].http,
        dataDir: join(dir, id),
        apiKey: ADMIN,
        extra: [
          '--api-keys',
          JSON.stringify([{ key: READER, actions: ['kv.read'] }]),
          '--peer-cert',
          f.certFile,
          '--peer-key',
          f.keyFile,
          '--peer-ca',
          ca,
          '--cert',
          f.certFile,
          '--key',
          f.keyFile,
        ],
      };
    });
    addrs = started.addrs;
    procs.push(...Object.values<ServeProcess>(started.procs));
    await until('a leader over TLS', 30_000, async () => {
      const c = new ClusterClient(addrs.t1.grpc, { credentials: creds, apiKey: ADMIN });
      try {
        const st = await c.status({ deadlineMs: 1_000 });
        return st.leaderId !== '' && st.leaderClientAddress !== '' ? st : undefined;
      } finally {
        c.close();
      }
    });
  });

  after(async () => {
    await Promise.all(procs.map((p) => p.kill('SIGTERM')));
    await rm(dir, { recursive: true, force: true });
  });

  async function leaderId(): Promise<string> {
    const c = new ClusterClient(addrs.t1.grpc, { credentials: creds, apiKey: ADMIN });
    try {
      return (await c.status({ deadlineMs: 2_000 })).leaderId;
    } finally {
      c.close();
    }
  }

  it('a write through a follower is forwarded to the leader over TLS with the caller\'s key; every node reads it', async () => {
    const leader = await leaderId();
    const follower = IDS.find((id) => id !== leader) as (typeof IDS)[number];
    const kv = new KvClient(addrs[follower].grpc, { credentials: creds, apiKey: ADMIN });
    try {
      const res = await kv.put({ key: enc('trust'), value: enc('yes') }, { deadlineMs: 10_000 });
      assert.ok((res.header?.revision ?? 0n) > 0n);
    } finally {
      kv.close();
    }
    for (const id of IDS) {
      const r = new KvClient(addrs[id].grpc, { credentials: creds, apiKey: READER });
      try {
        const got = await r.get({ key: enc('trust') }, { deadlineMs: 10_000 });
        assert.equal(new TextDecoder().decode(got.kv?.value ?? new Uint8Array()), 'yes', id);
      } finally {
        r.close();
      }
    }
  });

  it('plaintext, no key, a wrong key, a weaker key: each refused with its own status, nothing written', async () => {
    const attempts: [string, KvClient, grpc.status][] = [
      ['plaintext', new KvClient(addrs.t1.grpc, { apiKey: ADMIN }), grpc.status.UNAVAILABLE],
      ['no key', new KvClient(addrs.t1.grpc, { credentials: creds }), grpc.status.UNAUTHENTICATED],
      ['wrong key', new KvClient(addrs.t1.grpc, { credentials: creds, apiKey: 'not-a-key-of-this-cluster-000' }), grpc.status.UNAUTHENTICATED],
      ['reader key', new KvClient(addrs.t1.grpc, { credentials: creds, apiKey: READER }), grpc.status.PERMISSION_DENIED],
    ];
    for (const [what, kv, code] of attempts) {
      try {
        await assert.rejects(kv.put({ key: enc('forbidden'), value: enc(what) }, { deadlineMs: 5_000 }), (err: grpc.ServiceError) => {
          assert.equal(err.code, code, `${what}: ${err.message}`);
          return true;
        });
      } finally {
        kv.close();
      }
    }
    const r = new KvClient(addrs.t2.grpc, { credentials: creds, apiKey: ADMIN });
    try {
      assert.equal((await r.get({ key: enc('forbidden') }, { deadlineMs: 5_000 })).kv, undefined);
    } finally {
      r.close();
    }
  });

  it('the peer port serves no client service, the client port no RaftService', async () => {
    const onPeer = new KvClient(addrs.t1.peer, { credentials: creds, apiKey: ADMIN });
    try {
      // No client certificate: the peer plane's mutual TLS refuses the handshake before any service is looked up.
      await assert.rejects(onPeer.get({ key: enc('x') }, { deadlineMs: 3_000 }), (err: grpc.ServiceError) => err.code === grpc.status.UNAVAILABLE);
    } finally {
      onPeer.close();
    }
  });

  it('sixteen 60 MiB client messages are refused RESOURCE_EXHAUSTED and the node does not grow', async () => {
    const pid = procs[0]?.proc.pid as number;
    const before = rssBytes(pid);
    const kv = new KvClient(addrs.t1.grpc, { credentials: creds, apiKey: ADMIN });
    const big = new Uint8Array(60 * 1024 * 1024);
    let peak = before;
    try {
      for (let i = 0; i < 16; i++) {
        await assert.rejects(kv.put({ key: enc(`big-${i}`), value: big }, { deadlineMs: 30_000 }), (err: grpc.ServiceError) => {
          assert.equal(err.code, grpc.status.RESOURCE_EXHAUSTED, err.message);
          return true;
        });
        peak = Math.max(peak, rssBytes(pid));
      }
    } finally {
      kv.close();
    }
    const grewMiB = (peak - before) / (1024 * 1024);
    // One such message held in memory would be 60 MiB; the node reads none of them whole.
    assert.ok(grewMiB < 48, `RSS grew by ${grewMiB.toFixed(1)} MiB (from ${(before / 1048576).toFixed(0)} MiB)`);
    const st = new ClusterClient(addrs.t1.grpc, { credentials: creds, apiKey: ADMIN });
    try {
      assert.notEqual((await st.status({ deadlineMs: 5_000 })).role, Role.ROLE_UNSPECIFIED);
    } finally {
      st.close();
    }
  });
});
