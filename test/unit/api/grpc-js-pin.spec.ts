/**
 * Both gRPC planes charge every HTTP/2 stream of a connection that proved
 * nothing to its host's budget (HostBudget), counted on grpc-js's own HTTP/2
 * server, which only grpc-js's private `http2Servers` map gives (server.ts
 * http2ServersOf: no public hook sees the streams an interceptor never sees).
 * So grpc-js is pinned to its minor in package.json, and this spec fails
 * when the pin is loosened or the installed grpc-js moves that map or what it
 * holds: then http2ServersOf needs a new look before the pin moves.
 *
 * The peer plane's member credentials (src/tls/credentials.ts,
 * TrackedChannelCredentials) also wrap grpc-js's private
 * `ChannelCredentials._createSecureConnector` to keep the TLS connections
 * they open, which a CRL reload closes (closeRevoked): the last case fails
 * when that method or the connector it returns changes shape.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import http2 from 'node:http2';
import { createServer, type Server as NetServer } from 'node:net';
import * as grpc from '@grpc/grpc-js';

import { http2ServersOf } from '../../../src/api/server.js';

const PINNED = '~1.14.7';

function packageJson(path: string): { version?: string; dependencies?: Record<string, string> } {
  return JSON.parse(readFileSync(new URL(path, import.meta.url), 'utf8')) as { version?: string; dependencies?: Record<string, string> };
}

describe('grpc-js pin: the private http2Servers map the host budget counts streams on', function () {
  this.timeout(20_000);

  it(`package.json pins @grpc/grpc-js to ${PINNED}, and the installed one is that minor`, () => {
    assert.equal(packageJson('../../../package.json').dependencies?.['@grpc/grpc-js'], PINNED);
    const lock = JSON.parse(readFileSync(new URL('../../../package-lock.json', import.meta.url), 'utf8')) as { packages: Record<string, { dependencies?: Record<string, string> }> };
    assert.equal(lock.packages['']?.dependencies?.['@grpc/grpc-js'], PINNED, 'package-lock.json says the same');
    assert.match(packageJson('../../../node_modules/@grpc/grpc-js/package.json').version ?? '', /^1\.14\.([7-9]|[1-9]\d+)$/);
  });

  it('createConnectionInjector puts its HTTP/2 server in http2Servers, and that server sees a stream no interceptor sees', async () => {
    let intercepted = 0;
    const srv = new grpc.Server({
      interceptors: [
        (_m, inner) => {
          intercepted++;
          return inner as grpc.ServerInterceptingCall;
        },
      ],
    });
    const before = new Set(http2ServersOf(srv).keys());
    const injector = srv.createConnectionInjector(grpc.ServerCredentials.createInsecure());
    const made = [...http2ServersOf(srv).keys()].filter((s) => !before.has(s));
    assert.equal(made.length, 1, 'one HTTP/2 server per injector');
    let streams = 0;
    made[0]?.on('stream', () => streams++);
    const tcp: NetServer = createServer((socket) => injector.injectConnection(socket));
    await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', () => r()));
    const port = (tcp.address() as { port: number }).port;
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.on('error', () => undefined);
    try {
      const status = await new Promise<string>((resolve) => {
        const req = session.request({ ':method': 'POST', ':path': '/no.such.Service/Method', 'content-type': 'application/grpc', te: 'trailers' });
        req.on('error', () => undefined);
        req.on('response', (h) => {
          if (h['grpc-status'] !== undefined) resolve(String(h['grpc-status']));
        });
        req.on('trailers', (t) => resolve(String(t['grpc-status'])));
        req.resume();
        req.end(Buffer.alloc(5));
      });
      assert.equal(status, String(grpc.status.UNIMPLEMENTED));
      assert.equal(streams, 1, 'the stream was seen on the injector\'s HTTP/2 server');
      assert.equal(intercepted, 0, 'no interceptor saw it (an interceptor count would miss such a flood)');
    } finally {
      session.destroy();
      injector.destroy();
      tcp.close();
      srv.forceShutdown();
    }
  });

  it('ChannelCredentials._createSecureConnector makes a connector of connect, waitForReady, getCallCredentials and destroy (TrackedChannelCredentials wraps it)', () => {
    const creds = grpc.credentials.createSsl();
    assert.equal(typeof creds._createSecureConnector, 'function');
    const connector = creds._createSecureConnector({ scheme: 'dns', path: '127.0.0.1:1' }, {}, undefined);
    try {
      for (const name of ['connect', 'waitForReady', 'getCallCredentials', 'destroy'] as const) assert.equal(typeof connector[name], 'function', name);
    } finally {
      connector.destroy();
    }
  });
});
