/** tightenDataDir: a data directory left 0755 / 0644 ends 0700 / 0600; links are not followed; nothing is widened. */
import assert from 'node:assert/strict';
import { chmod, lstat, mkdir, mkdtemp, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { privateMode, tightenDataDir } from '../../../src/ops/data-dir-perms.js';

async function modeOf(path: string): Promise<number> {
  return (await lstat(path)).mode & 0o7777;
}

const octal = (m: number): string => `0${m.toString(8)}`;

describe('tightenDataDir', () => {
  let base = '';
  beforeEach(async () => {
    base = await mkdtemp(join(tmpdir(), 'snapcoord-perms-'));
  });
  afterEach(async () => {
    await rm(base, { recursive: true, force: true });
  });

  /** wideDataDir builds data/ (0755) with files 0644 and nested directories 0755, and an outside dir and file behind links. */
  async function wideDataDir(): Promise<{ data: string; outsideDir: string; outsideFile: string; paths: string[] }> {
    const data = join(base, 'data');
    const outsideDir = join(base, 'outside');
    const outsideFile = join(base, 'outside.txt');
    await mkdir(join(data, 'state', 'rocks'), { recursive: true });
    await mkdir(join(data, 'snapshots', 's1'), { recursive: true });
    await mkdir(outsideDir);
    await writeFile(join(outsideDir, 'inner.txt'), 'x');
    await writeFile(outsideFile, 'x');
    const files = [join(data, 'api-key'), join(data, 'state', 'rocks', '000001.log'), join(data, 'snapshots', 's1', 'state.bin'), join(data, 'tasks.json')];
    for (const f of files) await writeFile(f, 'data');
    const dirs = [data, join(data, 'state'), join(data, 'state', 'rocks'), join(data, 'snapshots'), join(data, 'snapshots', 's1')];
    for (const d of dirs) await chmod(d, 0o755);
    for (const f of files) await chmod(f, 0o644);
    await chmod(outsideDir, 0o755);
    await chmod(join(outsideDir, 'inner.txt'), 0o644);
    await chmod(outsideFile, 0o644);
    await symlink(outsideFile, join(data, 'link-to-file'));
    await symlink(outsideDir, join(data, 'state', 'link-to-dir'));
    return { data, outsideDir, outsideFile, paths: [...dirs, ...files] };
  }

  it('a 0755 directory with 0644 files ends 0700 / 0600, all the way down, and says what it changed', async () => {
    const { data, paths } = await wideDataDir();
    const r = await tightenDataDir(data);
    for (const p of paths) {
      const isDir = (await stat(p)).isDirectory();
      assert.equal(octal(await modeOf(p)), octal(isDir ? 0o700 : 0o600), p);
    }
    assert.deepEqual([...r.changed].sort(), [...paths].sort());
    assert.equal(r.changed[0], data, 'the directory itself first');
    assert.deepEqual(r.failed, []);
    assert.equal(r.truncated, false);
    // A second pass has nothing left to do.
    assert.deepEqual((await tightenDataDir(data)).changed, []);
  });

  it('symbolic links are neither followed nor changed', async () => {
    const { data, outsideDir, outsideFile } = await wideDataDir();
    const r = await tightenDataDir(data);
    assert.equal(octal(await modeOf(outsideFile)), '0644');
    assert.equal(octal(await modeOf(outsideDir)), '0755');
    assert.equal(octal(await modeOf(join(outsideDir, 'inner.txt'))), '0644');
    assert.ok((await lstat(join(data, 'link-to-file'))).isSymbolicLink());
    assert.ok(!r.changed.some((p) => p.includes('link-to') || p.startsWith(outsideDir) || p === outsideFile), r.changed.join('\n'));
  });

  it('never widens: 0400 files and 0500 directories stay so; set-id and sticky bits go', async () => {
    const data = join(base, 'data');
    await mkdir(join(data, 'ro'), { recursive: true });
    await writeFile(join(data, 'ro', 'export.tar'), 'x');
    await writeFile(join(data, 'suid'), 'x');
    await chmod(join(data, 'ro', 'export.tar'), 0o400);
    await chmod(join(data, 'suid'), 0o4755);
    await chmod(join(data, 'ro'), 0o1755);
    await chmod(data, 0o700);
    const r = await tightenDataDir(data);
    assert.equal(octal(await modeOf(join(data, 'ro', 'export.tar'))), '0400');
    assert.equal(octal(await modeOf(join(data, 'suid'))), '0600');
    assert.equal(octal(await modeOf(join(data, 'ro'))), '0700');
    assert.ok(!r.changed.includes(data));
    assert.equal(privateMode(0o555, true), 0o500);
    assert.equal(privateMode(0o755, false), 0o600);
  });

  it('a missing directory is created 0700; a file in its place is refused', async () => {
    const data = join(base, 'new', 'data');
    const r = await tightenDataDir(data);
    assert.deepEqual(r.changed, []);
    assert.equal(octal(await modeOf(data)), '0700');
    const file = join(base, 'file');
    await writeFile(file, 'x');
    await assert.rejects(tightenDataDir(file), /not a directory/);
  });

  it('depth and entry counts are bounded (truncated says so)', async () => {
    const data = join(base, 'data');
    let deep = data;
    for (let i = 0; i < 5; i++) deep = join(deep, `d${i}`);
    await mkdir(deep, { recursive: true });
    await writeFile(join(deep, 'f'), 'x');
    await chmod(join(deep, 'f'), 0o644);
    const shallow = await tightenDataDir(data, { depthMax: 2 });
    assert.equal(shallow.truncated, true);
    assert.equal(octal(await modeOf(join(deep, 'f'))), '0644', 'not reached');
    const few = await tightenDataDir(data, { entriesMax: 2 });
    assert.equal(few.truncated, true);
    const all = await tightenDataDir(data);
    assert.equal(all.truncated, false);
    assert.equal(octal(await modeOf(join(deep, 'f'))), '0600');
  });
});
