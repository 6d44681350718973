/**
 * rocksDataDir: the RocksDB side of a data directory that the process wiring
 * hands to the directory export (src/ops DataDirStorage). Its lock probe is
 * what the export falls back on where /proc/locks cannot be read.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { rocksDataDir } from '../../../src/storage/rocks-data-dir.js';
import { FORMAT_VERSION } from '../../../src/storage/types.js';

describe('rocksDataDir', function () {
  this.timeout(60_000);
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'snapcoord-rocks-data-dir-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('open creates a node storage that keeps what it was given; lockHeld is true while it is open and false once closed', async () => {
    const data = join(dir, 'data');
    const s = await rocksDataDir.open(data);
    try {
      const membership = { voters: ['n1'], learners: [], addresses: { n1: '127.0.0.1:1' } };
      await s.checkIdentity({ nodeId: 'n1', clusterId: 'c', formatVersion: FORMAT_VERSION }, { createIfNew: true });
      await s.installState([[{ key: Buffer.from('k'), value: Buffer.from('v') }]], { appliedIndex: 5, membership });
      assert.equal(await rocksDataDir.lockHeld(join(data, 'log')), true);
    } finally {
      await s.close();
    }
    assert.equal(await rocksDataDir.lockHeld(join(data, 'log')), false);
    const again = await rocksDataDir.open(data);
    try {
      assert.equal(again.appliedIndex(), 5);
      assert.equal(Buffer.from((await again.get(Buffer.from('k'))) ?? []).toString(), 'v');
    } finally {
      await again.close();
    }
  });

  it('lockHeld is false where there is no database', async () => {
    assert.equal(await rocksDataDir.lockHeld(join(dir, 'nothing-here')), false);
  });
});
