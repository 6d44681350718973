/**
 * serve --client-crl on a real process (TLS on the client gRPC port, --client-ca, port 0): a client whose certificate
 * the CRL revokes is refused UNAUTHENTICATED "certificate revoked" at its first call (the CLI shows it); a reload
 * (SIGHUP, or the 5 s look) closes the open connection of a client it now revokes (a Health/Watch held open ends) and
 * that client's calls on a new one are refused, while an unrevoked client's Watch and calls go on. A CRL file gone bad
 * keeps the last good one; at start a CRL that is not one, not the client CA's, or revokes the node's own --cert is
 * refused (exit 2), and an expired one is used with an error logged (as --peer-crl). /metrics counts the refused calls
 * and closed connections and shows the CRL in use (snapcoord_client_crl_*). Before, nothing asked a CRL on the client
 * plane: a revoked client was served until its certificate expired.
 */
import { strict as assert } from 'node:assert';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { createCa, createCrl, readCa, writeCa, writeClientCert, writeNodeCert } from '../../../src/tls/index.js';
import { ServeProcess } from '../../harness/serve-process.js';
import { describeRun, runCli } from '../../harness/child.js';
import { tmpDir } from '../tls/helpers.js';
import { until } from '../../harness/until.js';

const API_KEY = 'serve-admin-key-0123456789';
const identity = (b: Buffer): Buffer => b;
const empty = (): Buffer => Buffer.alloc(0);

const serialOf = (file: string): string => new X509Certificate(readFileSync(file)).serialNumber;

