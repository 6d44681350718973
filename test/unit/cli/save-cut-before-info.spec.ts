/**
 * `snapshot save` (saveSnapshot) against a stand-in node whose first
 * GetSnapshot fails UNAVAILABLE before sending anything: a cut before the
 * snapshot's info was read wrote nothing, so it is retried from the start.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import * as grpc from '@grpc/grpc-js';

import { saveSnapshot } from '../../../src/cli/snapshot-commands.js';
import { GetSnapshotResponse } from '../../../src/gen/snapcoord/v1/snapshot.js';
import { infoMessage, startSaveStandIn, type SaveStandIn } from './save-stand-in.js';

describe('snapshot save: a cut before the first message', () => {
  let standIn: SaveStandIn | null = null;
  afterEach(async () => {
    await standIn?.close();
    standIn = null;
  });

  it('is retried from the start, and the archive saved whole', async () => {
    const archive = Buffer.alloc(300_000, 7);
    let calls = 0;
    standIn = await startSaveStandIn((call) => {
      calls++;
      if (calls === 1) {
        call.emit('error', { code: grpc.status.UNAVAILABLE, details: 'Connection dropped' });
        return;
      }
      call.write(infoMessage(archive));
      for (let at = 0; at < archive.length; at += 100_000) call.write(GetSnapshotResponse.fromPartial({ data: archive.subarray(at, at + 100_000) }));
      call.end();
    }, 'snapcoord-save-cut-');
    const r = await saveSnapshot(standIn.file, { endpoint: standIn.endpoint, stale: false, timeoutMs: 0, idleTimeoutMs: 10_000, progress: false, resumeBackoffMs: 10 });
    assert.equal(calls, 2);
    assert.equal(r.resumes, 1);
    assert.equal(r.info.id, 'snap-1');
    assert.ok((await readFile(standIn.file)).equals(archive));
  });
});
