/**
 * The trust options of `snapcoord serve` (issue 13): two planes, TLS files
 * that go together, no plaintext listener off loopback unless told, keys
 * from a file, the client message cap.
 */
import assert from 'node:assert/strict';
import { CliError } from '../../../src/cli/cli-error.js';
import { isLoopback } from '../../../src/client/address.js';
import { resolveServeConfig } from '../../../src/cli/config.js';

const KEY = { SNAPCOORD_API_KEY: 'k'.repeat(24) };

function refused(flags: Record<string, unknown>, re: RegExp, env: Record<string, string> = KEY, read?: (p: string) => string): void {
  assert.throws(
    () => resolveServeConfig(flags, env, read),
    (err: unknown) => {
      assert.ok(err instanceof CliError, String(err));
      assert.equal(err.exitCode, 2);
      assert.match(err.message, re);
      return true;
    },
  );
}

describe('serve configuration: planes, TLS, keys, limits', () => {
  it('defaults: client plane 127.0.0.1:7001, peer plane at this node\'s --peers address (127.0.0.1:7101 alone), advertised client address = --grpc', () => {
    const alone = resolveServeConfig({}, KEY);
    assert.equal(alone.grpcAddress, '127.0.0.1:7001');
    assert.equal(alone.peerListen, '127.0.0.1:7101');
    assert.deepEqual(alone.peers, { n1: '127.0.0.1:7101' });
    assert.equal(alone.advertiseClient, '127.0.0.1:7001');
    assert.equal(alone.maxRequestBytes, 1536 * 1024);
    assert.equal(alone.peerTls, null);
    assert.equal(alone.clientTls, null);
    assert.equal(alone.verifyImageRecords, false, 'a state image is checked by its files\' SHA-256s unless asked');
    assert.equal(resolveServeConfig({ verifyImageRecords: true }, KEY).verifyImageRecords, true);
    assert.equal(resolveServeConfig({}, { ...KEY, SNAPCOORD_VERIFY_IMAGE_RECORDS: 'true' }).verifyImageRecords, true);
    const three = resolveServeConfig({ id: 'n2', peers: 'n1=127.0.0.1:7101,n2=127.0.0.1:7102,n3=127.0.0.1:7103', grpc: '127.0.0.1:7002' }, KEY);
    assert.equal(three.peerListen, '127.0.0.1:7102');
  });

  it('the client and peer planes cannot share a listener', () => {
    refused({ grpc: '127.0.0.1:7101' }, /separate listeners/);
    refused({ grpc: '0.0.0.0:7101', peerListen: '127.0.0.1:7101' }, /separate listeners/);
  });

  it('a wildcard --grpc advertises the peer address\'s host; --advertise-client overrides', () => {
    const c = resolveServeConfig({ grpc: '0.0.0.0:7001', peers: 'n1=10.1.2.3:7101', peerListen: '127.0.0.1:7101', insecurePlaintext: true }, KEY);
    assert.equal(c.advertiseClient, '10.1.2.3:7001');
    assert.equal(resolveServeConfig({ grpc: '127.0.0.1:7001', advertiseClient: 'n1.example:7001' }, KEY).advertiseClient, 'n1.example:7001');
  });

  it('refuses a plaintext listener on a non-loopback address, naming the flags that fix it; --insecure-plaintext allows it', () => {
    refused({ peers: 'n1=10.0.0.1:7101' }, /without TLS on a non-loopback address: peer-listen 10\.0\.0\.1:7101 \(give --peer-cert, --peer-key, --peer-ca\).*--insecure-plaintext/);
    refused({ grpc: '0.0.0.0:7001' }, /grpc 0\.0\.0\.0:7001 \(give --cert, --key\)/);
    refused({ http: '0.0.0.0:8108' }, /http 0\.0\.0\.0:8108 \(give --http-cert, --http-key\)/);
    const c = resolveServeConfig({ grpc: '0.0.0.0:7001', http: '0.0.0.0:8108', peers: 'n1=10.0.0.1:7101', insecurePlaintext: true }, KEY);
    assert.equal(c.insecurePlaintext, true);
    // With TLS files the same addresses are fine.
    const tls = resolveServeConfig(
      { grpc: '0.0.0.0:7001', peers: 'n1=10.0.0.1:7101', peerCert: '/t/n1.pem', peerKey: '/t/n1-key.pem', peerCa: '/t/ca.pem', cert: '/t/n1.pem', key: '/t/n1-key.pem' },
      KEY,
    );
    assert.deepEqual(tls.peerTls, { certFile: '/t/n1.pem', keyFile: '/t/n1-key.pem', caFile: '/t/ca.pem' });
    assert.deepEqual(tls.clientTls, { certFile: '/t/n1.pem', keyFile: '/t/n1-key.pem', clientCaFile: '' });
  });

  it('under peer TLS with no --cluster-id, a warning: two clusters of one CA on the default id take each other\'s peer calls; none once an id is given (snapcoord too) or without peer TLS', () => {
    const tls = { peerCert: '/t/n1.pem', peerKey: '/t/n1-key.pem', peerCa: '/t/ca.pem' };
    const cfg = resolveServeConfig(tls, KEY);
    assert.equal(cfg.clusterId, 'snapcoord');
    assert.match(cfg.clusterIdWarning, /^no --cluster-id: this node uses the default, snapcoord\. Another cluster whose peer certificates the same CA \(--peer-ca\) signed, on the default id too, takes this cluster's peer calls/);
    for (const given of [resolveServeConfig({ ...tls, clusterId: 'snapcoord' }, KEY), resolveServeConfig({ ...tls, clusterId: 'orders-eu' }, KEY), resolveServeConfig(tls, { ...KEY, SNAPCOORD_CLUSTER_ID: 'orders-eu' })]) {
      assert.equal(given.clusterIdWarning, '', given.clusterId);
    }
    assert.equal(resolveServeConfig({}, KEY).clusterIdWarning, '', 'no peer TLS: no CA to share (loopback or --insecure-plaintext)');
  });

  it('TLS files go together', () => {
    refused({ peerCert: '/t/a.pem', peerKey: '/t/a-key.pem' }, /peer-cert, peer-key and peer-ca go together/);
    refused({ cert: '/t/a.pem' }, /cert and key go together/);
    refused({ clientCa: '/t/ca.pem' }, /client-ca needs cert and key/);
    refused({ httpKey: '/t/k.pem' }, /http-cert and http-key go together/);
    refused({ peerCrl: '/t/crl.pem' }, /peer-crl needs peer-cert, peer-key and peer-ca/);
    const crl = resolveServeConfig({ peerCert: '/t/n1.pem', peerKey: '/t/n1-key.pem', peerCa: '/t/ca.pem', peerCrl: '/t/crl.pem' }, KEY);
    assert.deepEqual(crl.peerTls, { certFile: '/t/n1.pem', keyFile: '/t/n1-key.pem', caFile: '/t/ca.pem', crlFile: '/t/crl.pem' });
    assert.equal(resolveServeConfig({ peerCert: '/t/n1.pem', peerKey: '/t/n1-key.pem', peerCa: '/t/ca.pem' }, { SNAPCOORD_PEER_CRL: '/t/env-crl.pem', ...KEY }).peerTls?.crlFile, '/t/env-crl.pem');
  });

  it('isLoopback', () => {
    for (const h of ['127.0.0.1', '127.1.2.3', '::1', '[::1]', 'localhost']) assert.equal(isLoopback(h), true, h);
    for (const h of ['0.0.0.0', '::', '10.0.0.1', 'example.com', '128.0.0.1']) assert.equal(isLoopback(h), false, h);
  });

  it('--api-key-file: the first line is the key; unreadable or empty files and both sources are refused without echoing a key', () => {
    const read = (p: string): string => {
      if (p === '/keys/good') return 'file-key-0123456789abcdef\nignored\n';
      if (p === '/keys/empty') return '\n';
      throw Object.assign(new Error('nope'), { code: 'ENOENT' });
    };
    assert.equal(resolveServeConfig({ apiKeyFile: '/keys/good' }, {}, read).apiKey, 'file-key-0123456789abcdef');
    assert.equal(resolveServeConfig({}, { SNAPCOORD_API_KEY_FILE: '/keys/good' }, read).apiKeyFile, '/keys/good');
    refused({ apiKeyFile: '/keys/missing' }, /api-key-file \/keys\/missing: cannot read: ENOENT/, {}, read);
    refused({ apiKeyFile: '/keys/empty' }, /first line is empty/, {}, read);
    refused({ apiKeyFile: '/keys/good', apiKey: 'flag-key-0123456789' }, /give one of them/, {}, read);
  });

  it('--max-request-bytes is bounded', () => {
    assert.equal(resolveServeConfig({ maxRequestBytes: '4194304' }, KEY).maxRequestBytes, 4 << 20);
    refused({ maxRequestBytes: '100' }, /max-request-bytes: 100 is out of range/);
  });
});
