/**
 * --import-snapshot FILE: a node started with a new data dir restores FILE
 * into the cluster once a leader is known, through its own API (which
 * forwards the upload to the leader), so the archive reaches every member
 * through the log like any restore. FILE may be s3://bucket/key: the object
 * is downloaded into the data dir first and refused when its bytes do not
 * match the SHA-256 stored with it (fetchImportFromS3).
 */
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { S3Destination, S3Error, type S3Settings } from '../ops/s3.js';
import { createReadStream } from 'node:fs';

import { uploadArchive } from '../client/archive-upload.js';
import type { ClientDial } from '../client/dial.js';
import { SnapshotClient } from '../client/snapshot-client.js';
import type { Node } from '../node/node.js';
import type { Logger } from '../node/logger.js';
import { inspectArchive } from '../snapshot/archive.js';
import { CliError, EXIT_CONFIG } from './cli-error.js';

/** IMPORT_FILE: where an s3:// import is downloaded, in the data dir. */
export const IMPORT_FILE = 'import.snapshot';

/**
 * fetchImportFromS3 downloads the archive at `url` to <dataDir>/import.snapshot
 * (0600, through a .part file), checking every byte against the SHA-256
 * stored with the object. Errors: CliError (exit 2) naming the URL and the
 * reason (no such object, refused, corrupt, no stored SHA-256).
 */
export async function fetchImportFromS3(url: string, dataDir: string, settings: S3Settings, log: Logger): Promise<string> {
  const file = join(dataDir, IMPORT_FILE);
  let d: S3Destination | null = null;
  try {
    d = await S3Destination.open(url, settings);
    const r = await d.downloadToFile(d.prefix, file);
    log.info({ url, sizeBytes: r.sizeBytes, sha256: r.sha256 }, '--import-snapshot: archive downloaded from S3 and its SHA-256 checks out');
    return file;
  } catch (err) {
    throw new CliError(`--import-snapshot ${url}: ${err instanceof S3Error ? err.message : (err as Error).message}`, EXIT_CONFIG);
  } finally {
    d?.close();
  }
}

/** checkImportFile verifies every hash of the archive before the node starts; a bad file is a config error. */
export async function checkImportFile(file: string): Promise<void> {
  const r = await inspectArchive(file).catch((err: unknown) => {
    throw new CliError(`--import-snapshot ${file}: ${(err as Error).message}`, EXIT_CONFIG);
  });
  if (!r.ok) throw new CliError(`--import-snapshot ${file}: refused: ${r.problems.join('; ')}`, EXIT_CONFIG);
}

/** importSnapshot waits (bounded) for a leader, then uploads the archive through the node's own client API (with `dial`'s TLS and key). */
export async function importSnapshot(node: Node, apiAddress: string, file: string, log: Logger, dial: ClientDial = {}, waitMs = 60_000): Promise<void> {
  // The monotonic clock: a wall clock stepped back held this wait for the step's length.
  const deadline = performance.now() + waitMs;
  while (node.status().leader === '') {
    if (performance.now() > deadline) throw new Error(`no leader within ${waitMs} ms; the archive was not imported`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const client = new SnapshotClient(apiAddress, dial);
  try {
    const res = await uploadArchive(client, createReadStream(file, { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>);
    log.info({ file, index: Number(res.index), digest: res.archive?.digest }, 'imported snapshot restored into the cluster');
  } finally {
    client.close();
  }
}
