/** Retention policies of scheduled snapshots (issue 19 part 1): keep newest N, all of the last D days, one a day for W weeks. */
import assert from 'node:assert/strict';

import { NO_RETENTION, checkPolicy, hasRetention, planRetention } from '../../../src/ops/retention.js';

const DAY = 86_400_000;
const NOW = Date.parse('2026-12-03T12:00:00Z');

/** hourly: one item an hour for `days` days back from NOW (newest first), named by age in hours. */
function hourly(days: number): { name: string; createdAtMs: number }[] {
  return Array.from({ length: days * 24 }, (_, h) => ({ name: `h${String(h).padStart(4, '0')}`, createdAtMs: NOW - h * 3_600_000 }));
}

describe('agent: retention', () => {
  it('no rule keeps everything; the newest is always kept', () => {
    const items = hourly(2);
    assert.equal(planRetention(items, NO_RETENTION, NOW).remove.length, 0);
    assert.equal(hasRetention(NO_RETENTION), false);
    const old = [{ name: 'a', createdAtMs: NOW - 400 * DAY }];
    assert.deepEqual(planRetention(old, { keepLast: 0, keepDays: 1, keepWeeks: 0 }, NOW).keep, old, 'the only archive is never removed');
  });

  it('keepLast N keeps the N newest, whatever their order in the input', () => {
    const items = hourly(1).reverse();
    const p = planRetention(items, { keepLast: 3, keepDays: 0, keepWeeks: 0 }, NOW);
    assert.deepEqual(p.keep.map((i) => i.name), ['h0000', 'h0001', 'h0002']);
    assert.equal(p.remove.length, 21);
    assert.equal(p.remove[0]?.name, 'h0003', 'removed newest first');
  });

  it('the archive named `protect` (the run just wrote it) is kept even when later-named ones push it out of keepLast', () => {
    const own = { name: 'own', createdAtMs: NOW };
    const ahead = { name: 'ahead', createdAtMs: NOW + 365 * DAY };
    const p = planRetention([own, ahead, ...hourly(1).slice(1)], { keepLast: 1, keepDays: 0, keepWeeks: 0 }, NOW, 'own');
    assert.deepEqual(p.keep.map((i) => i.name), ['ahead', 'own']);
    assert.equal(p.remove.length, 23);
  });

  it('keepDays D keeps everything of the last D days', () => {
    const p = planRetention(hourly(5), { keepLast: 0, keepDays: 2, keepWeeks: 0 }, NOW);
    assert.equal(p.keep.length, 48);
    assert.ok(p.keep.every((i) => i.createdAtMs > NOW - 2 * DAY));
    assert.ok(p.remove.every((i) => i.createdAtMs <= NOW - 2 * DAY));
  });

  it('keepWeeks W keeps the newest of each UTC day for W weeks, on top of the days kept whole', () => {
    const items = hourly(30);
    const p = planRetention(items, { keepLast: 0, keepDays: 1, keepWeeks: 2 }, NOW);
    const lastDay = p.keep.filter((i) => i.createdAtMs > NOW - DAY);
    assert.equal(lastDay.length, 24);
    const older = p.keep.filter((i) => i.createdAtMs <= NOW - DAY);
    const days = new Set(older.map((i) => Math.floor(i.createdAtMs / DAY)));
    assert.equal(days.size, older.length, 'one per day');
    assert.ok(older.every((i) => i.createdAtMs > NOW - 14 * DAY));
    // Each kept one is its day's newest: 23:00 UTC (or NOW's day, already whole).
    for (const i of older) assert.equal(new Date(i.createdAtMs).getUTCHours(), 23, i.name);
    assert.equal(p.keep.length + p.remove.length, items.length);
  });

  it('rules combine: kept when any rule keeps it', () => {
    const p = planRetention(hourly(10), { keepLast: 30, keepDays: 1, keepWeeks: 0 }, NOW);
    assert.equal(p.keep.length, 30);
  });

  it('checkPolicy refuses negatives and non-integers', () => {
    assert.throws(() => checkPolicy({ keepLast: -1, keepDays: 0, keepWeeks: 0 }), RangeError);
    assert.throws(() => checkPolicy({ keepLast: 1.5, keepDays: 0, keepWeeks: 0 }), RangeError);
    assert.deepEqual(checkPolicy({ keepLast: 7, keepDays: 2, keepWeeks: 4 }), { keepLast: 7, keepDays: 2, keepWeeks: 4 });
  });
});
