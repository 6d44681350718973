/**
 * Seeded fuzzing of the HTTP gateway's routes in front of a real node
 * (SnapshotNode: one voter on RocksDB with its real snapshot and task API):
 * every documented route and some that are not, with any method, odd paths
 * and query strings (task uids negative, huge, not numbers; snapshot_path
 * outside the roots, relative, with NUL; repeated parameters), each style's
 * auth header right, wrong, repeated or missing, odd content types and
 * bodies (empty, not JSON, JSON of the wrong shape, random bytes, archives
 * with hostile content behind valid hashes to restore). The contract: every answer is below 500 (503 only from /health,
 * which reports an unavailable node that way), JSON answers are JSON with a
 * message when they refuse; the state (the node's keys and applied index)
 * changes only on a success; and /health answers 200 after each.
 *
 * FUZZ_CASES=N runs more requests, FUZZ_SEED=S another seed.
 */
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { join } from 'node:path';

import { createGateway, type Gateway } from '../../../src/gateway/gateway.js';
import { SeededRng } from '../../harness/rng.js';
import { SnapshotNode } from '../api/snapshot-node.js';
import { baseArchive, fuzzArchive, fuzzCases, fuzzSeed } from '../snapshot/fuzz-archives.js';

const KEY = 'admin-key-0123456789';
const READ_KEY = 'read-only-key-0123';

interface Answer {
  readonly status: number;
  readonly contentType: string;
  readonly body: Buffer;
}

function send(port: number, method: string, path: string, headers: [string, string][], body: Buffer | null): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const flat: string[] = ['host', `127.0.0.1:${port}`];
    for (const [k, v] of headers) flat.push(k, v);
    if (body !== null) flat.push('content-length', String(body.length));
    const req = request({ host: '127.0.0.1', port, method, path, headers: flat, timeout: 20_000 }, (res) => {
      const chunks: Buffer[] = [];
      let bytes = 0;
      res.on('data', (c: Buffer) => {
        bytes += c.length;
        if (bytes <= 1024 * 1024) chunks.push(c);
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, contentType: String(res.headers['content-type'] ?? ''), body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('no answer within 20 s')));
    req.on('error', reject);
    req.end(body ?? undefined);
  });
}

interface OddRequest {
  readonly method: string;
  readonly path: string;
  readonly headers: [string, string][];
  readonly body: Buffer | null;
}

function oddRequest(rng: SeededRng, root: string, archives: readonly Buffer[]): OddRequest {
  if (rng.chance(0.1)) {
    // A restore with the right key (Nomad's route): hostile archives, or bytes that are none.
    const body = rng.chance(0.8) ? rng.pick(archives) : Buffer.from(Array.from({ length: rng.nextInt(2000) }, () => rng.nextInt(256)));
    return { method: rng.pick(['PUT', 'POST']), path: '/v1/operator/snapshot', headers: [['x-nomad-token', KEY], ['content-type', rng.pick(['application/octet-stream', 'application/x-www-form-urlencoded', 'application/json'])]], body };
  }
  const uid = rng.pick(['0', '1', '-1', '999999999999999999999', 'abc', '1e3', '%00', '1.5', '', '00001', '9007199254740993']);
  const snapshotPath = rng.pick([
    join(root, `t-${rng.nextInt(1000)}`),
    '/etc',
    'relative/dir',
    '',
    `${root}/../outside`,
    `${root}/%00x`,
    'x'.repeat(5000),
  ]);
  const q = (s: string): string => encodeURIComponent(s);
  const path = rng.pick([
    '/health',
    '/debug',
    '/metrics',
    '/openapi.json',
    `/operations/snapshot?snapshot_path=${q(snapshotPath)}`,
    `/operations/snapshot?snapshot_path=${q(snapshotPath)}&snapshot_path=${q(root)}`,
    '/operations/snapshot',
    '/operations/vote',
    '/snapshots',
    `/tasks/${uid}`,
    `/tasks?limit=${rng.pick(['0', '-1', '1', 'abc', '99999999999', ''])}&from=${rng.pick(['0', '-5', 'x', '18446744073709551616'])}`,
    `/tasks?statuses=${rng.pick(['enqueued', 'bogus', 'enqueued,bogus', ''])}&types=${rng.pick(['snapshotCreation', 'x', ''])}&uids=${rng.pick(['1,2', '-1', 'a', ''])}`,
    `/tasks/cancel?uids=${rng.pick(['1', '0', '-1', 'x', ''])}`,
    '/tasks/cancel',
    `/v1/operator/snapshot${rng.pick(['', '?stale', '?stale=maybe', '?stale=true&stale=false'])}`,
    '/nope',
    '/tasks/1/extra',
    '//health',
    '/operations/snapshot/../vote',
    `/${'a'.repeat(rng.pick([10, 9000]))}`,
  ]);
  const method = rng.pick(['GET', 'GET', 'POST', 'POST', 'PUT', 'DELETE', 'PATCH', 'HEAD', 'OPTIONS']);
  const headers: [string, string][] = [];
  const key = rng.pick([KEY, KEY, KEY, KEY, READ_KEY, 'wrong', '', `${KEY} `, 'x'.repeat(3000)]);
  switch (rng.nextInt(5)) {
    case 0:
      headers.push(['x-typesense-api-key', key]);
      break;
    case 1:
      headers.push(['authorization', rng.pick([`Bearer ${key}`, key, 'Bearer', `Basic ${key}`])]);
      break;
    case 2:
      headers.push(['x-nomad-token', key]);
      break;
    case 3:
      headers.push(['x-typesense-api-key', key], ['x-typesense-api-key', KEY]);
      break;
    default:
      break;
  }
  let body: Buffer | null = null;
  if (method !== 'GET' && method !== 'HEAD' && rng.chance(0.8)) {
    body = rng.pick<() => Buffer>([
      () => Buffer.alloc(0),
      () => Buffer.from('{}'),
      () => Buffer.from('{"a":'),
      () => Buffer.from('[1,2,3]'),
      () => Buffer.from('null'),
      () => Buffer.from(JSON.stringify({ uids: [-1, 'x', 2 ** 64] })),
      () => Buffer.from(`{"x":"${'y'.repeat(300_000)}"}`),
      () => Buffer.from(Array.from({ length: rng.nextInt(3000) }, () => rng.nextInt(256))),
      () => Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3]),
      () => rng.pick(archives), // hostile content behind valid hashes (fuzz-archives.ts)
      () => rng.pick(archives),
    ])();
    headers.push(['content-type', rng.pick(['application/json', 'application/json; charset=utf-8', 'text/plain', 'application/x-www-form-urlencoded', 'application/octet-stream', 'multipart/form-data; boundary=x', 'application/json; charset=latin1', '\u00e9'])]);
  }
  return { method, path, headers, body };
}

