/**
 * GrpcTransport.askMembership at a sender's advertised peer address (x-snapcoord-peer-address; src/node/vouches.ts
 * asks a sender no member's channel reaches there): the address is the sender's word, so only a plain host:port is
 * dialled. Before, any grpc-js target was: "unix:/path" made this node connect to a local unix socket of the sender's
 * choosing, "unix:7001" to ./7001, an "ipv4:a:1,b:2,…" list to each address in turn.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GrpcTransport } from '../../../src/transport/grpc-transport.js';

describe('GrpcTransport.askMembership: a sender\'s advertised address is dialled only when it is a plain host:port', function () {
  this.timeout(20_000);
  let dir = '';
  let server: Server;
  let connections = 0;
  let socketPath = '';
  let tcpPort = 0;
  let tcp: Server;
  let tcpConnections = 0;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'h-review29-addr-'));
    socketPath = join(dir, 'private.sock');
    server = createServer((s) => {
      connections++;
      s.destroy();
    });
    await new Promise<void>((resolve) => server.listen(socketPath, resolve));
    tcp = createServer((s) => {
      tcpConnections++;
      s.destroy();
    });
    await new Promise<void>((resolve) => tcp.listen(0, '127.0.0.1', resolve));
    tcpPort = (tcp.address() as { port: number }).port;
  });
  after(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await new Promise<void>((resolve) => tcp.close(() => resolve()));
    await rm(dir, { recursive: true, force: true });
  });

  const ask = async (address: string): Promise<unknown> => {
    const transport = new GrpcTransport({ selfId: 'n1', onMessage: () => undefined, unaryDeadlineMs: 2_000 });
    try {
      return await transport.askMembership({ from: 'n1', to: 'stranger', address }, 1_500).then(
        () => null,
        (e: unknown) => e,
      );
    } finally {
      await transport.close();
    }
  };

  it('"unix:<path>" is refused, and the socket never sees a connection', async () => {
    const err = await ask(`unix:${socketPath}`);
    assert.equal(connections, 0, 'the unix socket was connected to');
    assert.ok(err instanceof Error && /not host:port/.test(err.message), String(err));
  });

  it('"ipv4:" lists, "dns:" targets and a scheme as the host are refused without a dial', async () => {
    const errs: [string, unknown][] = [];
    for (const address of [`ipv4:127.0.0.1:${tcpPort},127.0.0.1:${tcpPort}`, `dns:///127.0.0.1:${tcpPort}`, 'unix:7001', 'a@b:1', '127.0.0.1:99999']) errs.push([address, await ask(address)]);
    assert.equal(tcpConnections, 0, 'the listener was connected to');
    for (const [address, err] of errs) assert.ok(err instanceof Error && /not host:port/.test(err.message), `${address}: ${String(err)}`);
  });

  it('a plain host:port is dialled (the control: the listener sees the connection)', async () => {
    const err = await ask(`127.0.0.1:${tcpPort}`);
    assert.ok(err instanceof Error && !/not host:port/.test(err.message), String(err));
    assert.ok(tcpConnections >= 1);
  });
});
