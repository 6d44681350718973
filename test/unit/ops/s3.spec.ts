/**
 * The S3 destination (issue 19 part 2) against a real S3-compatible server
 * (s3rver) on 127.0.0.1: multipart round trip with the SHA-256 stored as
 * metadata, an upload cut mid-way (retried; an upload cut every time leaves
 * no visible object), a bucket that refuses writes, a corrupted object
 * refused at download, retention on the bucket, credentials files.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { appendFileSync, statfsSync, writeFileSync } from 'node:fs';
import { chmod, mkdtemp, open, readFile, readdir, rm, stat, symlink, unlink, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { PutObjectCommand } from '@aws-sdk/client-s3';

import { isNoSpace } from '../../../src/node/disk-guard.js';
import { NO_RETENTION } from '../../../src/ops/retention.js';
import { S3Destination, S3Error, parseS3Url, readCredentialsFile, s3SettingsFrom, snapshotName, timeOfName, type S3Settings } from '../../../src/ops/s3.js';
import { BUCKET, S3Server, type RecordedRequest } from './s3-server.js';
import { tmpfsUnderTemp, unmountTmpfs } from '../../harness/tmpfs.js';
import { until } from '../../harness/until.js';

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const MiB = 1024 * 1024;

describe('agent: S3 destination (s3rver)', function () {
  this.timeout(60_000);
  let s3: S3Server;
  let settings: S3Settings;
  let dir = '';
  const saved: Record<string, string | undefined> = {};

  before(async () => {
    s3 = await S3Server.start();
    dir = await mkdtemp(join(tmpdir(), 'snapcoord-s3-spec-'));
    // Credentials from the usual AWS environment variables.
    for (const [k, v] of Object.entries(s3.env())) {
      saved[k] = process.env[k];
      process.env[k] = v;
    }
    settings = s3SettingsFrom();
  });

  after(async () => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    await s3?.close();
    await rm(dir, { recursive: true, force: true });
  });

  afterEach(() => {
    s3.cuts = 0;
    s3.cutsDone = 0;
    s3.cutAfterBytes = Infinity;
    s3.readOnly = false;
    s3.deniedHeads = null;
    s3.stall = false;
    s3.fakePuts = false;
  });

  const meta = (b: Buffer, id = 'x'): { sha256: string; sizeBytes: number; index: number; term: number; id: string } => ({ sha256: sha(b), sizeBytes: b.length, index: 7, term: 2, id });

  it('parses s3:// URLs and settings from the environment; names carry their time', () => {
    assert.deepEqual(parseS3Url('s3://my-bucket/backups/daily/'), { bucket: 'my-bucket', key: 'backups/daily/' });
    assert.deepEqual(parseS3Url('s3://my-bucket'), { bucket: 'my-bucket', key: '' });
    assert.throws(() => parseS3Url('s3://A/b'), (e: unknown) => e instanceof S3Error && e.code === 'badUrl');
    assert.throws(() => parseS3Url('http://x/y'), S3Error);
    assert.equal(settings.endpoint, s3.endpoint);
    assert.equal(settings.forcePathStyle, true);
    const at = new Date('2026-12-03T11:58:43.123Z');
    assert.equal(snapshotName('db', at), 'db-20261203T115843123Z.snapshot');
    assert.equal(timeOfName(snapshotName('db', at)), at.getTime());
    assert.equal(timeOfName('other.snapshot'), null);
    // The request timeout: SNAPCOORD_S3_TIMEOUT_MS, or the one given (checked against the same bounds).
    assert.equal(s3SettingsFrom({}, {}).idleTimeoutMs, undefined, 'none: S3_IDLE_TIMEOUT_MS_DEFAULT applies');
    assert.equal(s3SettingsFrom({}, { SNAPCOORD_S3_TIMEOUT_MS: '2500' }).idleTimeoutMs, 2500);
    assert.equal(s3SettingsFrom({ idleTimeoutMs: 4000 }, { SNAPCOORD_S3_TIMEOUT_MS: '2500' }).idleTimeoutMs, 4000);
    const badSetting = (re: RegExp) => (e: unknown): boolean => e instanceof S3Error && e.code === 'badSetting' && re.test(e.message);
    assert.throws(() => s3SettingsFrom({}, { SNAPCOORD_S3_TIMEOUT_MS: 'soon' }), badSetting(/SNAPCOORD_S3_TIMEOUT_MS: "soon" is not a whole number of milliseconds from 1000 to 600000/));
    assert.throws(() => s3SettingsFrom({ idleTimeoutMs: 10 }, {}), badSetting(/--s3-timeout-ms: "10"/));
  });

  it('multipart round trip: 3 parts, SHA-256 stored with the object and checked on download', async () => {
    const d = await S3Destination.open(`s3://${BUCKET}/rt/`, settings);
    try {
      const body = randomBytes(12 * MiB);
      let progress = 0;
      const r = await d.upload('a.snapshot', () => Readable.from([body.subarray(0, 6 * MiB), body.subarray(6 * MiB)]), meta(body), {
        partBytes: 5 * MiB,
        onProgress: (n) => (progress = n),
      });
      assert.equal(r.key, 'rt/a.snapshot');
      assert.equal(progress, body.length);
      const h = await d.head('rt/a.snapshot');
      assert.equal(h.sha256, sha(body));
      assert.equal(h.sizeBytes, body.length);
      assert.equal(h.metadata['snapcoord-index'], '7');
      const listed = await d.list();
      assert.deepEqual(listed.map((o) => o.name), ['a.snapshot']);
      const file = join(dir, 'rt.snap');
      const got = await d.downloadToFile('rt/a.snapshot', file);
      assert.equal(got.sha256, sha(body));
      assert.ok((await readFile(file)).equals(body));
    } finally {
      d.close();
    }
  });

  it('downloadToFile never writes through a .part planted as a symbolic link, and a leftover .part ends 0600 (before: the object was written where the link pointed)', async () => {
    const d = await S3Destination.open(`s3://${BUCKET}/link/`, settings);
    try {
      const body = randomBytes(64 * 1024);
      await d.upload('l.snapshot', () => Readable.from([body]), meta(body), {});
      const victim = join(dir, 'victim.txt');
      await writeFile(victim, 'keep me');
      const file = join(dir, 'linked.snap');
      await symlink(victim, `${file}.part`);
      await assert.rejects(d.downloadToFile('link/l.snapshot', file), (err: Error) => {
        assert.ok(err instanceof S3Error, String(err));
        assert.match(err.message, /is a symbolic link; not downloaded/);
        return true;
      });
      assert.equal(await readFile(victim, 'utf8'), 'keep me');
      await assert.rejects(readFile(file), { code: 'ENOENT' });
      await unlink(`${file}.part`);
      // A leftover regular .part (a crash's) with a wide mode: truncated, 0600, renamed into place.
      await writeFile(`${file}.part`, 'stale', { mode: 0o644 });
      await chmod(`${file}.part`, 0o644);
      await d.downloadToFile('link/l.snapshot', file);
      assert.ok((await readFile(file)).equals(body));
      assert.equal((await stat(file)).mode & 0o777, 0o600);
    } finally {
      d.close();
    }
  });

  it('the archive\'s bytes are not SHA-256-hashed for the signature over HTTPS: each part is signed UNSIGNED-PAYLOAD and carries its CRC-32 (checked by the store); over plain HTTP each part\'s payload SHA-256 is still signed', async () => {
    const body = randomBytes(12 * MiB);
    const small = randomBytes(64 * 1024);
    const puts = (server: S3Server): RecordedRequest[] => server.requests.filter((r) => r.method === 'PUT');
    // Plain HTTP (the suite's server): signed payloads, no checksum header.
    s3.requests.length = 0;
    const plain = await S3Destination.open(`s3://${BUCKET}/sig/`, settings);
    try {
      assert.equal(plain.payloadSigning, 'signed');
      await plain.upload('h.snapshot', () => Readable.from([body]), meta(body), { partBytes: 5 * MiB });
    } finally {
      plain.close();
    }
    assert.equal(puts(s3).length, 3, 'three parts');
    for (const r of puts(s3)) {
      assert.match(r.headers['x-amz-content-sha256'] ?? '', /^[0-9a-f]{64}$/, 'the payload SHA-256, signed');
      assert.equal(r.headers['x-amz-checksum-crc32'], undefined);
    }

    // HTTPS (a TLS-terminating proxy in front of the same kind of server).
    const secure = await S3Server.start({ tls: true });
    const rejectBefore = process.env['NODE_TLS_REJECT_UNAUTHORIZED'];
    process.env['NODE_TLS_REJECT_UNAUTHORIZED'] = '0'; // the proxy's certificate comes from a CA made for this test
    try {
      const d = await S3Destination.open(`s3://${BUCKET}/sig/`, { ...settings, endpoint: secure.endpoint });
      try {
        assert.equal(d.payloadSigning, 'unsigned');
        await d.upload('s.snapshot', () => Readable.from([body.subarray(0, 7 * MiB), body.subarray(7 * MiB)]), meta(body), { partBytes: 5 * MiB });
        await d.upload('small.snapshot', () => Readable.from([small]), meta(small), { partBytes: 5 * MiB });
        const create = secure.requests.find((r) => r.method === 'POST' && r.path.includes('uploads'));
        assert.equal(create?.headers['x-amz-checksum-algorithm'], 'CRC32', 'the multipart upload declares its parts\' checksum');
        const sent = puts(secure);
        assert.equal(sent.length, 4, 'three parts and one PutObject');
        assert.equal(sent.reduce((n, r) => n + r.bodyBytes, 0), body.length + small.length);
        for (const r of sent) {
          assert.equal(r.headers['x-amz-content-sha256'], 'UNSIGNED-PAYLOAD', `${r.path}: not hashed for the signature`);
          assert.equal(r.headers['x-amz-checksum-crc32'], r.bodyCrc32, `${r.path}: the CRC-32 of the bytes sent, for the store to check`);
        }
        // The object is whole, its SHA-256 recorded and checked on download as before.
        assert.equal((await d.head('sig/s.snapshot')).sha256, sha(body));
        const got = await d.downloadToFile('sig/s.snapshot', join(dir, 'sig.snap'));
        assert.equal(got.sha256, sha(body));
        assert.ok((await readFile(join(dir, 'sig.snap'))).equals(body));
      } finally {
        d.close();
      }
    } finally {
      if (rejectBefore === undefined) delete process.env['NODE_TLS_REJECT_UNAUTHORIZED'];
      else process.env['NODE_TLS_REJECT_UNAUTHORIZED'] = rejectBefore;
      await secure.close();
    }
  });

  it('an upload cut mid-way is retried and completes; cut every time, it fails and leaves no visible object', async () => {
    const d = await S3Destination.open(`s3://${BUCKET}/cut/`, settings, 3);
    try {
      const body = randomBytes(11 * MiB);
      s3.cutAfterBytes = 2 * MiB;
      s3.cuts = 1;
      await d.upload('once.snapshot', () => Readable.from([body]), meta(body), { partBytes: 5 * MiB, queueSize: 1 });
      assert.equal(s3.cutsDone, 1, 'the proxy cut one connection');
      const file = join(dir, 'once.snap');
      await d.downloadToFile('cut/once.snapshot', file);
      assert.ok((await readFile(file)).equals(body));

      s3.cutsDone = 0;
      s3.cuts = Infinity;
      const retried: number[] = [];
      await assert.rejects(
        d.upload('never.snapshot', () => Readable.from([body]), meta(body), { partBytes: 5 * MiB, queueSize: 1, attempts: 2, onRetry: (_e, n) => retried.push(n) }),
        (e: unknown) => e instanceof S3Error && e.code === 'failed',
      );
      assert.deepEqual(retried, [1], 'the whole upload was tried twice');
      s3.cuts = 0;
      assert.deepEqual((await d.list()).map((o) => o.name), ['once.snapshot'], 'no partial object is visible');
      await assert.rejects(d.head('cut/never.snapshot'), (e: unknown) => e instanceof S3Error && e.code === 'notFound');
    } finally {
      d.close();
    }
  });

  it('describe: each listed object with its SHA-256 and index; one removed since the listing is left out, not shown unverifiable', async () => {
    const d = await S3Destination.open(`s3://${BUCKET}/described/`, settings);
    try {
      const a = randomBytes(1000);
      const b = randomBytes(2000);
      await d.upload('a.snapshot', () => Readable.from([a]), { ...meta(a), index: 11 });
      await d.upload('b.snapshot', () => Readable.from([b]), { ...meta(b), index: 12 });
      const listed = await d.list();
      assert.equal(listed.length, 2);
      const all = await d.describe(listed);
      assert.deepEqual(all.map((o) => [o.name, o.sha256, o.index]).sort(), [['a.snapshot', sha(a), 11], ['b.snapshot', sha(b), 12]]);
      // Retention (or another client) removes one between the listing and the heads.
      await d.remove('described/a.snapshot');
      const left = await d.describe(listed);
      assert.deepEqual(left.map((o) => [o.name, o.sha256, o.index]), [['b.snapshot', sha(b), 12]]);
    } finally {
      d.close();
    }
  });

  it('describe: an object whose head is refused (403: ListBucket allowed, GetObject not) or that carries no SHA-256 is listed unverifiable with why, the others as they are', async () => {
    const d = await S3Destination.open(`s3://${BUCKET}/refused/`, settings);
    try {
      const a = randomBytes(1000);
      const b = randomBytes(2000);
      await d.upload('a.snapshot', () => Readable.from([a]), { ...meta(a), index: 11 });
      await d.upload('b.snapshot', () => Readable.from([b]), { ...meta(b), index: 12 });
      await d.client.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'refused/c.snapshot', Body: b, Metadata: { 'snapcoord-sha256': 'not a digest', 'snapcoord-index': '13' } }));
      const listed = await d.list();
      assert.equal(listed.length, 3);
      s3.deniedHeads = 'refused/a.snapshot';
      const rows = await d.describe(listed); // before: rejected with accessDenied, no listing at all
      const by = new Map(rows.map((o) => [o.name, o]));
      assert.deepEqual([...by.keys()].sort(), ['a.snapshot', 'b.snapshot', 'c.snapshot']);
      assert.deepEqual([by.get('b.snapshot')?.sha256, by.get('b.snapshot')?.index, by.get('b.snapshot')?.unverifiable], [sha(b), 12, undefined]);
      assert.deepEqual([by.get('a.snapshot')?.sha256, by.get('a.snapshot')?.index], ['', 0]);
      assert.match(by.get('a.snapshot')?.unverifiable ?? '', /refused\/a\.snapshot: the object store refused it .*HTTP 403/);
      assert.equal(by.get('c.snapshot')?.sha256, '', 'a recorded SHA-256 that is not one is not shown as one');
      assert.match(by.get('c.snapshot')?.unverifiable ?? '', /refused\/c\.snapshot carries no snapcoord SHA-256/);
      assert.equal(by.get('c.snapshot')?.index, 13);
      await assert.rejects(d.download('refused/c.snapshot', new PassThrough()), (e: unknown) => e instanceof S3Error && e.code === 'unverifiable');
    } finally {
      d.close();
    }
  });

  it('a bucket that refuses writes: a clear accessDenied error, not retried, nothing written', async () => {
    const d = await S3Destination.open(`s3://${BUCKET}/ro/`, settings);
    try {
      s3.readOnly = true;
      const body = randomBytes(1 * MiB);
      let retries = 0;
      await assert.rejects(
        d.upload('x.snapshot', () => Readable.from([body]), meta(body), { onRetry: () => retries++ }),
        (e: unknown) => e instanceof S3Error && e.code === 'accessDenied' && /refused it \(AccessDenied \(HTTP 403\)/.test(e.message) && /s3:PutObject/.test(e.message),
      );
      assert.equal(retries, 0);
      s3.readOnly = false;
      assert.deepEqual(await d.list(), []);
    } finally {
      d.close();
    }
  });

  it('a server that stops answering: upload, head and download fail after the idle timeout with a clear error, never hang', async () => {
    const d = await S3Destination.open(`s3://${BUCKET}/stall/`, { ...settings, idleTimeoutMs: 300 }, 1);
    try {
      const body = randomBytes(1 * MiB);
      await d.upload('ok.snapshot', () => Readable.from([body]), meta(body));
      s3.stall = true;
      const stalled = (e: unknown): boolean => e instanceof S3Error && e.code === 'failed' && /timed out after 300 ms/.test(e.message);
      // Before the bound there was none: each of these waited forever (the task queue and the schedule with it).
      const within = <T>(p: Promise<T>): Promise<T> =>
        Promise.race([p, new Promise<never>((_r, reject) => setTimeout(() => reject(new Error('still waiting after 20 s: no idle bound')), 20_000).unref())]);
      await assert.rejects(within(d.upload('hung.snapshot', () => Readable.from([body]), meta(body), { attempts: 1 })), stalled);
      await assert.rejects(within(d.head('stall/ok.snapshot')), stalled);
      await assert.rejects(within(d.downloadToFile('stall/ok.snapshot', join(dir, 'stall.snap'))), stalled);
      assert.deepEqual((await readdir(dir)).filter((n) => n.startsWith('stall.snap')), [], 'nothing left of the download');
      s3.stall = false;
      assert.deepEqual((await d.list()).map((o) => o.name), ['ok.snapshot'], 'no object from the stalled upload');
    } finally {
      d.close();
    }
  });

  it('a store that answers 200 to a PUT it did not keep: the upload fails (the object is checked after it), not reported done', async () => {
    const d = await S3Destination.open(`s3://${BUCKET}/lied/`, settings, 1);
    try {
      const body = randomBytes(1 * MiB); // under one part: a single PutObject
      s3.fakePuts = true;
      const retried: number[] = [];
      await assert.rejects(
        d.upload('lost.snapshot', () => Readable.from([body]), meta(body), { attempts: 2, onRetry: (_e, n) => retried.push(n) }),
        (e: unknown) => e instanceof S3Error && e.code === 'failed' && /acknowledged/.test(e.message) && /lied\/lost\.snapshot/.test(e.message),
      );
      assert.deepEqual(retried, [1], 'a lost write is retried like any failed attempt');
      s3.fakePuts = false;
      await assert.rejects(d.head('lied/lost.snapshot'), (e: unknown) => e instanceof S3Error && e.code === 'notFound');
    } finally {
      d.close();
    }
  });

  it('credentials that may write but not read (s3:PutObject without s3:GetObject): the upload is not failed by the check after it, which says it could not look (review20)', async () => {
    // A write-only backup policy: the head after the upload (2348660's check) is refused. Before that check such an
    // upload succeeded; with it, every scheduled upload failed at once with accessDenied although the object was kept.
    const d = await S3Destination.open(`s3://${BUCKET}/wo/`, settings, 1);
    try {
      const body = randomBytes(1 * MiB);
      s3.deniedHeads = 'wo/';
      const up = await d.upload('kept.snapshot', () => Readable.from([body]), meta(body), { attempts: 1 });
      assert.equal(up.key, 'wo/kept.snapshot');
      assert.match(up.unchecked ?? '', /wo\/kept\.snapshot.*refused/, 'the result says the object could not be checked, and why');
      s3.deniedHeads = null;
      const h = await d.head('wo/kept.snapshot');
      assert.deepEqual([h.sizeBytes, h.sha256], [body.length, sha(body)], 'the object is kept, whole');
      // A store that lies is still caught where the head is allowed: the check stays in force.
      const other = randomBytes(1 * MiB);
      s3.fakePuts = true;
      await assert.rejects(d.upload('lost.snapshot', () => Readable.from([other]), meta(other), { attempts: 1 }), (e: unknown) => e instanceof S3Error && e.code === 'failed' && /acknowledged/.test(e.message));
    } finally {
      d.close();
    }
  });

  it('bytes that do not match the SHA-256 given are not uploaded', async () => {
    const d = await S3Destination.open(`s3://${BUCKET}/bad/`, settings);
    try {
      const body = randomBytes(1 * MiB);
      await assert.rejects(d.upload('x.snapshot', () => Readable.from([body]), { ...meta(body), sha256: '0'.repeat(64) }), (e: unknown) => e instanceof S3Error && e.code === 'corrupt');
      assert.deepEqual(await d.list(), []);
    } finally {
      d.close();
    }
  });

  it('a corrupted object is refused at download (nothing left); an object without the SHA-256 is refused too', async () => {
    const d = await S3Destination.open(`s3://${BUCKET}/rot/`, settings);
    try {
      const body = randomBytes(2 * MiB);
      await d.upload('r.snapshot', () => Readable.from([body]), meta(body));
      // Flip one byte of the stored object behind the server's back (bit rot, a tampered bucket).
      const files = (await s3.objectFiles()).filter((f) => f.includes(`${join('rot', 'r.snapshot')}`));
      assert.equal(files.length, 1, String(await s3.objectFiles()));
      const fh = await open(files[0]!, 'r+');
      await fh.write(Buffer.from([body[12345]! ^ 0xff]), 0, 1, 12345);
      await fh.close();
      const file = join(dir, 'rot.snap');
      await assert.rejects(d.downloadToFile('rot/r.snapshot', file), (e: unknown) => e instanceof S3Error && e.code === 'corrupt' && /does not match the recorded/.test(e.message));
      assert.deepEqual((await readdir(dir)).filter((n) => n.startsWith('rot.snap')), []);
      await d.client.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'rot/plain.snapshot', Body: body }));
      await assert.rejects(d.downloadToFile('rot/plain.snapshot', file), (e: unknown) => e instanceof S3Error && e.code === 'unverifiable');
    } finally {
      d.close();
    }
  });

  it('retention on the bucket removes only the scheduled archives of this db that the policy does not keep', async () => {
    const d = await S3Destination.open(`s3://${BUCKET}/ret/`, settings);
    try {
      const now = Date.parse('2026-12-03T12:00:00Z');
      const body = Buffer.from('tiny');
      for (let i = 0; i < 5; i++) await d.upload(snapshotName('db', new Date(now - i * 3_600_000)), () => Readable.from([body]), meta(body));
      await d.upload(snapshotName('other', new Date(now - 9 * 86_400_000)), () => Readable.from([body]), meta(body));
      await d.upload('notes.txt', () => Readable.from([body]), meta(body));
      assert.deepEqual((await d.applyRetention('db', NO_RETENTION, now)).removed, [], 'no policy: nothing removed');
      const r = await d.applyRetention('db', { keepLast: 2, keepDays: 0, keepWeeks: 0 }, now);
      assert.equal(r.removed.length, 3);
      const names = (await d.list()).map((o) => o.name).sort();
      assert.deepEqual(names, [snapshotName('db', new Date(now - 3_600_000)), snapshotName('db', new Date(now)), 'notes.txt', snapshotName('other', new Date(now - 9 * 86_400_000))].sort());
    } finally {
      d.close();
    }
  });

  it('list keeps only the newest objects it may hold while it walks every page; retention weighs that window and later runs reach the older ones', async () => {
    // A bucket of its own that pages ListObjectsV2 (s3rver's continuation tokens are DES, which Node 20's OpenSSL refuses).
    const now = Date.parse('2026-12-03T12:00:00Z');
    const dbNames = Array.from({ length: 12 }, (_, i) => snapshotName('db', new Date(now - i * 3_600_000)));
    const otherNames = Array.from({ length: 3 }, (_, i) => snapshotName('other', new Date(now - i * 60_000)));
    const keys = new Set([...dbNames, ...otherNames].map((n) => `many/${n}`));
    let pages = 0;
    const xml = (v: string): string => v.replace(/&/g, '&amp;').replace(/</g, '&lt;');
    const server = createServer((req, res) => {
      const u = new URL(req.url ?? '/', 'http://x');
      if (req.method === 'DELETE') {
        keys.delete(decodeURIComponent(u.pathname.slice(`/${BUCKET}/`.length)));
        res.writeHead(204).end();
        return;
      }
      pages++;
      const prefix = u.searchParams.get('prefix') ?? '';
      const max = Number(u.searchParams.get('max-keys') ?? '1000');
      const after = u.searchParams.get('continuation-token') ?? '';
      const all = [...keys].filter((k) => k.startsWith(prefix) && k > after).sort();
      const page = all.slice(0, max);
      const more = all.length > page.length;
      const contents = page.map((k) => `<Contents><Key>${xml(k)}</Key><LastModified>2026-12-03T12:00:00.000Z</LastModified><Size>4</Size></Contents>`).join('');
      res.writeHead(200, { 'content-type': 'application/xml' });
      res.end(
        `<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>${BUCKET}</Name><Prefix>${xml(prefix)}</Prefix><KeyCount>${page.length}</KeyCount><MaxKeys>${max}</MaxKeys>` +
          `<IsTruncated>${more}</IsTruncated>${more ? `<NextContinuationToken>${xml(page.at(-1) ?? '')}</NextContinuationToken>` : ''}${contents}</ListBucketResult>`,
      );
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    const d = await S3Destination.open(`s3://${BUCKET}/many/`, { ...settings, endpoint: `http://127.0.0.1:${port}`, forcePathStyle: true }, 1);
    try {
      // Pages of 2 (8 of them): the newest 5 of 15 objects, newest first, from every page.
      const newest = await d.list({ keptMax: 5, pageSize: 2 });
      assert.equal(pages, 8);
      assert.deepEqual(
        newest.map((o) => o.name),
        [dbNames[0], otherNames[0], otherNames[1], otherNames[2], dbNames[1]],
      );
      assert.deepEqual((await d.list({ keptMax: 3, pageSize: 2, match: (n) => n.startsWith('db') })).map((o) => o.name), dbNames.slice(0, 3));
      assert.equal((await d.list({ pageSize: 4 })).length, 15, 'the default bound holds them all');
      // Retention over a window of 5: each run removes what the policy drops among the newest 5 of db's archives.
      const policy = { keepLast: 2, keepDays: 0, keepWeeks: 0 };
      const first = await d.applyRetention('db', policy, now, undefined, { keptMax: 5, pageSize: 2 });
      assert.deepEqual(first.removed.map((o) => o.name), dbNames.slice(2, 5));
      let runs = 1;
      while ((await d.applyRetention('db', policy, now, undefined, { keptMax: 5, pageSize: 2 })).removed.length > 0) assert.ok(++runs < 10, 'retention converges');
      assert.equal(runs, 4, 'three more runs, of three, three and one removals');
      assert.deepEqual([...keys].sort(), [...dbNames.slice(0, 2), ...otherNames].map((n) => `many/${n}`).sort(), 'the two newest of db, and the other db untouched');
      await assert.rejects(d.list({ keptMax: 0 }), RangeError);
    } finally {
      d.close();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });

  it('a store that trickles (a byte every 100 ms: never idle) fails the download at its overall deadline, nothing left (before: it held the caller for ever)', async () => {
    const object = randomBytes(64 * 1024);
    let getsOpen = 0;
    const server = createServer((req, res) => {
      const headers = { 'x-amz-meta-snapcoord-sha256': sha(object), 'content-type': 'application/x-gzip', 'last-modified': new Date().toUTCString(), 'content-length': String(object.length) };
      if (req.method === 'HEAD') {
        res.writeHead(200, headers);
        res.end();
        return;
      }
      res.writeHead(200, headers);
      getsOpen += 1;
      let at = 0;
      const drip = setInterval(() => {
        if (res.destroyed || at >= object.length) return;
        res.write(object.subarray(at, at + 1));
        at += 1;
      }, 100);
      res.on('close', () => {
        clearInterval(drip);
        getsOpen -= 1;
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    const d = await S3Destination.open(
      `s3://${BUCKET}/trickle/t.snapshot`,
      { ...settings, endpoint: `http://127.0.0.1:${port}`, forcePathStyle: true, idleTimeoutMs: 1_000, downloadTimeoutMs: 1_500 },
      1,
    );
    try {
      const file = join(dir, 'trickle.snap');
      let got = 0;
      const within = <T>(p: Promise<T>): Promise<T> =>
        Promise.race([p, new Promise<never>((_r, reject) => setTimeout(() => reject(new Error('still downloading after 15 s: no overall deadline')), 15_000).unref())]);
      await assert.rejects(
        within(d.downloadToFile(d.prefix, file, (n) => (got = n))),
        (e: unknown) => e instanceof S3Error && e.code === 'failed' && /was not downloaded within 1500 ms/.test(e.message),
      );
      assert.ok(got > 0 && got < object.length, `${got} bytes had arrived`);
      assert.deepEqual((await readdir(dir)).filter((n) => n.startsWith('trickle.snap')), [], 'nothing left behind');
      await until('the GET to be closed', 5_000, () => (getsOpen === 0 ? true : undefined));
      // The setting: checked where it is read.
      assert.throws(() => s3SettingsFrom({}, { SNAPCOORD_S3_DOWNLOAD_TIMEOUT_MS: '10' }), /SNAPCOORD_S3_DOWNLOAD_TIMEOUT_MS: "10" is not a whole number of milliseconds from 1000/);
      assert.equal(s3SettingsFrom({}, { SNAPCOORD_S3_DOWNLOAD_TIMEOUT_MS: '7200000' }).downloadTimeoutMs, 7_200_000);
    } finally {
      d.close();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });

  it('a server that answers a GET with more bytes than the object recorded: refused after the recorded size, not once the disk holds them all', async () => {
    // A hostile or broken store: HEAD says 4 bytes (with their SHA-256), the GET streams up to 64 MiB.
    const small = Buffer.from('tiny');
    const LIE_BYTES = 64 * MiB;
    let sent = 0;
    const lengths = ['content-length', 'meta', 'none'];
    const server = createServer((req, res) => {
      const headers: Record<string, string> = { 'x-amz-meta-snapcoord-sha256': sha(small), 'content-type': 'application/x-gzip', 'last-modified': new Date().toUTCString() };
      if (req.method === 'HEAD') {
        // Without a length the size recorded at upload bounds the download; with neither it is refused.
        const size = lengths.shift();
        res.writeHead(200, size === 'content-length' ? { ...headers, 'content-length': String(small.length) } : size === 'meta' ? { ...headers, 'x-amz-meta-snapcoord-size': String(small.length) } : headers);
        res.end();
        return;
      }
      res.writeHead(200, headers); // chunked: no length announced
      const chunk = Buffer.alloc(64 * 1024, 7);
      const pump = (): void => {
        while (sent < LIE_BYTES && !res.destroyed) {
          sent += chunk.length;
          if (!res.write(chunk)) return void res.once('drain', pump);
        }
        res.end();
      };
      res.on('close', () => res.removeAllListeners('drain'));
      pump();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    const d = await S3Destination.open(`s3://${BUCKET}/lie/x.snapshot`, { ...settings, endpoint: `http://127.0.0.1:${port}`, forcePathStyle: true }, 1);
    try {
      const file = join(dir, 'lie.snap');
      let most = 0;
      await assert.rejects(
        d.downloadToFile(d.prefix, file, (n) => (most = Math.max(most, n))),
        (e: unknown) => e instanceof S3Error && e.code === 'corrupt',
      );
      assert.ok(most <= small.length, `${most} bytes taken from a body recorded as ${small.length}`);
      assert.ok(sent < LIE_BYTES, 'the download was cut, not read to the end');
      assert.deepEqual((await readdir(dir)).filter((n) => n.startsWith('lie.snap')), [], 'nothing left behind');
      // HEAD without a Content-Length: bounded by x-amz-meta-snapcoord-size.
      sent = 0;
      most = 0;
      await assert.rejects(
        d.downloadToFile(d.prefix, file, (n) => (most = Math.max(most, n))),
        (e: unknown) => e instanceof S3Error && e.code === 'corrupt',
      );
      assert.ok(most <= small.length && sent < LIE_BYTES, `${most} bytes taken, ${sent} sent, with the size only in the metadata`);
      // Neither: refused before the GET.
      sent = 0;
      await assert.rejects(d.downloadToFile(d.prefix, file), (e: unknown) => e instanceof S3Error && e.code === 'unverifiable' && /no size/.test(e.message));
      assert.equal(sent, 0);
      assert.deepEqual((await readdir(dir)).filter((n) => n.startsWith('lie.snap')), [], 'nothing left behind');
    } finally {
      d.close();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });

  it('an object larger than the free space where it would be downloaded is refused before its GET, nothing left', async () => {
    let gets = 0;
    const server = createServer((req, res) => {
      if (req.method === 'HEAD') {
        // 1 PiB: more than any disk here.
        res.writeHead(200, { 'x-amz-meta-snapcoord-sha256': sha(Buffer.from('x')), 'content-length': String(2 ** 50), 'last-modified': new Date().toUTCString() });
        res.end();
        return;
      }
      gets++;
      res.writeHead(500);
      res.end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    const d = await S3Destination.open(`s3://${BUCKET}/huge/x.snapshot`, { ...settings, endpoint: `http://127.0.0.1:${port}`, forcePathStyle: true }, 1);
    try {
      await assert.rejects(
        d.downloadToFile(d.prefix, join(dir, 'huge.snap')),
        (e: unknown) => e instanceof S3Error && e.code === 'failed' && /is 1125899906842624 bytes but .* has \d+ bytes free; not downloaded/.test(e.message),
      );
      assert.equal(gets, 0, 'no GET made');
      assert.deepEqual((await readdir(dir)).filter((n) => n.startsWith('huge.snap')), [], 'nothing left behind');
    } finally {
      d.close();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });

  it('a disk that fills during a download: a short write fails it (ENOSPC, a full disk), never a truncated file renamed into place as checked', async function () {
    const fs = await tmpfsUnderTemp('snapcoord-s3-full-', 'size=1m,mode=0700', 'download to a full disk');
    if (!fs.mounted) {
      await rm(fs.dir, { recursive: true, force: true });
      this.skip();
    }
    const body = randomBytes(5000);
    const server = createServer((req, res) => {
      const headers = { 'x-amz-meta-snapcoord-sha256': sha(body), 'content-length': String(body.length), 'last-modified': new Date().toUTCString() };
      if (req.method === 'HEAD') {
        res.writeHead(200, headers);
        res.end();
        return;
      }
      // Two pieces: the first leaves the file's last page part-used, so the second write can be cut short without an error.
      res.writeHead(200, headers);
      res.write(body.subarray(0, 1000), () => setTimeout(() => res.end(body.subarray(1000)), 50));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    const d = await S3Destination.open(`s3://${BUCKET}/full/x.snapshot`, { ...settings, endpoint: `http://127.0.0.1:${port}`, forcePathStyle: true }, 1);
    const file = join(fs.mnt, 'x.snap');
    try {
      // Once the last piece has passed the hash check, and before it is written, something else takes every free page.
      const fill = (n: number): void => {
        if (n !== body.length) return;
        const st = statfsSync(fs.mnt);
        writeFileSync(join(fs.mnt, 'filler'), Buffer.alloc(Math.max(0, st.bavail * st.bsize - 16 * 1024)));
        for (;;) {
          try {
            appendFileSync(join(fs.mnt, 'filler'), Buffer.alloc(4096));
          } catch {
            return;
          }
        }
      };
      const outcome = await d.downloadToFile(d.prefix, file, fill).then(
        async () => `resolved; the file holds ${(await readFile(file)).length} of ${body.length} bytes`,
        (e: unknown) => e,
      );
      // An S3Error whose cause is the ENOSPC (callers see a full disk: isNoSpace).
      assert.ok(outcome instanceof S3Error && isNoSpace(outcome) && /ENOSPC/.test(outcome.message), String(outcome));
      assert.deepEqual((await readdir(fs.mnt)).filter((n) => n.startsWith('x.snap')), [], 'nothing left behind');
    } finally {
      d.close();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      await unmountTmpfs(fs.mnt);
      await rm(fs.dir, { recursive: true, force: true });
    }
  });

  it('credentials files: JSON, AWS shared-credentials and env lines; errors never quote the secret', async () => {
    const j = join(dir, 'c.json');
    await writeFile(j, JSON.stringify({ accessKeyId: 'AK', secretAccessKey: 'SK-secret', sessionToken: 'T' }));
    assert.deepEqual(await readCredentialsFile(j), { accessKeyId: 'AK', secretAccessKey: 'SK-secret', sessionToken: 'T' });
    const ini = join(dir, 'credentials');
    await writeFile(ini, '[default]\naws_access_key_id = AK2\naws_secret_access_key = SK2\n[other]\naws_access_key_id = NO\n');
    assert.deepEqual(await readCredentialsFile(ini), { accessKeyId: 'AK2', secretAccessKey: 'SK2' });
    const env = join(dir, 'env');
    await writeFile(env, 'export AWS_ACCESS_KEY_ID="AK3"\nAWS_SECRET_ACCESS_KEY=SK3\n');
    assert.deepEqual(await readCredentialsFile(env), { accessKeyId: 'AK3', secretAccessKey: 'SK3' });
    const bad = join(dir, 'bad');
    await writeFile(bad, 'aws_secret_access_key = very-secret-value\n');
    await assert.rejects(readCredentialsFile(bad), (e: unknown) => e instanceof S3Error && e.code === 'credentials' && !e.message.includes('very-secret-value'));
    // Wrong credentials: refused by the server, and the message carries no secret. (s3rver checks
    // that the access key id exists but does not verify SigV4 signatures: an unknown id it refuses.)
    const wrong = join(dir, 'wrong.json');
    await writeFile(wrong, JSON.stringify({ accessKeyId: 'NOT-A-KEY', secretAccessKey: 'not-the-secret-xyz' }));
    const d = await S3Destination.open(`s3://${BUCKET}/wrong/`, { ...settings, credentialsFile: wrong });
    try {
      const body = Buffer.from('x');
      await assert.rejects(d.upload('w.snapshot', () => Readable.from([body]), meta(body)), (e: unknown) => e instanceof S3Error && e.code === 'accessDenied' && !e.message.includes('not-the-secret-xyz'));
    } finally {
      d.close();
    }
  });
});
