import assert from 'node:assert/strict';

import { processCpuSeconds, threadCpu, threadCpuByGroup, threadGroup } from '../../../bench/lib/thread-cpu.js';

describe('bench thread-cpu', () => {
  it('groups threads by name without their number; Node 20 names all its own threads `node`: they are `other`', () => {
    assert.equal(threadGroup('rocksdb:low3'), 'rocksdb:low');
    assert.equal(threadGroup('rocksdb:high'), 'rocksdb:high');
    assert.equal(threadGroup('node'), 'other');
    const names = [...threadCpu().values()].map((t) => t.name);
    if (process.platform === 'linux') assert.ok(names.includes('node'), `this process's threads: ${names.join(', ')}`);
  });

  it('splits CPU into main and the other groups, with what ended threads used', () => {
    const before = new Map([[process.pid, { name: 'node', s: 1 }], [7, { name: 'node', s: 2 }]]);
    const after = new Map([[process.pid, { name: 'node', s: 1.5 }], [7, { name: 'node', s: 2.25 }], [8, { name: 'rocksdb:low0', s: 0.1 }]]);
    assert.deepEqual(threadCpuByGroup(before, after, 1), { main: 0.5, other: 0.25, 'rocksdb:low': 0.1, ended: 0.15 });
  });

  it('processCpuSeconds: the CPU so far of a live process (this one, on Linux); 0 for none or one gone', () => {
    if (process.platform === 'linux') assert.ok(processCpuSeconds(process.pid) > 0);
    assert.equal(processCpuSeconds(undefined), 0);
    assert.equal(processCpuSeconds(2 ** 22 + 1), 0, 'past pid_max: no such process');
  });
});
