/**
 * probeListenAddresses (src/cli/listen-probe.ts) and `serve` with a listen
 * address another process holds: refused, naming the address, before the
 * data dir is touched (the README's restart from a Typesense snapshot while
 * `npm start` still ran left the snapshot a used data dir).
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { probeListenAddresses } from '../../../src/cli/listen-probe.js';
import { describeRun, runCli } from '../../harness/child.js';
import { freePorts } from '../../harness/ports.js';

/** hold: a server listening on 127.0.0.1 (a port from the OS), as another process would. */
async function hold(): Promise<{ server: Server; port: number }> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen({ host: '127.0.0.1', port: 0 }, () => resolve()));
  const addr = server.address();
  assert.ok(addr !== null && typeof addr === 'object');
  return { server, port: addr.port };
}

describe('serve: listen addresses probed before the data dir is opened', function () {
  this.timeout(60_000);
  let dir = '';
  let held: { server: Server; port: number };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'snapcoord-listen-probe-'));
    held = await hold();
  });
  after(async () => {
    await new Promise<void>((resolve) => held.server.close(() => resolve()));
    if (dir !== '') await rm(dir, { recursive: true, force: true });
  });

  it('probeListenAddresses refuses a held port naming it, takes free ones and port 0, and leaves them free', async () => {
    await assert.rejects(probeListenAddresses(['127.0.0.1:0', `127.0.0.1:${held.port}`]), new RegExp(`^Error: cannot listen on 127\\.0\\.0\\.1:${held.port}: listen EADDRINUSE`));
    const [free] = await freePorts(1);
    await probeListenAddresses(['127.0.0.1:0', `127.0.0.1:${free}`, `localhost:${free}`]);
    const again = createServer();
    await new Promise<void>((resolve, reject) => {
      again.once('error', reject);
      again.listen({ host: '127.0.0.1', port: free, exclusive: true }, () => resolve());
    });
    await new Promise<void>((resolve) => again.close(() => resolve()));
  });

  for (const plane of ['--grpc', '--peer-listen', '--http'] as const) {
    it(`serve with ${plane} on a held port exits 1 naming it, and never creates --data-dir`, async () => {
      const ports = await freePorts(3);
      const addr = (i: number): string => `127.0.0.1:${ports[i]}`;
      const listen: Record<string, string> = { '--grpc': addr(0), '--peer-listen': addr(1), '--http': addr(2), [plane]: `127.0.0.1:${held.port}` };
      const dataDir = join(dir, `data-${plane.slice(2)}`);
      const args = ['serve', '--id', 'n1', ...Object.entries(listen).flat(), '--data-dir', dataDir, '--api-key', 'listen-probe-test-key-0123456789', '--log-level', 'warn'];
      const r = await runCli(args);
      assert.equal(r.code, 1, describeRun(args, r));
      assert.match(r.stderr, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${held.port}: listen EADDRINUSE`), describeRun(args, r));
      assert.equal(existsSync(dataDir), false, `${dataDir} was created: ${describeRun(args, r)}`);
    });
  }
});
