/**
 * `snapcoord local`'s node logs (openNodeLog): private whatever was there.
 * Before, a log left with a wider mode (0644: every user of the machine could
 * read the node's output) kept it when `local` reopened it, and a link
 * planted at the log's name was written through.
 */
import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync, writeSync, chmodSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { openNodeLog } from '../../../src/cli/local.js';

describe('local: openNodeLog', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'snapcoord-local-log-'));
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it('a new log is 0600', () => {
    const file = join(dir, 'n1.log');
    closeSync(openNodeLog(file));
    assert.equal(statSync(file).mode & 0o777, 0o600);
  });

  it('an old log with a wider mode is made 0600 and appended to', () => {
    const file = join(dir, 'n1.log');
    writeFileSync(file, 'before\n');
    chmodSync(file, 0o644);
    const fd = openNodeLog(file);
    writeSync(fd, 'after\n');
    closeSync(fd);
    assert.equal((statSync(file).mode & 0o777).toString(8), '600');
    assert.equal(readFileSync(file, 'utf8'), 'before\nafter\n');
  });

  it('a link at the log name is refused, its target untouched; a directory is refused', () => {
    const target = join(dir, 'elsewhere');
    writeFileSync(target, 'theirs\n');
    chmodSync(target, 0o644);
    const file = join(dir, 'n1.log');
    symlinkSync(target, file);
    assert.throws(() => openNodeLog(file), /is a symbolic link; not written through/);
    assert.equal(readFileSync(target, 'utf8'), 'theirs\n');
    assert.equal(statSync(target).mode & 0o777, 0o644);
    const sub = join(dir, 'n2.log');
    mkdirSync(sub);
    assert.throws(() => openNodeLog(sub), /n2\.log/);
  });
});
