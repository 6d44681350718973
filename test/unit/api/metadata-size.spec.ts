/**
 * The client plane refuses a call whose request metadata is over
 * METADATA_BYTES_MAX at once (metadata-size.ts). Before, a call kept up to
 * 64 KiB of made-up headers for as long as it was open: a kv.read key's
 * never-ending Health/Watch streams with ~60 KB each took a live node from
 * 144 to 472 MiB (2,165 open).
 */
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import * as grpc from '@grpc/grpc-js';

import { clientAuthInterceptor } from '../../../src/api/auth-interceptor.js';
import { METADATA_BYTES_MAX, PEER_METADATA_BYTES_MAX, metadataBytes } from '../../../src/api/metadata-size.js';
import { RaftServiceService } from '../../../src/gen/snapcoord/v1/raft.js';
import { CLIENT_ADDRESS_METADATA_KEY, CLUSTER_ID_METADATA_KEY } from '../../../src/transport/peer-guard.js';
import { until } from '../../harness/until.js';
import { soloServer } from './harness.js';

const KEY = 'metadata-size-admin-key';
const NARROW = 'metadata-size-kv-read-key';

describe('metadataBytes: names and every value', () => {
  it('counts a repeated name once per value, binary values by their bytes', () => {
    const md = new grpc.Metadata();
    md.add('x-a', 'abc');
    md.add('x-a', 'de');
    md.add('x-b-bin', Buffer.alloc(10));
    assert.equal(metadataBytes(md), 3 + 3 + 3 + 2 + 7 + 10);
  });
});

describe('gRPC client plane: request metadata over METADATA_BYTES_MAX is refused at once (real HTTP/2)', function () {
  this.timeout(30_000);
  const solo = soloServer({ interceptors: [clientAuthInterceptor({ adminKey: KEY, keys: [{ key: NARROW, actions: ['kv.read'] }] })] });

  /** watch opens a Health/Watch with `key` and `extra` metadata; resolves with its grpc-status once it ends, or 'open' once it answered SERVING. */
  function watch(s: http2.ClientHttp2Session, key: string, extra: Record<string, string>): Promise<string> {
    return new Promise((resolve) => {
      const req = s.request({ ':method': 'POST', ':path': '/grpc.health.v1.Health/Watch', 'content-type': 'application/grpc', te: 'trailers', authorization: `Bearer ${key}`, ...extra });
      req.on('error', () => resolve('error'));
      req.on('response', (h) => {
        if (h['grpc-status'] !== undefined) resolve(`${String(h['grpc-status'])} ${decodeURIComponent(String(h['grpc-message'] ?? ''))}`);
      });
      req.on('trailers', (t) => resolve(String(t['grpc-status'])));
      req.on('data', () => resolve('open'));
      req.end(Buffer.alloc(5));
    });
  }

  it('a never-ending Health/Watch with 20 KB of made-up metadata is refused RESOURCE_EXHAUSTED; with 1 KB it stays open', async () => {
    const s = http2.connect(`http://${solo.api.address}`);
    s.on('error', () => undefined);
    try {
      const junk = 'x'.repeat(5_000);
      // Before: an open stream like any other, its 20 KB kept while it lasts.
      const big = await watch(s, NARROW, { 'x-a': junk, 'x-b': junk, 'x-c': junk, 'x-d': junk });
      assert.match(big, /^8 request metadata of \d+ bytes is over this server's cap of 16384/, big);
      assert.ok(4 * 5_000 > METADATA_BYTES_MAX);
      assert.equal(await watch(s, NARROW, { 'x-a': 'x'.repeat(1_000) }), 'open');
      await until('the session to stay usable', 5_000, () => (s.destroyed ? undefined : true));
    } finally {
      s.destroy();
    }
  });
});

describe('gRPC peer plane: request metadata over PEER_METADATA_BYTES_MAX is refused at once (real HTTP/2)', function () {
  this.timeout(30_000);
  const solo = soloServer({});

  /** append opens an AppendEntries call with the cluster id and `extra` metadata; resolves with its grpc-status once it ends, or 'open' once the server answered its headers. */
  function append(s: http2.ClientHttp2Session, extra: Record<string, string>): Promise<string> {
    return new Promise((resolve) => {
      const req = s.request({ ':method': 'POST', ':path': RaftServiceService.appendEntries.path, 'content-type': 'application/grpc', te: 'trailers', [CLUSTER_ID_METADATA_KEY]: 'snapcoord', ...extra });
      req.on('error', () => resolve('error'));
      req.on('response', (h) => resolve(h['grpc-status'] !== undefined ? `${String(h['grpc-status'])} ${decodeURIComponent(String(h['grpc-message'] ?? ''))}` : 'open'));
      req.on('trailers', (t) => resolve(String(t['grpc-status'])));
    });
  }

  it('an admitted append stream with 10 KB of made-up metadata is refused RESOURCE_EXHAUSTED; an honest one (longest client address) stays open', async () => {
    const s = http2.connect(`http://${solo.api.peerAddress}`);
    s.on('error', () => undefined);
    try {
      const junk = 'x'.repeat(5_000);
      // Before: under the client plane's 16 KiB and Node's 64 KiB, admitted and kept while the stream lasts.
      const big = await append(s, { 'x-a': junk, 'x-b': junk });
      assert.match(big, /^8 request metadata of \d+ bytes is over this server's cap of 4096/, big);
      assert.ok(2 * 5_000 < METADATA_BYTES_MAX && 2 * 5_000 > PEER_METADATA_BYTES_MAX);
      assert.equal(await append(s, { [CLIENT_ADDRESS_METADATA_KEY]: `${'h'.repeat(253)}:65535`, 'user-agent': 'grpc-node-js/1.14.7' }), 'open');
      await until('the session to stay usable', 5_000, () => (s.destroyed ? undefined : true));
    } finally {
      s.destroy();
    }
  });
});
