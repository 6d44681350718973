/**
 * `snapshot save` (saveSnapshot) against a stand-in node whose first
 * GetSnapshot fails UNAVAILABLE before sending anything: a cut before the
 * snapshot's info was read wrote nothing, so it is retried from the start.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';

import { saveSnapshot } from '../../../src/cli/snapshot-commands.js';
import { ClusterServiceService, Role, StatusResponse } from '../../../src/gen/snapcoord/v1/cluster.js';
import { GetSnapshotResponse, SnapshotServiceService } from '../../../src/gen/snapcoord/v1/snapshot.js';

describe('snapshot save: a cut before the first message', () => {
  let server: grpc.Server | null = null;
  let dir = '';
  afterEach(async () => {
    server?.forceShutdown();
    server = null;
    if (dir !== '') await rm(dir, { recursive: true, force: true });
  });

  it('is retried from the start, and the archive saved whole', async () => {
    const archive = Buffer.alloc(300_000, 7);
    const digest = createHash('sha256').update(archive).digest('hex');
    let calls = 0;
    const s = new grpc.Server();
    server = s;
    s.addService(ClusterServiceService as unknown as grpc.ServiceDefinition, {
      status: (_call: unknown, cb: grpc.sendUnaryData<StatusResponse>) => cb(null, StatusResponse.fromPartial({ id: 'n1', role: Role.ROLE_LEADER, leaderId: 'n1' })),
    });
    s.addService(SnapshotServiceService as unknown as grpc.ServiceDefinition, {
      getSnapshot: (call: grpc.ServerWritableStream<unknown, GetSnapshotResponse>) => {
        calls++;
        if (calls === 1) {
          call.emit('error', { code: grpc.status.UNAVAILABLE, details: 'Connection dropped' });
          return;
        }
        call.write(GetSnapshotResponse.fromPartial({ info: { id: 'snap-1', index: 5n, term: 1n, sizeBytes: BigInt(archive.length), digest, createdAt: new Date(0).toISOString() } }));
        for (let at = 0; at < archive.length; at += 100_000) call.write(GetSnapshotResponse.fromPartial({ data: archive.subarray(at, at + 100_000) }));
        call.end();
      },
    });
    const port = await new Promise<number>((resolve, reject) => s.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
    dir = await mkdtemp(join(tmpdir(), 'snapcoord-save-cut-'));
    const file = join(dir, 'saved.snap');
    const r = await saveSnapshot(file, { endpoint: `127.0.0.1:${port}`, stale: false, timeoutMs: 0, idleTimeoutMs: 10_000, progress: false, resumeBackoffMs: 10 });
    assert.equal(calls, 2);
    assert.equal(r.resumes, 1);
    assert.equal(r.info.id, 'snap-1');
    assert.ok((await readFile(file)).equals(archive));
  });
});
