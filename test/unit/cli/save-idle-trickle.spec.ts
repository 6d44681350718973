/**
 * `snapshot save` (saveSnapshot) against a stand-in node that sends the
 * snapshot's info and a first piece, then only messages that carry no byte
 * (empty messages, empty data), one every 50 ms: the download makes no
 * progress, so --idle-timeout-ms gives it up, nothing saved. Before, every
 * message reset the idle timer, so a server sending nothing but empty
 * messages held the save for as long as it liked (there is no overall
 * deadline by default): a backup job never ended, nor failed.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';

import { saveSnapshot } from '../../../src/cli/snapshot-commands.js';
import { ClusterServiceService, Role, StatusResponse } from '../../../src/gen/snapcoord/v1/cluster.js';
import { GetSnapshotResponse, SnapshotServiceService } from '../../../src/gen/snapcoord/v1/snapshot.js';

/** EMPTY_MESSAGES_MAX: the most empty messages the stand-in sends (50 ms apart: 20 s) before it ends the call. */
const EMPTY_MESSAGES_MAX = 400;

describe('snapshot save: a server that sends only empty messages', function () {
  this.timeout(60_000);
  let server: grpc.Server | null = null;
  let dir = '';
  afterEach(async () => {
    server?.forceShutdown();
    server = null;
    if (dir !== '') await rm(dir, { recursive: true, force: true });
  });

  it('is given up after --idle-timeout-ms without a byte, nothing saved', async () => {
    const archive = Buffer.alloc(300_000, 7);
    const digest = createHash('sha256').update(archive).digest('hex');
    const s = new grpc.Server();
    server = s;
    s.addService(ClusterServiceService as unknown as grpc.ServiceDefinition, {
      status: (_call: unknown, cb: grpc.sendUnaryData<StatusResponse>) => cb(null, StatusResponse.fromPartial({ id: 'n1', role: Role.ROLE_LEADER, leaderId: 'n1' })),
    });
    s.addService(SnapshotServiceService as unknown as grpc.ServiceDefinition, {
      getSnapshot: (call: grpc.ServerWritableStream<unknown, GetSnapshotResponse>) => {
        call.write(GetSnapshotResponse.fromPartial({ info: { id: 'snap-1', index: 5n, term: 1n, sizeBytes: BigInt(archive.length), digest, createdAt: new Date(0).toISOString() } }));
        call.write(GetSnapshotResponse.fromPartial({ data: archive.subarray(0, 1000) }));
        let sent = 0;
        let cancelled = false;
        call.on('cancelled', () => (cancelled = true));
        const timer = setInterval(() => {
          if (cancelled || sent >= EMPTY_MESSAGES_MAX) {
            clearInterval(timer);
            if (!cancelled) call.end();
            return;
          }
          call.write(GetSnapshotResponse.fromPartial(sent % 2 === 0 ? {} : { data: Buffer.alloc(0) }));
          sent++;
        }, 50);
      },
    });
    const port = await new Promise<number>((resolve, reject) => s.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
    dir = await mkdtemp(join(tmpdir(), 'snapcoord-save-trickle-'));
    const file = join(dir, 'saved.snap');
    const started = Date.now();
    await assert.rejects(
      saveSnapshot(file, { endpoint: `127.0.0.1:${port}`, stale: false, timeoutMs: 0, idleTimeoutMs: 1_000, progress: false, resumeRetries: 0 }),
      (err: Error) => {
        assert.match(err.message, /sent nothing for 1000 ms after 1000 bytes/);
        return true;
      },
    );
    // Well before the stand-in would have ended the call by itself (20 s).
    assert.ok(Date.now() - started < 15_000, `gave up after ${Date.now() - started} ms`);
    assert.deepEqual(await readdir(dir), []);
  });
});
