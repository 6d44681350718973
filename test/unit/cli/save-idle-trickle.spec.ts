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
import { readdir } from 'node:fs/promises';

import { saveSnapshot } from '../../../src/cli/snapshot-commands.js';
import { GetSnapshotResponse } from '../../../src/gen/snapcoord/v1/snapshot.js';
import { infoMessage, startSaveStandIn, type SaveStandIn } from './save-stand-in.js';
import { until } from '../../harness/until.js';

/** EMPTY_MESSAGES_MAX: the most empty messages the stand-in sends (50 ms apart: 20 s) before it ends the call. */
const EMPTY_MESSAGES_MAX = 400;

describe('snapshot save: a server that sends only empty messages', function () {
  this.timeout(60_000);
  let standIn: SaveStandIn | null = null;
  afterEach(async () => {
    await standIn?.close();
    standIn = null;
  });

  it('is given up after --idle-timeout-ms without a byte, nothing saved', async () => {
    const archive = Buffer.alloc(300_000, 7);
    /** endedBy: who ended the call: the client giving up (cancelled), or the stand-in after its last empty message. */
    let endedBy: 'client' | 'server' | null = null;
    standIn = await startSaveStandIn((call) => {
      call.write(infoMessage(archive));
      call.write(GetSnapshotResponse.fromPartial({ data: archive.subarray(0, 1000) }));
      let sent = 0;
      call.on('cancelled', () => (endedBy ??= 'client'));
      const timer = setInterval(() => {
        if (endedBy !== null || sent >= EMPTY_MESSAGES_MAX) {
          clearInterval(timer);
          if (endedBy === null) {
            endedBy = 'server';
            call.end();
          }
          return;
        }
        call.write(GetSnapshotResponse.fromPartial(sent % 2 === 0 ? {} : { data: Buffer.alloc(0) }));
        sent++;
      }, 50);
    }, 'snapcoord-save-trickle-');
    await assert.rejects(
      saveSnapshot(standIn.file, { endpoint: standIn.endpoint, stale: false, timeoutMs: 0, idleTimeoutMs: 1_000, progress: false, resumeRetries: 0 }),
      (err: Error) => {
        assert.match(err.message, /sent nothing for 1000 ms after 1000 bytes/);
        return true;
      },
    );
    // The save gave up by itself, before the stand-in ended the call (after EMPTY_MESSAGES_MAX messages): the
    // stand-in sees the cancel a moment after the client's rejection.
    assert.equal(await until('the stand-in to see the call end', 30_000, () => endedBy ?? undefined), 'client');
    assert.deepEqual(await readdir(standIn.dir), []);
  });
});
