/**
 * layBenchCluster: what a bench's local cluster of real nodes needs before they start, laid out
 * once for every bench that runs one (bench/snapshot-cluster.ts, bench/second-save.ts): a cluster
 * CA and each node's certificate for 127.0.0.1 (TLS on both planes), the API key file, three free
 * loopback ports a node (gRPC, HTTP, peer), and each node's `serve` arguments.
 */
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { dialWithCa, type ClientDial } from '../../src/client/dial.js';
import { caFiles, nodeCertFiles, writeCa, writeNodeCert } from '../../src/tls/index.js';
import type { Child } from '../../test/harness/child.js';
import { freePorts, startOnFreshPorts } from '../../test/harness/ports.js';
import { serveListening } from '../../test/harness/serve-process.js';

export interface BenchClusterLayout {
  readonly ids: readonly string[];
  /** ca: the cluster CA's certificate file (the CLI's --cacert). */
  readonly ca: string;
  /** dial: a client's dial of this cluster (its CA, the API key). */
  readonly dial: ClientDial;
  /** grpc / http / peer: node i's listen addresses. */
  grpc(i: number): string;
  http(i: number): string;
  peer(i: number): string;
  /** serveArgs: `serve` and its arguments for node `id` (after the CLI's path). */
  serveArgs(id: string, logLevel: string): string[];
}

export async function layBenchCluster(dir: string, apiKey: string, ids: readonly string[] = ['n1', 'n2', 'n3']): Promise<BenchClusterLayout> {
  const certDir = join(dir, 'tls');
  await writeCa(certDir);
  for (const id of ids) await writeNodeCert(certDir, id, { ips: ['127.0.0.1'] });
  const ca = caFiles(certDir).caFile;
  const keyFile = join(dir, 'api-key');
  await writeFile(keyFile, `${apiKey}\n`, { mode: 0o600 });
  const n = ids.length;
  const ports = await freePorts(3 * n);
  const addr = (i: number): string => `127.0.0.1:${ports[i] ?? 0}`;
  const peers = ids.map((id, i) => `${id}=${addr(i + 2 * n)}`).join(',');
  return {
    ids,
    ca,
    dial: dialWithCa(ca, apiKey),
    grpc: (i) => addr(i),
    http: (i) => addr(i + n),
    peer: (i) => addr(i + 2 * n),
    serveArgs: (id, logLevel) => {
      const i = ids.indexOf(id);
      if (i < 0) throw new Error(`no node ${id} in this cluster`);
      const f = nodeCertFiles(certDir, id);
      return [
        'serve', '--id', id, '--grpc', addr(i), '--peer-listen', addr(i + 2 * n), '--http', addr(i + n), '--peers', peers,
        '--data-dir', join(dir, id), '--log-level', logLevel, '--api-key-file', keyFile,
        '--peer-cert', f.certFile, '--peer-key', f.keyFile, '--peer-ca', ca, '--cert', f.certFile, '--key', f.keyFile,
      ];
    },
  };
}

/**
 * startBenchCluster: layBenchCluster in `dir`, then spawn(lay, id, i) starts each node's `serve` (the
 * caller's way: flags, environment); resolves once every node listens (up to 90 s each: several
 * processes compiling at once on a loaded machine), with the layout and the children in `ids`'
 * order. A start that found a port taken (or failed any way) kills its children and empties `dir`;
 * only a taken port is tried again, on new ports from the OS (startOnFreshPorts).
 */
export async function startBenchCluster(
  dir: string,
  apiKey: string,
  spawn: (lay: BenchClusterLayout, id: string, i: number) => Child,
  ids: readonly string[] = ['n1', 'n2', 'n3'],
): Promise<{ lay: BenchClusterLayout; children: Child[] }> {
  return startOnFreshPorts(`starting ${ids.join(',')} in ${dir}`, async () => {
    await mkdir(dir, { recursive: true });
    const children: Child[] = [];
    try {
      const lay = await layBenchCluster(dir, apiKey, ids);
      for (const [i, id] of ids.entries()) children.push(spawn(lay, id, i));
      await Promise.all(children.map((c, i) => serveListening(c, ids[i] as string, 90_000)));
      return { lay, children };
    } catch (err) {
      await Promise.all(children.map((c) => c.kill('SIGKILL')));
      await rm(dir, { recursive: true, force: true });
      throw err;
    }
  });
}
