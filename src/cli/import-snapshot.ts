/**
 * --import-snapshot FILE: a node started with a new data dir restores FILE
 * into the cluster once a leader is known, through its own API (which
 * forwards the upload to the leader), so the archive reaches every member
 * through the log like any restore.
 */
import { createReadStream } from 'node:fs';
import { once } from 'node:events';

import { dialChannel, type ClientDial } from '../api/clients.js';
import { SnapshotServiceClient, type RestoreSnapshotResponse } from '../gen/snapcoord/v1/snapshot.js';
import type { Logger, Node } from '../node/node.js';
import { inspectArchive } from '../snapshot/archive.js';
import { CliError, EXIT_CONFIG } from './cli-error.js';

/** checkImportFile verifies every hash of the archive before the node starts; a bad file is a config error. */
export async function checkImportFile(file: string): Promise<void> {
  const r = await inspectArchive(file).catch((err: unknown) => {
    throw new CliError(`--import-snapshot ${file}: ${(err as Error).message}`, EXIT_CONFIG);
  });
  if (!r.ok) throw new CliError(`--import-snapshot ${file}: refused: ${r.problems.join('; ')}`, EXIT_CONFIG);
}

/** importSnapshot waits (bounded) for a leader, then uploads the archive through the node's own client API (with `dial`'s TLS and key). */
export async function importSnapshot(node: Node, apiAddress: string, file: string, log: Logger, dial: ClientDial = {}, waitMs = 60_000): Promise<void> {
  const deadline = Date.now() + waitMs;
  while (node.status().leader === '') {
    if (Date.now() > deadline) throw new Error(`no leader within ${waitMs} ms; the archive was not imported`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const { credentials, options } = dialChannel(dial);
  const client = new SnapshotServiceClient(apiAddress, credentials, options);
  try {
    const res = await new Promise<RestoreSnapshotResponse>((resolve, reject) => {
      const call = client.restoreSnapshot((err, r) => (err !== null ? reject(err) : resolve(r)));
      void (async () => {
        for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) {
          if (!call.write({ data: chunk })) await once(call, 'drain');
        }
        call.end();
      })().catch((err: unknown) => call.destroy(err as Error));
    });
    log.info({ file, index: Number(res.index), digest: res.archive?.digest }, 'imported snapshot restored into the cluster');
  } finally {
    client.close();
  }
}