describe('fuzz: odd HTTP requests to the gateway in front of a real node', function () {
  this.timeout(60_000 + fuzzCases(80) * 500); // FUZZ_CASES runs by hand take longer
  let n: SnapshotNode | undefined;
  let gw: Gateway | undefined;
  afterEach(async () => {
    await gw?.close();
    await n?.close();
    gw = undefined;
    n = undefined;
  });

  it('every answer is below 500 (503 only from /health), refusals carry a message, the state changes only on a success, and /health answers after each', async () => {
    const cases = fuzzCases(80);
    const seed = fuzzSeed(6_600_000);
    n = await SnapshotNode.start();
    gw = createGateway({ target: n.api.address, auth: { adminKey: KEY, keys: [{ key: READ_KEY, actions: ['snapshots.read'] }] }, snapshotRoots: [n.root, join(n.dir, 'other-root')] });
    const port = Number((await gw.listen('127.0.0.1:0')).split(':').at(-1));
    await n.node.propose({ op: 'put', key: new TextEncoder().encode('k/a'), value: new TextEncoder().encode('1') });
    const archives: Buffer[] = [];
    for (let a = 0; a < 6; a++) {
      const rng = new SeededRng(seed).fork(`archive-${a}`);
      archives.push((await fuzzArchive(rng.fork('mutate'), await baseArchive(rng.fork('base')))).archive);
    }
    const outcomes = new Map<string, number>();
    for (let i = 0; i < cases; i++) {
      const r = oddRequest(new SeededRng(seed).fork(`request-${i}`), n.root, archives);
      const where = `request ${i} (FUZZ_SEED=${seed} FUZZ_CASES=${i + 1}): ${r.method} ${r.path.slice(0, 200)} headers ${JSON.stringify(r.headers.map(([k, v]) => [k, v.slice(0, 40)]))} body ${r.body === null ? 'none' : `${r.body.length} bytes ${r.body.subarray(0, 30).toString('latin1')}`}`;
      const lastIndex: number = n.node.status().lastIndex;
      const a = await send(port, r.method, r.path, r.headers, r.body);
      const pathOnly = r.path.split('?')[0];
      assert.ok(a.status > 0 && (a.status < 500 || (a.status === 503 && pathOnly === '/health')), `${where}: answered ${a.status} ${a.body.subarray(0, 500).toString()}`);
      if (a.status >= 400 && a.contentType.startsWith('application/json') && r.method !== 'HEAD') {
        let parsed: unknown;
        assert.doesNotThrow(() => (parsed = JSON.parse(a.body.toString('utf8'))), `${where}: ${a.status} with a body that is not JSON: ${a.body.subarray(0, 200).toString()}`);
        assert.ok(typeof parsed === 'object' && parsed !== null && typeof (parsed as { message?: unknown }).message === 'string' && (parsed as { message: string }).message.length > 0, `${where}: ${a.status} without a message: ${a.body.subarray(0, 200).toString()}`);
      }
      if (a.status >= 300) {
        // Refused: nothing proposed (a vote or a snapshot proposes nothing either way; a restore would).
        assert.equal(n.node.status().lastIndex, lastIndex, `${where}: refused ${a.status}, but something was proposed`);
      }
      const k = `${r.method} ${pathOnly?.slice(0, 30)} ${a.status}`;
      outcomes.set(k, (outcomes.get(k) ?? 0) + 1);
      const health = await send(port, 'GET', '/health', [], null);
      assert.equal(health.status, 200, `${where}: /health after it: ${health.status} ${health.body.toString()}`);
      assert.equal(n.node.failed(), null);
    }
    if (process.env['FUZZ_CASES'] !== undefined) console.log(`      ${cases} requests from seed ${seed}:`, Object.fromEntries([...outcomes].sort()));
  });
});
