/**
 * The pieces exportDirectory stands on (issue 14 item 9): dataDirInUse sees
 * a RocksDB lock held by a real open RocksStorage, in this process or in
 * another one; DirHandle never goes through a symlink and keeps working
 * through its handle after its path is swapped for one.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { DirHandle, DirHandleError, FD_PATHS } from '../../../src/ops/dir-handle.js';
import { dataDirInUse } from '../../../src/ops/snapshot-export.js';
import { rocksDataDir } from '../../../src/storage/rocks-data-dir.js';
import { RocksStorage } from '../../../src/storage/rocks-storage.js';

describe('export safety: data dir locks and directory handles', function () {
  this.timeout(60_000);
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'snapcoord-export-safety-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('dataDirInUse: true while a RocksStorage holds the data dir (this process), false once closed', async () => {
    const data = join(dir, 'data');
    const s = await RocksStorage.open(data);
    try {
      assert.equal(await dataDirInUse(data, rocksDataDir.lockHeld), true);
    } finally {
      await s.close();
    }
    assert.equal(await dataDirInUse(data, rocksDataDir.lockHeld), false);
  });

  it('dataDirInUse: true while another process holds the lock', async () => {
    const data = join(dir, 'data');
    await (await RocksStorage.open(data)).close();
    const child = spawn(process.execPath, ['-e', `const db = require('rocksdb')(${JSON.stringify(join(data, 'log'))}); db.open({ createIfMissing: false }, (e) => { if (e) { console.error(e.message); process.exit(1); } console.log('open'); }); setInterval(() => {}, 1000);`], {
      cwd: process.cwd(),
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    try {
      await new Promise<void>((resolve, reject) => {
        child.stdout.on('data', (b: Buffer) => (b.toString().includes('open') ? resolve() : undefined));
        child.once('exit', (code) => reject(new Error(`the child exited (${code})`)));
      });
      assert.equal(await dataDirInUse(data, rocksDataDir.lockHeld), true);
    } finally {
      child.kill('SIGKILL');
      await new Promise((r) => (child.exitCode !== null || child.signalCode !== null ? r(null) : child.once('exit', r)));
    }
    assert.equal(await dataDirInUse(data, rocksDataDir.lockHeld), false);
  });

  it('DirHandle.openBeneath refuses a symlink at any component and keeps writing through its handle after a swap', async () => {
    const root = join(dir, 'root');
    const outside = join(dir, 'outside');
    await mkdir(join(root, 'a', 'b'), { recursive: true });
    await mkdir(outside);
    await symlink(outside, join(root, 'link'));
    await writeFile(join(root, 'a', 'file'), 'x');
    for (const names of [['link'], ['a', 'file'], ['a', 'missing'], ['a', '..'], ['a/b']]) {
      await assert.rejects(DirHandle.openBeneath(root, names), DirHandleError, names.join('/'));
    }
    const h = await DirHandle.openBeneath(root, ['a', 'b']);
    try {
      // The attacker moves the real directory away and puts a symlink in its place.
      await rename(join(root, 'a'), join(root, 'a-moved'));
      await symlink(outside, join(root, 'a'));
      await writeFile(h.path('written'), 'through the handle');
      assert.deepEqual(await readdir(outside), []);
      if (FD_PATHS) assert.deepEqual(await readdir(join(root, 'a-moved', 'b')), ['written']);
      await assert.rejects(h.verify(), DirHandleError);
    } finally {
      await h.close();
    }
  });
});
