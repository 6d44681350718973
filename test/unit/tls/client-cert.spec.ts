/**
 * Client certificates (review18): `snapcoord certs` issued member
 * certificates only (serverAuth and clientAuth, a member URI), so the client
 * certificate a node started with --client-ca asks for was a certificate any
 * TLS client takes for a server's, and the client commands could not present
 * one at all (a --client-ca node refused every CLI call at the handshake).
 * `certs client NAME` issues one for clientAuth only, naming no member; the
 * client commands present it with --client-cert/--client-key.
 */
import { strict as assert } from 'node:assert';
import { X509Certificate } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { dialWithCa } from '../../../src/client/dial.js';
import { CliError } from '../../../src/cli/cli-error.js';
import { dialOf } from '../../../src/cli/client-options.js';
import { gatewayTargetDial } from '../../../src/cli/program.js';
import { checkTlsFiles, memberIdOf, serverCredentialsFromFiles } from '../../../src/tls/credentials.js';
import { caFiles, writeCa, writeClientCert, writeNodeCert } from '../../../src/tls/index.js';
import { describeRun, runCli } from '../../harness/child.js';
import { callWhoAmI, isRefused, show, startServer, tmpDir, type TestServer } from './helpers.js';

describe('client certificates: certs client and --client-cert (review18)', function () {
  this.timeout(60_000);
  let dir: string;
  let cleanup: () => Promise<void>;
  const servers: TestServer[] = [];

  before(async () => {
    ({ dir, cleanup } = await tmpDir('snapcoord-client-cert-'));
    await writeCa(dir);
  });

  after(async () => {
    for (const s of servers) await s.close();
    await cleanup();
  });

  it('is for clientAuth only, names its holder and no member, 0600 key', async () => {
    const f = await writeClientCert(dir, 'alice');
    assert.equal(f.certFile, join(dir, 'client-alice.pem'));
    const cert = new X509Certificate(readFileSync(f.certFile));
    assert.deepEqual(cert.keyUsage, ['1.3.6.1.5.5.7.3.2'], 'extended key usage clientAuth only');
    assert.equal(cert.subjectAltName, 'URI:urn:snapcoord:client:alice');
    assert.equal(memberIdOf(cert), null);
    assert.equal(statSync(f.keyFile).mode & 0o777, 0o600);
    const info = checkTlsFiles({ ...f, caFile: caFiles(dir).caFile });
    assert.equal(info.servesClients, false);
  });

  it('never overwrites the certificate of member client-NAME, whose files have the same names, nor the reverse (review20)', async () => {
    // A member id may start with 'client-': its files are client-<x>.pem and client-<x>-key.pem, the ones `certs client x`
    // writes. Before, either command silently replaced the other's pair: the member then served a clientAuth-only
    // certificate naming no member (its peers and clients refuse it), or the client's holder got a member's certificate.
    const member = await writeNodeCert(dir, 'client-dave', { ips: ['127.0.0.1'] });
    const before = [readFileSync(member.certFile, 'utf8'), readFileSync(member.keyFile, 'utf8')];
    await assert.rejects(writeClientCert(dir, 'dave'), /client-dave\.pem holds the certificate of member client-dave/);
    assert.deepEqual([readFileSync(member.certFile, 'utf8'), readFileSync(member.keyFile, 'utf8')], before, 'the member\'s pair is untouched');
    const client = await writeClientCert(dir, 'carol');
    const clientBefore = [readFileSync(client.certFile, 'utf8'), readFileSync(client.keyFile, 'utf8')];
    await assert.rejects(writeNodeCert(dir, 'client-carol', { ips: ['127.0.0.1'] }), /client-carol\.pem holds client carol's certificate/);
    assert.deepEqual([readFileSync(client.certFile, 'utf8'), readFileSync(client.keyFile, 'utf8')], clientBefore, 'the client\'s pair is untouched');
    // Rotation of each stays as it was.
    await writeNodeCert(dir, 'client-dave', { ips: ['127.0.0.1'] });
    await writeClientCert(dir, 'carol');
    assert.notEqual(readFileSync(member.certFile, 'utf8'), before[0]);
    assert.equal(memberIdOf(new X509Certificate(readFileSync(member.certFile))), 'client-dave');
  });

  it('carries mutual TLS to a node asking for client certificates; the CLI presents it with --client-cert', async () => {
    const n1 = await writeNodeCert(dir, 'n1', { ips: ['127.0.0.1'] });
    const server = await startServer(serverCredentialsFromFiles({ ...n1, caFile: caFiles(dir).caFile, requireClientCert: true }));
    servers.push(server);
    const ca = caFiles(dir).caFile;
    const withCert = dialOf({ cacert: ca, clientCert: join(dir, 'client-alice.pem'), clientKey: join(dir, 'client-alice-key.pem') }, {}, dir);
    assert.equal(await callWhoAmI(server.port, withCert.credentials!), '- ssl', 'answered: a verified client, naming no member');
    const fromEnv = dialOf({ cacert: ca }, { SNAPCOORD_CLIENT_CERT: join(dir, 'client-alice.pem'), SNAPCOORD_CLIENT_KEY: join(dir, 'client-alice-key.pem') }, dir);
    assert.equal(await callWhoAmI(server.port, fromEnv.credentials!), '- ssl');
    const without = await callWhoAmI(server.port, dialOf({ cacert: ca }, {}, dir).credentials!);
    assert.ok(isRefused(without), show(without));
  });

  it('the standalone gateway presents one to its target with --client-cert/--client-key (review20: a --client-ca node refused every gateway call at the handshake)', async () => {
    const n2 = await writeNodeCert(dir, 'n2', { ips: ['127.0.0.1'] });
    const server = await startServer(serverCredentialsFromFiles({ ...n2, caFile: caFiles(dir).caFile, requireClientCert: true }));
    servers.push(server);
    const ca = caFiles(dir).caFile;
    const pair = { certFile: join(dir, 'client-alice.pem'), keyFile: join(dir, 'client-alice-key.pem') };
    assert.equal(await callWhoAmI(server.port, gatewayTargetDial(ca, '', pair).credentials!), '- ssl', 'answered: the gateway presented its client certificate');
    assert.ok(isRefused(await callWhoAmI(server.port, gatewayTargetDial(ca, '').credentials!)), 'without one: refused at the handshake');
    const exit2 = (f: () => unknown, re: RegExp): void => assert.throws(f, (e: unknown) => e instanceof CliError && e.exitCode === 2 && re.test(e.message));
    exit2(() => gatewayTargetDial('', '', pair), /over TLS only/);
    exit2(() => gatewayTargetDial(ca, '', { certFile: ca, keyFile: pair.keyFile }), /^client-cert: .*key does not belong/);
  });

  it('no client takes it for a server: the CLI refuses it, and so does a plain TLS client (curl, the official clients)', async () => {
    const server = await startServer(serverCredentialsFromFiles({ certFile: join(dir, 'client-alice.pem'), keyFile: join(dir, 'client-alice-key.pem'), requireClientCert: false }));
    servers.push(server);
    const r = await callWhoAmI(server.port, dialWithCa(caFiles(dir).caFile, 'operator-key-0123').credentials!);
    assert.ok(isRefused(r), show(r));
    assert.equal(server.handled, 0);
    const err = await new Promise<string>((resolve) => {
      const s = connect({ host: '127.0.0.1', port: server.port, ca: readFileSync(caFiles(dir).caFile), ALPNProtocols: ['h2'] }, () => {
        s.destroy();
        resolve('accepted');
      });
      s.on('error', (e) => resolve(e.message));
    });
    assert.match(err, /unsuitable certificate purpose/);
  });

  it('bad usage is exit 2: a cert without its key, a client certificate without TLS, a bad name', async () => {
    const exit2 = (f: () => unknown, re: RegExp): void => assert.throws(f, (e: unknown) => e instanceof CliError && e.exitCode === 2 && re.test(e.message));
    exit2(() => dialOf({ cacert: caFiles(dir).caFile, clientCert: join(dir, 'client-alice.pem') }, {}, dir), /client-cert and client-key go together/);
    exit2(() => dialOf({ plaintext: true, clientCert: 'a', clientKey: 'b' }, {}, dir), /over TLS only/);
    exit2(() => dialOf({ cacert: caFiles(dir).caFile, clientCert: join(dir, 'ca.pem'), clientKey: join(dir, 'client-alice-key.pem') }, {}, dir), /^client-cert: .*key does not belong/);
    const args = ['certs', 'client', 'bob', '--dir', dir, '--days', '30'];
    const ok = await runCli(args);
    assert.equal(ok.code, 0, describeRun(args, ok));
    assert.match(ok.stdout, /client certificate: .*client-bob\.pem[\s\S]*names: +URI:urn:snapcoord:client:bob/);
    const bad = await runCli(['certs', 'client', '../x', '--dir', dir]);
    assert.equal(bad.code, 2, describeRun(['certs', 'client', '../x'], bad));
    assert.match(bad.stderr, /name: member id "\.\.\/x" is not valid/);
  });
});
