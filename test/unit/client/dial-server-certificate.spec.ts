/**
 * A client dialling with the cluster CA (`--cacert`: the CLI's commands, the
 * gateway's calls to its target, `snapcoord local`) sends its API key with
 * every call, so the server it reaches must be a node, not any holder of a
 * certificate the CA signed (review18). Before, a client certificate of the
 * cluster CA made without an extended key usage (what `openssl req` makes)
 * was taken as the server's for the address it names, and its holder,
 * listening where an operator pointed the CLI, was sent the operator's key;
 * and one member's certificate passed for another's at an address they share
 * (every certificate `snapcoord local` makes names 127.0.0.1).
 * dialWithCa now asks for a server certificate (extended key usage
 * serverAuth) and, with expectMember (`--expect-member`), that member's.
 */
import { strict as assert } from 'node:assert';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { metricsSource } from '../../../src/cli/bench/resources.js';
import { checkTlsFiles } from '../../../src/tls/check-tls-files.js';
import { describeRun, runCli } from '../../harness/child.js';
import { createPrivateKey, webcrypto, X509Certificate } from 'node:crypto';
import { dialWithCa, type ClientDial } from '../../../src/client/dial.js';
import { dialOf } from '../../../src/cli/client-options.js';
import { CliError } from '../../../src/cli/cli-error.js';
import { serverCredentialsFromFiles } from '../../../src/tls/credentials.js';
import { caFiles, readCa, writeCa, writeNodeCert, type CertKeyPem } from '../../../src/tls/index.js';
import { x509 } from '../../../src/tls/x509.js';
import { callWhoAmI, isRefused, show, startServer, tmpDir, writePair, type TestServer } from '../tls/helpers.js';

/** caSigned: a certificate for 127.0.0.1 signed by `ca`, with the extended key usages `ekus` (null: no such extension) and the member URI of `member` (none by default). */
async function caSigned(ca: CertKeyPem, ekus: string[] | null, member?: string): Promise<CertKeyPem> {
  const lib = x509();
  const alg = { name: 'ECDSA', namedCurve: 'P-256' };
  const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const signingKey = await webcrypto.subtle.importKey('pkcs8', createPrivateKey(ca.keyPem).export({ type: 'pkcs8', format: 'der' }), alg, false, ['sign']);
  const names: { type: 'ip' | 'url'; value: string }[] = [{ type: 'ip', value: '127.0.0.1' }];
  if (member !== undefined) names.push({ type: 'url', value: `urn:snapcoord:node:${member}` });
  const extensions: InstanceType<typeof lib.Extension>[] = [new lib.SubjectAlternativeNameExtension(names)];
  if (ekus !== null) extensions.push(new lib.ExtendedKeyUsageExtension(ekus));
  const cert = await lib.X509CertificateGenerator.create({
    subject: 'CN=alice',
    issuer: new X509Certificate(ca.certPem).subject,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 86_400_000),
    publicKey: keys.publicKey,
    signingKey,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    extensions,
  });
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey);
  return { certPem: cert.toString('pem'), keyPem: lib.PemConverter.encode(pkcs8, 'PRIVATE KEY') };
}

