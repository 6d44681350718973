/**
 * callError (src/cli/client-options.ts): the one line a client command prints
 * for a failed call. Against real grpc-js servers on 127.0.0.1:0: a TLS dial
 * (the CLI's default once ./data/tls/ca.pem exists) to a node serving
 * plaintext says so and names --plaintext; one whose certificate the client
 * refuses says a node answered; nothing listening keeps the "is a node
 * running" hint.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { ClusterClient } from '../../../src/client/cluster-client.js';
import { dialWithCa, type ClientDial } from '../../../src/client/dial.js';
import { callError } from '../../../src/cli/client-options.js';
import { nodeCertFiles } from '../../../src/tls/index.js';
import { writeClusterTls, type ClusterTls } from '../../harness/cluster-tls.js';

function listen(server: grpc.Server): Promise<number> {
  return new Promise((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) => (err !== null ? reject(err) : resolve(port))));
}

describe('cli callError', function () {
  this.timeout(30_000);
  let dir = '';
  let tls: ClusterTls;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'snapcoord-call-error-'));
    tls = await writeClusterTls(join(dir, 'tls'), ['n1'], 'call-error-test-key-0123456789');
  });
  after(async () => {
    if (dir !== '') await rm(dir, { recursive: true, force: true });
  });

  /** statusError: the error of a Status call to `endpoint` with `dial` (TLS against the test CA, the key). */
  const statusError = async (endpoint: string, dial: ClientDial = tls.dial): Promise<unknown> => {
    const client = new ClusterClient(endpoint, dial);
    try {
      await client.status({ deadlineMs: 10_000 });
    } catch (err) {
      return err;
    } finally {
      client.close();
    }
    assert.fail(`Status at ${endpoint} succeeded`);
  };

  it('a TLS call answered in plaintext: says the node has no TLS and names --plaintext', async () => {
    const server = new grpc.Server();
    const port = await listen(server);
    try {
      const endpoint = `127.0.0.1:${port}`;
      const err = await statusError(endpoint);
      assert.equal((err as grpc.ServiceError).code, grpc.status.UNAVAILABLE);
      const line = callError(err, endpoint).message;
      assert.match(line, /^UNAVAILABLE: /);
      assert.match(line, new RegExp(`the node at ${endpoint.replaceAll('.', '\\.')} answered without TLS: it was started without --cert/--key; .*--plaintext`), line);
      assert.doesNotMatch(line, /is a node running/, line);
    } finally {
      server.forceShutdown();
    }
  });

  it("a certificate the client refuses (another member's than --expect-member): says a node answered, names --expect-member", async () => {
    const server = new grpc.Server();
    const files = nodeCertFiles(tls.dir, 'n1');
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createSsl(null, [{ cert_chain: readFileSync(files.certFile), private_key: readFileSync(files.keyFile) }]), (err, p) => (err !== null ? reject(err) : resolve(p))),
    );
    try {
      const endpoint = `127.0.0.1:${port}`;
      const err = await statusError(endpoint, dialWithCa(tls.caFile, tls.apiKey, 'n2'));
      assert.equal((err as grpc.ServiceError).code, grpc.status.UNAVAILABLE);
      const line = callError(err, endpoint).message;
      assert.match(line, /the server's certificate names member n1, not n2/, line);
      assert.match(line, new RegExp(`a node answers at ${endpoint.replaceAll('.', '\\.')}, but its TLS certificate was refused: check --cacert and --expect-member\\)$`), line);
      assert.doesNotMatch(line, /is a node running/, line);
    } finally {
      server.forceShutdown();
    }
  });

  it('nothing listening: asks whether a node runs there', async () => {
    const server = new grpc.Server();
    const port = await listen(server);
    server.forceShutdown();
    const endpoint = `127.0.0.1:${port}`;
    const line = callError(await statusError(endpoint), endpoint).message;
    assert.match(line, /^UNAVAILABLE: /);
    assert.match(line, new RegExp(`\\(is a node running at ${endpoint.replaceAll('.', '\\.')}\\?\\)$`), line);
    assert.doesNotMatch(line, /without TLS/, line);
  });
});
