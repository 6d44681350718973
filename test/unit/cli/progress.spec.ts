/**
 * Progress: one redrawn line on a TTY, a plain line every 5 s elsewhere
 * (none for a quick transfer), MB/s and ETA from the expected total.
 */
import assert from 'node:assert/strict';
import { Progress, formatDuration } from '../../../src/cli/progress.js';

const REDRAW = `\r${String.fromCharCode(27)}[K`;

function sink(isTTY: boolean): { isTTY: boolean; out: string[]; write(s: string): boolean } {
  const out: string[] = [];
  return { isTTY, out, write: (s: string) => out.push(s) > 0 };
}

describe('cli progress', () => {
  it('on a TTY redraws one line in place, then ends it', () => {
    let now = 0;
    const s = sink(true);
    const p = new Progress({ label: 'downloading', totalBytes: 10_000_000, sink: s, now: () => now });
    now = 50;
    p.update(1_000_000);
    assert.deepEqual(s.out, [], 'not before 100 ms');
    now = 1000;
    p.update(2_000_000);
    assert.equal(s.out.length, 1);
    assert.equal(s.out[0], `${REDRAW}downloading 1.91 MiB of 9.54 MiB (20%), 2.0 MB/s, ETA 4s`);
    now = 5000;
    p.update(10_000_000);
    p.finish();
    const lines: string[] = s.out;
    assert.ok(lines.every((l) => l === '\n' || l.startsWith(REDRAW)));
    assert.equal(lines[lines.length - 1], '\n');
  });

  it('elsewhere prints a plain line every 5 s, and nothing for a quick transfer', () => {
    let now = 0;
    const quiet = sink(false);
    const q = new Progress({ label: 'uploading', totalBytes: 100, sink: quiet, now: () => now });
    now = 300;
    q.update(100);
    q.finish();
    assert.deepEqual(quiet.out, []);

    now = 0;
    const s = sink(false);
    const p = new Progress({ label: 'uploading', sink: s, now: () => now });
    for (now = 1000; now <= 12_000; now += 1000) p.update(now * 1000);
    assert.equal(s.out.length, 2, s.out.join(''));
    assert.ok(s.out.every((l) => l.endsWith('\n') && !l.includes('\r')));
    assert.doesNotMatch(s.out[0]!, /ETA/, 'no ETA without a total');
    p.finish();
    assert.equal(s.out.length, 3, 'a final line once lines were printed');
  });

  it('prints nothing when disabled', () => {
    const s = sink(true);
    const p = new Progress({ label: 'x', sink: s, enabled: false, now: () => 10_000 });
    p.update(5);
    p.finish();
    p.clear();
    assert.deepEqual(s.out, []);
  });

  it('formats durations', () => {
    assert.equal(formatDuration(4.4), '4s');
    assert.equal(formatDuration(75), '1m15s');
    assert.equal(formatDuration(3 * 3600 + 120), '3h02m');
    assert.equal(formatDuration(Infinity), '?');
  });
});
