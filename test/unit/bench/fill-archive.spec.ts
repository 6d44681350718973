/**
 * bench/lib/fill-archive.ts: the archive builder bench/hash-state.ts and
 * bench/second-save.ts share writes an archive the real reader accepts, with
 * the keys and value bytes asked for.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { writeFillArchive } from '../../../bench/lib/fill-archive.js';
import { inspectArchive } from '../../../src/snapshot/archive.js';

describe('bench fill-archive', () => {
  it('writes K keys fill/%08d of valueOf(j), an archive inspectArchive finds whole; 0600', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'snapcoord-fill-archive-'));
    try {
      const path = await writeFillArchive(dir, 2_500, (j) => Buffer.alloc(10 + (j % 3), 97));
      const r = await inspectArchive(path);
      assert.deepEqual(r.problems, []);
      assert.equal(r.ok, true);
      assert.equal(r.keys, 2_500);
      assert.equal(r.meta?.stateKeys, 2_500);
      assert.equal((await stat(path)).mode & 0o777, 0o600);
      await assert.rejects(writeFillArchive(dir, -1, () => Buffer.alloc(0)), /keys: -1 is not a whole number/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
