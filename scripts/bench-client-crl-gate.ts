// What the --client-crl gate costs a client-plane call: Health/Check calls over mutual TLS (one connection, 32 in
// flight) against bindApiServer's client plane with and without its clientRevocation (clientRevocationInterceptor; a
// CRL of 1,000 serials, the caller's not among them), the two alternated ROUNDS times in one run; prints calls per second, the process's CPU
// time per call (client and server are this one process: less sensitive than the rate to a loaded machine), and B/A.
// Usage: npx tsx scripts/bench-client-crl-gate.ts [calls per round, default 20000] [rounds, default 3]
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import * as grpc from '@grpc/grpc-js';
import { bindApiServer } from '../src/api/server.js';
import { createCrl, PeerCrl, readCa, serverCredentialsFromFiles, writeCa, writeClientCert, writeNodeCert } from '../src/tls/index.js';

const CALLS = Number(process.argv[2] ?? 20_000);
const ROUNDS = Number(process.argv[3] ?? 3);
const IN_FLIGHT = 32;

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'bench-client-crl-'));
  try {
    await writeCa(dir);
    const n1 = await writeNodeCert(dir, 'n1', { ips: ['127.0.0.1'] });
    const alice = await writeClientCert(dir, 'alice');
    const crlFile = join(dir, 'crl.pem');
    const serials = Array.from({ length: 1000 }, (_, i) => ({ serialNumber: (0x10000 + i).toString(16) }));
    await writeFile(crlFile, await createCrl(await readCa(dir), serials));
    const caFile = join(dir, 'ca.pem');
    const crl = await PeerCrl.open({ crlFile, caFile });
    const ca = await readFile(caFile);
    const creds = grpc.credentials.createSsl(ca, await readFile(alice.keyFile), await readFile(alice.certFile));
    const serve = async (gate: boolean): Promise<{ port: number; close: () => Promise<void> }> => {
      const api = await bindApiServer({
        bindAddress: '127.0.0.1:0',
        peerBindAddress: '127.0.0.1:0',
        credentials: serverCredentialsFromFiles({ ...n1, caFile, requireClientCert: true }),
        ...(gate ? { clientRevocation: { revocation: crl } } : {}),
        clientHostBudget: null,
      });
      return { port: api.port, close: () => api.close(0) };
    };
    const round = async (gate: boolean): Promise<{ perSec: number; cpuUs: number }> => {
      const s = await serve(gate);
      const c = new grpc.Client(`127.0.0.1:${s.port}`, creds);
      const call = (): Promise<void> =>
        new Promise((resolve, reject) => {
          c.makeUnaryRequest('/grpc.health.v1.Health/Check', () => Buffer.alloc(0), (b: Buffer) => b, Buffer.alloc(0), (err) => (err !== null ? reject(err) : resolve()));
        });
      for (let i = 0; i < 200; i++) await call(); // warm up: handshake, JIT
      let next = 0;
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      await Promise.all(
        Array.from({ length: IN_FLIGHT }, async () => {
          while (next++ < CALLS) await call();
        }),
      );
      const perSec = CALLS / ((performance.now() - t0) / 1000);
      const used = process.cpuUsage(cpu0);
      c.close();
      await s.close();
      return { perSec, cpuUs: (used.user + used.system) / CALLS };
    };
    const a: { perSec: number; cpuUs: number }[] = [];
    const b: { perSec: number; cpuUs: number }[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const ai = await round(false);
      const bi = await round(true);
      a.push(ai);
      b.push(bi);
      process.stdout.write(
        `round ${r + 1}: no gate ${ai.perSec.toFixed(0)} calls/s ${ai.cpuUs.toFixed(0)} CPU us/call; gate ${bi.perSec.toFixed(0)} calls/s ${bi.cpuUs.toFixed(0)} CPU us/call; ` +
          `gate/no gate rate ${(bi.perSec / ai.perSec).toFixed(3)} CPU ${(bi.cpuUs / ai.cpuUs).toFixed(3)}\n`,
      );
    }
    const med = (xs: number[]): number => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)] ?? 0;
    const [ar, br] = [med(a.map((x) => x.perSec)), med(b.map((x) => x.perSec))];
    const [ac, bc] = [med(a.map((x) => x.cpuUs)), med(b.map((x) => x.cpuUs))];
    process.stdout.write(`median: no gate ${ar.toFixed(0)} calls/s ${ac.toFixed(0)} CPU us/call, gate ${br.toFixed(0)} calls/s ${bc.toFixed(0)} CPU us/call; rate ratio ${(br / ar).toFixed(3)}, CPU ratio ${(bc / ac).toFixed(3)}\n`);
    crl.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
