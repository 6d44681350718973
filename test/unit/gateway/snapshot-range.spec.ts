/**
 * Resumable snapshot downloads (issue 19 part 3) against a real node and its
 * real gateway on 127.0.0.1: GET /v1/operator/snapshot answers Accept-Ranges,
 * ETag (the digest), X-Snapcoord-Snapshot-Id; Range / If-Range give 206 / 416 /
 * 200; ?id= and ?index= pin one held archive; a download cut at random points
 * and resumed with ranges is byte-identical; `snapshot save` (saveSnapshot)
 * resumes a gRPC download cut by a proxy and checks the whole digest, and
 * has the disk write the archive while it downloads (fdatasync in the
 * background, the final fsync last).
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { open, readFile, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';

import { createGateway, type Gateway } from '../../../src/gateway/gateway.js';
import { parseRange } from '../../../src/gateway/nomad-routes.js';
import { saveSnapshot } from '../../../src/cli/snapshot-commands.js';
import { SnapshotNode, unaryCall } from '../api/snapshot-node.js';

interface Got {
  status: number;
  headers: IncomingMessage['headers'];
  body: Buffer;
  /** cut: the test destroyed the response after `cutAfter` bytes. */
  cut: boolean;
}

/** get issues GET http://address/path; with cutAfter it destroys the connection once that many body bytes arrived. */
function get(address: string, path: string, headers: Record<string, string> = {}, cutAfter = -1): Promise<Got> {
  const at = address.lastIndexOf(':');
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: address.slice(0, at), port: Number(address.slice(at + 1)), path, method: 'GET', headers, agent: false }, (res) => {
      const parts: Buffer[] = [];
      let n = 0;
      let cut = false;
      res.on('data', (c: Buffer) => {
        if (cut) return;
        if (cutAfter >= 0 && n + c.length >= cutAfter) {
          parts.push(c.subarray(0, cutAfter - n));
          n = cutAfter;
          cut = true;
          res.destroy();
          req.destroy();
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts), cut: true });
          return;
        }
        parts.push(c);
        n += c.length;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts), cut: false }));
      res.on('error', (e) => (cut ? undefined : reject(e)));
    });
    req.on('error', (e) => reject(e));
    req.end();
  });
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

