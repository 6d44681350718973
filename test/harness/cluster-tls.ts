/**
 * writeClusterTls: the certificates of a TLS test cluster, as `npm start`
 * makes them: a CA and one certificate per node (member id, IP SAN
 * 127.0.0.1) under <dir>, the serve flags that use them (mutual TLS on the
 * peer plane, TLS on the client plane) and the dial of a client holding the
 * CA and the admin key.
 */
import type { ClientDial } from '../../src/client/dial.js';
import { caFiles, channelCredentialsFromFiles, nodeCertFiles, writeCa, writeNodeCert } from '../../src/tls/index.js';

/** ClusterTls: a test cluster's certificates and how its clients dial. */
export interface ClusterTls {
  /** dir: the CA and the node certificates. */
  readonly dir: string;
  readonly caFile: string;
  /** apiKey: the admin key every node serves with and every client sends. */
  readonly apiKey: string;
  /** dial: TLS verified against caFile, apiKey on every call. */
  readonly dial: ClientDial;
  /** serveFlags: node `id`'s serve TLS flags: its certificate for both planes, the CA for peers. */
  serveFlags(id: string): string[];
}

/** writeClusterTls writes a CA and a certificate for each of `ids` into `dir` (created). */
export async function writeClusterTls(dir: string, ids: readonly string[], apiKey: string): Promise<ClusterTls> {
  await writeCa(dir);
  for (const id of ids) await writeNodeCert(dir, id, { ips: ['127.0.0.1'] });
  const caFile = caFiles(dir).caFile;
  return {
    dir,
    caFile,
    apiKey,
    dial: { credentials: channelCredentialsFromFiles({ caFile }), apiKey },
    serveFlags(id: string): string[] {
      const f = nodeCertFiles(dir, id);
      return ['--peer-cert', f.certFile, '--peer-key', f.keyFile, '--peer-ca', caFile, '--cert', f.certFile, '--key', f.keyFile];
    },
  };
}