describe('serve --client-crl: revoked client certificates are refused on the client gRPC port', function () {
  this.timeout(120_000);
  let dir: string;
  let cleanup: () => Promise<void>;
  const procs: ServeProcess[] = [];
  const clients: grpc.Client[] = [];
  let crlFile: string;
  let ca: Buffer;

  before(async () => {
    ({ dir, cleanup } = await tmpDir('snapcoord-serve-client-crl-'));
    await writeCa(dir);
    await writeNodeCert(dir, 'n1', { ips: ['127.0.0.1'] });
    for (const name of ['alice', 'bob', 'carol']) await writeClientCert(dir, name);
    crlFile = join(dir, 'client-crl.pem');
    ca = readFileSync(join(dir, 'ca.pem'));
  });

  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    for (const p of procs.splice(0)) await p.kill();
  });

  after(async () => {
    await cleanup();
  });

  const tlsArgs = (crl: string): string[] => ['--cert', join(dir, 'n1.pem'), '--key', join(dir, 'n1-key.pem'), '--client-ca', join(dir, 'ca.pem'), '--client-crl', crl, '--metrics-open'];
  /** metric: the value of `name` in the node's /metrics (its gateway at `http`; 0 when absent). */
  const metric = async (http: string, name: string): Promise<number> => {
    const text = await (await fetch(`http://${http}/metrics`)).text();
    const m = new RegExp(`^${name} (\\d+(?:\\.\\d+)?(?:e\\+\\d+)?)$`, 'm').exec(text);
    return m === null ? 0 : Number(m[1]);
  };
  const start = (name: string, crl: string): ServeProcess => {
    const p = new ServeProcess({ id: 'n1', grpc: '127.0.0.1:0', peer: '127.0.0.1:0', peers: 'n1=127.0.0.1:1', dataDir: join(dir, `data-${name}`), apiKey: API_KEY, extra: tlsArgs(crl) });
    procs.push(p);
    return p;
  };
  const args = (crl: string, name: string): string[] => [
    'serve', '--id', 'n1', '--grpc', '127.0.0.1:0', '--peers', 'n1=127.0.0.1:1', '--peer-listen', '127.0.0.1:0', '--http', '127.0.0.1:0',
    '--data-dir', join(dir, `data-${name}`), '--api-key', API_KEY, ...tlsArgs(crl),
  ];
  const writeCrl = async (revoked: readonly string[], opts: Parameters<typeof createCrl>[2] = {}): Promise<void> => {
    await writeFile(crlFile, await createCrl(await readCa(dir), revoked.map((f) => ({ serialNumber: serialOf(f) })), opts));
  };
  const client = (target: string, name: string): grpc.Client => {
    const creds = grpc.credentials.createSsl(ca, readFileSync(join(dir, `client-${name}-key.pem`)), readFileSync(join(dir, `client-${name}.pem`)));
    const c = new grpc.Client(target, creds);
    clients.push(c);
    return c;
  };
  const meta = (): grpc.Metadata => {
    const m = new grpc.Metadata();
    m.set('authorization', `Bearer ${API_KEY}`);
    return m;
  };
  /** check: a Health/Check on `c` (an empty request: the whole server): 'ok' or the error. */
  const check = (c: grpc.Client): Promise<'ok' | grpc.ServiceError> =>
    new Promise((resolve) => {
      c.makeUnaryRequest('/grpc.health.v1.Health/Check', empty, identity, Buffer.alloc(0), meta(), { deadline: Date.now() + 10_000 }, (err) => resolve(err ?? 'ok'));
    });
  /** Watch: a Health/Watch held open on `c`: its first answer, and how it ended (null while open). */
  const watch = async (c: grpc.Client): Promise<{ ended: () => grpc.ServiceError | 'end' | null; cancel: () => void }> => {
    const call = c.makeServerStreamRequest('/grpc.health.v1.Health/Watch', empty, identity, Buffer.alloc(0), meta());
    let ended: grpc.ServiceError | 'end' | null = null;
    call.on('error', (err: grpc.ServiceError) => (ended ??= err));
    call.on('end', () => (ended ??= 'end'));
    await new Promise<void>((resolve, reject) => {
      call.once('data', () => resolve());
      call.once('error', reject);
    });
    return { ended: () => ended, cancel: () => call.cancel() };
  };
  const assertRevoked = (r: 'ok' | grpc.ServiceError, who: string): void => {
    assert.notEqual(r, 'ok', `${who}: served`);
    const e = r as grpc.ServiceError;
    assert.equal(e.code, grpc.status.UNAUTHENTICATED, `${who}: ${e.code} ${e.details}`);
    assert.match(e.details, /^certificate revoked: the client certificate \(serial [0-9a-f]+\) is revoked by this node's --client-crl$/, who);
  };

  it('refuses a revoked client at its first call; a reload closes a newly revoked client\'s open Watch and refuses its new calls; an unrevoked one goes on', async () => {
    const carol = join(dir, 'client-carol.pem');
    const alice = join(dir, 'client-alice.pem');
    const bob = join(dir, 'client-bob.pem');
    await writeCrl([carol], { thisUpdate: new Date(Date.now() - 120_000) });
    const p = start('reload', crlFile);
    const { grpc: target } = await p.ready();
    await p.waitFor(/client CRL loaded/);
    const http = (await p.waitFor(/gateway listening on http (\S+)\n/))[1] ?? '';
    assert.equal(await metric(http, 'snapcoord_client_crl_revoked_certificates'), 1);

    assertRevoked(await check(client(target, 'carol')), 'carol, revoked at start');
    // The CLI shows the reason too.
    const cli = ['cluster', 'status', '--endpoint', target, '--cacert', join(dir, 'ca.pem'), '--client-cert', carol, '--client-key', join(dir, 'client-carol-key.pem'), '--api-key', API_KEY];
    const r = await runCli(cli);
    assert.notEqual(r.code, 0, describeRun(cli, r));
    assert.match(r.stderr, /certificate revoked/, describeRun(cli, r));

    const a = client(target, 'alice');
    const b = client(target, 'bob');
    assert.equal(await check(a), 'ok');
    assert.equal(await check(b), 'ok');
    const aWatch = await watch(a);
    const bWatch = await watch(b);

    // alice revoked, read at once on SIGHUP: her open connection (the Watch on it) is closed.
    await writeCrl([carol, alice], { thisUpdate: new Date(Date.now() - 60_000) });
    p.proc.kill('SIGHUP');
    await p.waitFor(/client CRL read again \(SIGHUP\)/, 10_000);
    await until("alice's Watch to end", 10_000, () => (aWatch.ended() !== null ? true : undefined), { everyMs: 50 });
    assert.notEqual(aWatch.ended(), 'end', 'ended by the connection closing, not by the server finishing it');
    // Two: alice's, and carol's (refused at each call, her channel's connection still open).
    assert.match(p.output, /"closed":2,[^\n]*open client connections over certificates it now revokes are closed/);
    // Her channel reconnects: its calls are refused; so are a new channel's.
    assertRevoked(await check(a), 'alice on her reconnected channel');
    assertRevoked(await check(client(target, 'alice')), 'alice on a new channel');
    // bob untouched: his Watch is open on the same connection, his calls answered.
    assert.equal(bWatch.ended(), null, "bob's Watch is still open");
    assert.equal(await check(b), 'ok');
    assert.match(p.output, /client call refused: its certificate is revoked/);
    assert.equal(await metric(http, 'snapcoord_client_connections_closed_revoked_total'), 2);
    assert.ok((await metric(http, 'snapcoord_client_calls_refused_revoked_total')) >= 4, 'carol twice, alice twice (at least)');
    assert.equal(await metric(http, 'snapcoord_client_crl_revoked_certificates'), 2);
    assert.equal(await metric(http, 'snapcoord_client_crl_file_refused'), 0);

    // A CRL file gone bad: the last good one stays (alice still refused, bob still served).
    await writeFile(crlFile, 'not a CRL\n');
    p.proc.kill('SIGHUP');
    await p.waitFor(/client CRL changed but cannot be used; keeping the previous one/, 10_000);
    assertRevoked(await check(client(target, 'alice')), 'alice after a bad CRL file');
    assert.equal(await check(b), 'ok');
    assert.equal(bWatch.ended(), null);
    assert.equal(await metric(http, 'snapcoord_client_crl_file_refused'), 1, 'the file on disk is refused');
    assert.equal(await metric(http, 'snapcoord_client_crl_revoked_certificates'), 2, 'the last good CRL is in use');

    // bob revoked without a signal: the 5 s look takes it and closes his Watch.
    await writeCrl([carol, alice, bob]);
    await until("bob's Watch to end (the 5 s look)", 20_000, () => (bWatch.ended() !== null ? true : undefined), { everyMs: 100 });
    assertRevoked(await check(b), 'bob after the look');
    aWatch.cancel();
    bWatch.cancel();
    assert.ok(p.running, 'the node still runs');
  });

  it('at start: not a CRL, another CA\'s, one revoking the node\'s own --cert, or without --client-ca is exit 2; an expired one is used, with an error', async () => {
    const other = join(dir, 'other-ca-crl.pem');
    await writeFile(other, await createCrl(await createCa(), []));
    const cases: [string, RegExp][] = [
      [join(dir, 'n1.pem'), /refusing to start: --client-crl: .*n1\.pem: not a CRL/],
      [other, /refusing to start: --client-crl: .*other-ca-crl\.pem: its signature does not verify against the CA/],
    ];
    for (const [crl, re] of cases) {
      const a = args(crl, 'bad');
      const r = await runCli(a);
      assert.equal(r.code, 2, describeRun(a, r));
      assert.match(r.stderr, re, describeRun(a, r));
    }
    const own = join(dir, 'own-crl.pem');
    await writeFile(own, await createCrl(await readCa(dir), [{ serialNumber: serialOf(join(dir, 'n1.pem')) }]));
    const a = args(own, 'own');
    const r = await runCli(a);
    assert.equal(r.code, 2, describeRun(a, r));
    assert.match(r.stderr, /refusing to start: --cert .*n1\.pem \(serial [0-9a-f]+\) is revoked by --client-crl/, describeRun(a, r));
    const noCa = args(own, 'no-ca').filter((x, i, all) => x !== '--client-ca' && all[i - 1] !== '--client-ca');
    const r2 = await runCli(noCa);
    assert.equal(r2.code, 2, describeRun(noCa, r2));
    assert.match(r2.stderr, /client-crl needs client-ca/, describeRun(noCa, r2));

    // Expired (past its nextUpdate): used, as --peer-crl's is (refusing it would lock every client out the day it lapses).
    const expired = join(dir, 'expired-crl.pem');
    await writeFile(expired, await createCrl(await readCa(dir), [{ serialNumber: serialOf(join(dir, 'client-carol.pem')) }], { thisUpdate: new Date(Date.now() - 2 * 86_400_000), nextUpdate: new Date(Date.now() - 86_400_000) }));
    const p = start('expired', expired);
    const { grpc: target } = await p.ready();
    await p.waitFor(/client CRL expired: still used; issue a fresh one/);
    assertRevoked(await check(client(target, 'carol')), 'carol under the expired CRL');
    assert.equal(await check(client(target, 'alice')), 'ok');
  });
});
