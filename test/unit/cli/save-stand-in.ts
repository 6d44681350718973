/**
 * SaveStandIn: a grpc-js stand-in node on 127.0.0.1:0 for `snapshot save`
 * (saveSnapshot) specs: ClusterService.Status answers a leader, and
 * SnapshotService.GetSnapshot is the spec's own handler; a temp dir for the
 * saved file. close() stops the server and removes the dir.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';

import { ClusterServiceService, Role, StatusResponse } from '../../../src/gen/snapcoord/v1/cluster.js';
import { GetSnapshotResponse, SnapshotServiceService } from '../../../src/gen/snapcoord/v1/snapshot.js';

export type GetSnapshotHandler = (call: grpc.ServerWritableStream<unknown, GetSnapshotResponse>) => void;

export interface SaveStandIn {
  /** endpoint: the stand-in's address for saveSnapshot. */
  readonly endpoint: string;
  /** file: where the spec saves (in a temp dir of its own). */
  readonly file: string;
  readonly dir: string;
  close(): Promise<void>;
}

/** infoMessage: the first message of a download of `archive` (snapshot snap-1 at index 5). */
export function infoMessage(archive: Buffer): GetSnapshotResponse {
  const digest = createHash('sha256').update(archive).digest('hex');
  return GetSnapshotResponse.fromPartial({ info: { id: 'snap-1', index: 5n, term: 1n, sizeBytes: BigInt(archive.length), digest, createdAt: new Date(0).toISOString() } });
}

export async function startSaveStandIn(getSnapshot: GetSnapshotHandler, dirPrefix: string): Promise<SaveStandIn> {
  const s = new grpc.Server();
  s.addService(ClusterServiceService as unknown as grpc.ServiceDefinition, {
    status: (_call: unknown, cb: grpc.sendUnaryData<StatusResponse>) => cb(null, StatusResponse.fromPartial({ id: 'n1', role: Role.ROLE_LEADER, leaderId: 'n1' })),
  });
  s.addService(SnapshotServiceService as unknown as grpc.ServiceDefinition, { getSnapshot });
  let dir = '';
  let port: number;
  try {
    port = await new Promise<number>((resolve, reject) => s.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
    dir = await mkdtemp(join(tmpdir(), dirPrefix));
  } catch (err) {
    s.forceShutdown();
    throw err;
  }
  return {
    endpoint: `127.0.0.1:${port}`,
    file: join(dir, 'saved.snap'),
    dir,
    async close() {
      s.forceShutdown();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