describe('gateway: resumable snapshot downloads (Range, ETag, pinning)', function () {
  this.timeout(60_000);
  let sn: SnapshotNode;
  let gw: Gateway;
  let http = '';

  before(async () => {
    sn = await SnapshotNode.start();
    const kv = sn.kvClient();
    // ~3 MiB of incompressible values: an archive of several 1 MiB store pieces.
    for (let i = 0; i < 48; i++) await unaryCall(kv.put.bind(kv), { key: Buffer.from(`k${i}`), value: randomBytes(64 * 1024), prevKv: false, clientId: '', requestId: 0n });
    gw = createGateway({ target: sn.api.address, auth: { adminKey: '', insecureNoAuth: true } });
    http = await gw.listen('127.0.0.1:0');
    http = http.replace(/^https?:\/\//, '');
  });

  after(async () => {
    await gw?.close();
    await sn?.close();
  });

  it('parseRange: START- and START-END; suffix, several ranges, other units and END < START are ignored', () => {
    assert.deepEqual(parseRange('bytes=0-'), { start: 0, end: null });
    assert.deepEqual(parseRange('bytes=10-19'), { start: 10, end: 19 });
    assert.deepEqual(parseRange(' Bytes = 5 - '), { start: 5, end: null });
    assert.equal(parseRange('bytes=-100'), null);
    assert.equal(parseRange('bytes=0-1,5-9'), null);
    assert.equal(parseRange('items=0-1'), null);
    assert.equal(parseRange('bytes=9-3'), null);
    assert.equal(parseRange(undefined), null);
  });

  it('a whole download names its archive: Accept-Ranges, ETag = digest, id, size (chunked: no Content-Length)', async () => {
    const r = await get(http, '/v1/operator/snapshot');
    assert.equal(r.status, 200);
    assert.equal(r.headers['accept-ranges'], 'bytes');
    assert.equal(r.headers.etag, `"${sha(r.body)}"`);
    assert.equal(Number(r.headers['x-snapcoord-archive-bytes']), r.body.length);
    assert.equal(r.headers['content-length'], undefined, 'a 200 goes chunked so a bad digest can still cut it');
    assert.match(String(r.headers['x-snapcoord-snapshot-id']), /^\d{20}-\d{20}-\d+$/);
    assert.ok(r.body.length > 2 * 1024 * 1024, `archive of ${r.body.length} bytes`);
  });

  it('a download cut at random points and resumed with Range on the pinned id is byte-identical', async () => {
    const whole = await get(http, '/v1/operator/snapshot');
    const id = String(whole.headers['x-snapcoord-snapshot-id']);
    const etag = String(whole.headers.etag);
    // The state moves on (and a new snapshot is taken): the pinned archive is still the one served.
    const kv = sn.kvClient();
    await unaryCall(kv.put.bind(kv), { key: Buffer.from('moved-on'), value: Buffer.from('yes'), prevKv: false, clientId: '', requestId: 0n });
    await sn.node.snapshotNow();
    const fresh = await get(http, '/v1/operator/snapshot');
    assert.notEqual(fresh.headers.etag, etag, 'a fresh download is a new archive');

    const parts: Buffer[] = [];
    let have = 0;
    let cuts = 0;
    for (let round = 0; round < 50 && have < whole.body.length; round++) {
      const cutAfter = round < 6 ? 1 + Math.floor(Math.random() * 900_000) : -1;
      const r = await get(http, `/v1/operator/snapshot?id=${encodeURIComponent(id)}`, { range: `bytes=${have}-`, 'if-range': etag }, cutAfter);
      assert.equal(r.status, 206, `round ${round}`);
      assert.equal(r.headers.etag, etag);
      assert.equal(r.headers['content-range'], `bytes ${have}-${whole.body.length - 1}/${whole.body.length}`);
      parts.push(r.body);
      have += r.body.length;
      if (r.cut) cuts++;
    }
    assert.ok(cuts >= 1);
    const resumed = Buffer.concat(parts);
    assert.equal(resumed.length, whole.body.length);
    assert.ok(resumed.equals(whole.body), 'resumed download differs from the whole one');
    assert.equal(`"${sha(resumed)}"`, etag);
  });

  it('START-END gives exactly that range; ?index= pins too; a start at or past the end is 416 with bytes */SIZE', async () => {
    const whole = await get(http, '/v1/operator/snapshot');
    const index = String(whole.headers['x-nomad-index']);
    const r = await get(http, `/v1/operator/snapshot?index=${index}`, { range: 'bytes=100-1123' });
    assert.equal(r.status, 206);
    assert.equal(r.headers['content-length'], '1024');
    assert.ok(r.body.equals(whole.body.subarray(100, 1124)));
    const past = await get(http, `/v1/operator/snapshot?index=${index}`, { range: `bytes=${whole.body.length}-` });
    assert.equal(past.status, 416);
    assert.equal(past.headers['content-range'], `bytes */${whole.body.length}`);
    // Past the end (a client resuming into a longer file of another archive): 416 too, not the node's OUT_OF_RANGE as 400.
    for (const start of [whole.body.length + 1, whole.body.length + 10_000_000]) {
      for (const path of [`/v1/operator/snapshot?index=${index}`, '/v1/operator/snapshot']) {
        const beyond = await get(http, path, { range: `bytes=${start}-` });
        assert.equal(beyond.status, 416, `${path} bytes=${start}-: ${beyond.body.toString()}`);
        assert.equal(beyond.headers['content-range'], `bytes */${whole.body.length}`);
      }
    }
  });

  it('If-Range naming another archive gets the whole archive (200); an id no longer held is 404; a bad pin is 400', async () => {
    const whole = await get(http, '/v1/operator/snapshot');
    const id = String(whole.headers['x-snapcoord-snapshot-id']);
    const r = await get(http, `/v1/operator/snapshot?id=${id}`, { range: 'bytes=10-', 'if-range': `"${'0'.repeat(64)}"` });
    assert.equal(r.status, 200);
    assert.ok(r.body.equals(whole.body));
    const gone = await get(http, '/v1/operator/snapshot?id=00000000000000000001-00000000000000000001-1000000000000', { range: 'bytes=10-' });
    assert.equal(gone.status, 404);
    assert.match(gone.body.toString(), /no longer held/);
    const bad = await get(http, '/v1/operator/snapshot?index=abc');
    assert.equal(bad.status, 400);
  });

  it('snapshot save asks Status and downloads over one connection (with TLS, one handshake instead of two)', async () => {
    let connections = 0;
    const sockets = new Set<Socket>();
    const proxy: Server = createServer((client) => {
      connections++;
      const at = sn.api.address.lastIndexOf(':');
      const upstream = connect(Number(sn.api.address.slice(at + 1)), sn.api.address.slice(0, at));
      sockets.add(client).add(upstream);
      client.pipe(upstream).pipe(client);
      client.on('error', () => upstream.destroy());
      upstream.on('error', () => client.destroy());
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    const file = join(sn.dir, 'one-connection.snap');
    try {
      const r = await saveSnapshot(file, { endpoint: `127.0.0.1:${(proxy.address() as { port: number }).port}`, stale: false, timeoutMs: 0, idleTimeoutMs: 10_000, progress: false });
      assert.equal(r.resumes, 0);
      assert.equal(sha(await readFile(file)), r.info.digest);
      assert.equal(connections, 1);
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => proxy.close(() => r()));
      await rm(file, { force: true });
    }
  });

  it('snapshot save has the disk write the archive while it downloads: background fdatasyncs of FILE.tmp, then its fsync', async () => {
    // Every FileHandle's datasync and sync, recorded in order (and done): the ~3 MiB archive passes the 2 MiB step.
    const probe = await open(sn.dir, 'r');
    const proto = Object.getPrototypeOf(probe) as Pick<FileHandle, 'datasync' | 'sync'>;
    await probe.close();
    const { datasync, sync } = proto;
    const calls: string[] = [];
    proto.datasync = function (this: FileHandle) {
      calls.push('datasync');
      return datasync.call(this);
    };
    proto.sync = function (this: FileHandle) {
      calls.push('sync');
      return sync.call(this);
    };
    const file = join(sn.dir, 'writeback.snap');
    try {
      const r = await saveSnapshot(file, { endpoint: sn.api.address, stale: false, timeoutMs: 0, idleTimeoutMs: 10_000, progress: false });
      assert.ok(Number(r.info.sizeBytes) > 2 * 1024 * 1024, `archive of ${r.info.sizeBytes} bytes`);
      assert.equal(sha(await readFile(file)), r.info.digest);
      assert.ok(calls.indexOf('datasync') >= 0, `no background fdatasync: ${calls.join(', ')}`);
      assert.ok(calls.lastIndexOf('datasync') < calls.indexOf('sync'), `the fsync is not last: ${calls.join(', ')}`);
    } finally {
      proto.datasync = datasync;
      proto.sync = sync;
      await rm(file, { force: true });
    }
  });

  it('snapshot save resumes a gRPC download cut twice by the network and checks the whole SHA-256', async () => {
    // A TCP proxy in front of the node that cuts the first two connections after ~1 MiB from the node.
    let cutsLeft = 2;
    const sockets = new Set<Socket>();
    const proxy: Server = createServer((client) => {
      const at = sn.api.address.lastIndexOf(':');
      const upstream = connect(Number(sn.api.address.slice(at + 1)), sn.api.address.slice(0, at));
      sockets.add(client).add(upstream);
      let fromNode = 0;
      const cutHere = cutsLeft > 0 ? 600_000 + Math.floor(Math.random() * 600_000) : Infinity;
      if (cutsLeft > 0) cutsLeft--;
      client.on('data', (d: Buffer) => upstream.write(d));
      upstream.on('data', (d: Buffer) => {
        fromNode += d.length;
        if (fromNode > cutHere) {
          client.destroy();
          upstream.destroy();
          return;
        }
        client.write(d);
      });
      client.on('error', () => upstream.destroy());
      upstream.on('error', () => client.destroy());
      client.on('close', () => upstream.destroy());
      upstream.on('close', () => client.destroy());
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    const port = (proxy.address() as { port: number }).port;
    const file = join(sn.dir, 'saved.snap');
    try {
      const r = await saveSnapshot(file, { endpoint: `127.0.0.1:${port}`, stale: false, timeoutMs: 0, idleTimeoutMs: 10_000, progress: false, resumeBackoffMs: 50 });
      assert.ok(r.resumes >= 1, `resumes ${r.resumes}`);
      const saved = await readFile(file);
      assert.equal(sha(saved), r.info.digest);
      assert.equal(saved.length, Number(r.info.sizeBytes));
      // The node still serves that archive: the saved file is byte-identical to it.
      const direct = await get(http, `/v1/operator/snapshot?id=${r.info.id}`);
      assert.ok(direct.body.equals(saved));
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => proxy.close(() => r()));
      await rm(file, { force: true });
    }
  });
});