describe('dialWithCa: the server must present a node (server) certificate (review18)', function () {
  this.timeout(30_000);
  let dir: string;
  let cleanup: () => Promise<void>;
  const servers: Record<string, TestServer> = {};

  before(async () => {
    ({ dir, cleanup } = await tmpDir('snapcoord-dial-server-'));
    await writeCa(dir);
    const ca = await readCa(dir);
    const pairs: Record<string, { certFile: string; keyFile: string }> = {
      n1: await writeNodeCert(dir, 'n1', { ips: ['127.0.0.1'] }),
      noEku: await writePair(dir, 'no-eku', await caSigned(ca, null)),
      clientOnly: await writePair(dir, 'client-only', await caSigned(ca, [x509().ExtendedKeyUsage.clientAuth])),
      serverNoMember: await writePair(dir, 'server-no-member', await caSigned(ca, [x509().ExtendedKeyUsage.serverAuth])),
      // A member's certificate made by another tool without extended key usages (cert-manager's default usages).
      memberNoEku: await writePair(dir, 'member-no-eku', await caSigned(ca, null, 'n5')),
    };
    for (const [name, p] of Object.entries(pairs)) servers[name] = await startServer(serverCredentialsFromFiles({ ...p, requireClientCert: false }));
  });

  after(async () => {
    for (const s of Object.values(servers)) await s.close();
    await cleanup();
  });

  const call = (name: string, dial: ClientDial): ReturnType<typeof callWhoAmI> => callWhoAmI((servers[name] as TestServer).port, dial.credentials!);
  const refusedFor = async (name: string, dial: ClientDial, reason: RegExp): Promise<void> => {
    const before = (servers[name] as TestServer).handled;
    const r = await call(name, dial);
    assert.ok(isRefused(r), `expected a refusal, got ${show(r)}`);
    assert.match(r.details, reason, show(r));
    assert.equal((servers[name] as TestServer).handled, before, 'no call reached the server');
  };

  it("a node's certificate is taken, with or without --expect-member naming it", async () => {
    assert.equal(await call('n1', dialWithCa(caFiles(dir).caFile)), '- -');
    assert.equal(await call('n1', dialWithCa(caFiles(dir).caFile, 'k', 'n1')), '- -');
  });

  it('a client certificate of the cluster CA without an extended key usage (and naming no member) is refused, nothing sent', async () => {
    await refusedFor('noEku', dialWithCa(caFiles(dir).caFile, 'operator-key-0123'), /not a server certificate: it names no member.*serverAuth/);
  });

  it("a member's certificate without extended key usages (another tool's) is still taken: its member URI says what it is", async () => {
    assert.equal(await call('memberNoEku', dialWithCa(caFiles(dir).caFile)), '- -');
    assert.equal(await call('memberNoEku', dialWithCa(caFiles(dir).caFile, 'k', 'n5')), '- -');
    assert.equal(await call('memberNoEku', { credentials: dialWithCa(caFiles(dir).caFile).credentialsFor!('n5') }), '- -');
  });

  it('a client certificate whose extended key usage is clientAuth only is refused', async () => {
    await refusedFor('clientOnly', dialWithCa(caFiles(dir).caFile), /unsuitable certificate purpose|not a server certificate/);
  });

  it("with --expect-member, another member's certificate (or one naming none) is refused with both names", async () => {
    await refusedFor('n1', dialWithCa(caFiles(dir).caFile, 'k', 'n2'), /names member n1, not n2/);
    await refusedFor('serverNoMember', dialWithCa(caFiles(dir).caFile, 'k', 'n2'), /names member \(none\), not n2/);
  });

  it("credentialsFor(id) (cluster status's other members) asks for that member's certificate, or a server certificate naming none", async () => {
    const dial = dialWithCa(caFiles(dir).caFile);
    await refusedFor('n1', { credentials: dial.credentialsFor!('n3') }, /names member n1, not n3/);
    await refusedFor('noEku', { credentials: dial.credentialsFor!('n3') }, /not a server certificate/);
    assert.equal(await call('n1', { credentials: dial.credentialsFor!('n1') }), '- -');
    assert.equal(await call('serverNoMember', { credentials: dial.credentialsFor!('n1') }), '- -');
  });

  it('the CLI: --expect-member with a bad id or without TLS is a usage error (exit 2), naming the option', async () => {
    const ca = caFiles(dir).caFile;
    const exit2 = (f: () => unknown, re: RegExp): void =>
      assert.throws(f, (e: unknown) => e instanceof CliError && e.exitCode === 2 && re.test(e.message));
    exit2(() => dialOf({ cacert: ca, expectMember: '../n1' }, {}, dir), /^expect-member: member id/);
    exit2(() => dialOf({ plaintext: true, expectMember: 'n1' }, {}, dir), /^expect-member: .*--plaintext/);
    exit2(() => dialOf({ expectMember: 'n1' }, { SNAPCOORD_CACERT: '' }, dir), /^expect-member: .*no CA/);
    exit2(() => dialOf({}, { SNAPCOORD_CACERT: '', SNAPCOORD_EXPECT_MEMBER: 'n1' }, dir), /^expect-member/);
    const dial = dialOf({ cacert: ca }, { SNAPCOORD_EXPECT_MEMBER: 'n2' }, dir);
    await refusedFor('n1', dial, /names member n1, not n2/);
  });

  it('bench --metrics https://…: the key goes only to a node\'s certificate, not to a client certificate of the CA', async () => {
    const paths = { noEku: join(dir, 'no-eku'), n1: join(dir, 'n1') };
    for (const [name, base] of Object.entries(paths)) {
      const seen: string[] = [];
      const server = createServer({ cert: readFileSync(`${base}.pem`), key: readFileSync(`${base}-key.pem`) }, (req, res) => {
        seen.push(String(req.headers.authorization ?? ''));
        res.end('process_resident_memory_bytes 1\nprocess_cpu_seconds_total 1\n');
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      try {
        const url = `https://127.0.0.1:${(server.address() as AddressInfo).port}/metrics`;
        const read = metricsSource(url, { apiKey: 'operator-key-0123', ca: readFileSync(caFiles(dir).caFile) }).read();
        if (name === 'noEku') {
          await assert.rejects(read, /not a server certificate/);
          assert.deepEqual(seen, [], 'no request reached it');
        } else {
          await read;
          assert.deepEqual(seen, ['Bearer operator-key-0123']);
        }
      } finally {
        server.close();
      }
    }
  });

  it('serve refuses a client-plane certificate its clients would refuse (names no member, no serverAuth), at start with exit 2', async () => {
    const info = (name: string) => checkTlsFiles({ certFile: join(dir, `${name}.pem`), keyFile: join(dir, `${name}-key.pem`) }).servesClients;
    assert.deepEqual(
      ['n1', 'no-eku', 'client-only', 'server-no-member', 'member-no-eku'].map(info),
      [true, false, false, true, true],
    );
    const args = ['serve', '--id', 'n1', '--grpc', '127.0.0.1:0', '--peers', 'n1=127.0.0.1:1', '--peer-listen', '127.0.0.1:0', '--http', '127.0.0.1:0',
      '--data-dir', join(dir, 'data-n1'), '--api-key', 'serve-admin-key-0123456789', '--cert', join(dir, 'no-eku.pem'), '--key', join(dir, 'no-eku-key.pem')];
    const r = await runCli(args);
    assert.equal(r.code, 2, describeRun(args, r));
    assert.match(r.stderr, /refusing to start: client TLS: --cert .*no-eku\.pem names no member and its extended key usage does not name serverAuth/);
  });
});
