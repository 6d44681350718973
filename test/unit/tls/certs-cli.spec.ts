/**
 * `snapcoord certs init` and `snapcoord certs issue`, run as a user would
 * (a child process through tsx): the files they write carry mutual TLS
 * between a real grpc-js server and client, and bad usage is one line on
 * stderr with exit code 2.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { readFileSync, renameSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ensureLocalTls } from '../../../src/tls/certs.js';
import { channelCredentialsFromFiles, serverCredentialsFromFiles } from '../../../src/tls/credentials.js';
import { describeRun, runCli } from '../../harness/child.js';
import { callWhoAmI, show, startServer, tmpDir } from './helpers.js';

function oneLine(stderr: string): string {
  const lines = stderr.split('\n').filter((l) => l !== '');
  assert.equal(lines.length, 1, `one line on stderr, got:\n${stderr}`);
  assert.match(lines[0] ?? '', /^snapcoord: /);
  return lines[0] ?? '';
}

describe('cli: snapcoord certs', function () {
  this.timeout(120_000);
  let dir: string;
  let cleanup: () => Promise<void>;

  before(async () => {
    ({ dir, cleanup } = await tmpDir());
  });

  after(async () => {
    await cleanup?.();
  });

  it('init then issue make files that carry mutual TLS; init refuses to replace the CA without --force', async () => {
    const tls = join(dir, 'tls');
    const init = ['certs', 'init', '--dir', tls];
    const r1 = await runCli(init);
    assert.equal(r1.code, 0, describeRun(init, r1));
    assert.match(r1.stdout, /CA certificate: .*ca\.pem/);
    assert.equal(statSync(tls).mode & 0o777, 0o700);
    assert.equal(statSync(join(tls, 'ca-key.pem')).mode & 0o777, 0o600);

    for (const [id, extra] of [['n1', ['--ip', '127.0.0.1', '--dns', 'localhost']], ['n2', ['--ip', '127.0.0.1']]] as const) {
      const issue = ['certs', 'issue', id, '--dir', tls, ...extra, '--days', '30'];
      const r = await runCli(issue);
      assert.equal(r.code, 0, describeRun(issue, r));
      assert.match(r.stdout, new RegExp(`names: .*URI:urn:snapcoord:node:${id}`));
      assert.equal(statSync(join(tls, `${id}-key.pem`)).mode & 0o777, 0o600);
    }
    const n1 = new X509Certificate(readFileSync(join(tls, 'n1.pem')));
    assert.equal(n1.subjectAltName, 'DNS:localhost, IP Address:127.0.0.1, URI:urn:snapcoord:node:n1');
    assert.ok(Math.abs((Date.parse(n1.validTo) - Date.now()) / 86_400_000 - 30) < 0.1, '--days 30');

    const caFile = join(tls, 'ca.pem');
    const server = await startServer(serverCredentialsFromFiles({ certFile: join(tls, 'n1.pem'), keyFile: join(tls, 'n1-key.pem'), caFile, requireClientCert: true }));
    try {
      const r = await callWhoAmI(server.port, channelCredentialsFromFiles({ caFile, certFile: join(tls, 'n2.pem'), keyFile: join(tls, 'n2-key.pem'), serverMemberId: 'n1' }));
      assert.equal(r, 'n2 ssl', show(r));
    } finally {
      await server.close();
    }

    const caBefore = readFileSync(caFile, 'utf8');
    const again = await runCli(init);
    assert.equal(again.code, 2, describeRun(init, again));
    assert.match(oneLine(again.stderr), /ca\.pem already exists.*--force/);
    assert.equal(readFileSync(caFile, 'utf8'), caBefore, 'CA untouched');
    const forced = await runCli([...init, '--force']);
    assert.equal(forced.code, 0, describeRun([...init, '--force'], forced));
    assert.notEqual(readFileSync(caFile, 'utf8'), caBefore, 'CA replaced with --force');
  });

  it("issue finds the CA key where `snapcoord local` keeps it (<base>/ca/, outside --dir), or at --ca-key (review18)", async () => {
    const base = join(dir, 'local');
    const tls = join(base, 'tls');
    const local = await ensureLocalTls(tls, ['n1']);
    const issue = ['certs', 'issue', 'n4', '--dir', tls, '--ip', '127.0.0.1'];
    const r = await runCli(issue);
    assert.equal(r.code, 0, describeRun(issue, r));
    assert.ok(new X509Certificate(readFileSync(join(tls, 'n4.pem'))).verify(new X509Certificate(readFileSync(local.caFile)).publicKey));
    const elsewhere = join(dir, 'ca-elsewhere.pem');
    renameSync(local.caKeyFile, elsewhere);
    const missing = await runCli(issue);
    assert.equal(missing.code, 2, describeRun(issue, missing));
    assert.match(oneLine(missing.stderr), /ca-key\.pem is missing: .*--ca-key FILE/);
    const given = await runCli([...issue, '--ca-key', elsewhere]);
    assert.equal(given.code, 0, describeRun([...issue, '--ca-key', elsewhere], given));
  });

  it('bad usage: one line, exit 2', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['certs', 'issue', '../evil', '--dir', dir], /id: member id "\.\.\/evil" is not valid/],
      [['certs', 'issue', 'n1', '--dir', dir, '--ip', '300.1.1.1'], /ip: IP address "300\.1\.1\.1"/],
      [['certs', 'issue', 'n1', '--dir', join(dir, 'empty')], /ca\.pem is missing: create the CA first with `snapcoord certs init/],
    ];
    for (const [args, message] of cases) {
      const r = await runCli(args);
      assert.equal(r.code, 2, describeRun(args, r));
      assert.match(oneLine(r.stderr), message);
    }
  });
});
