import assert from 'node:assert/strict';

import { SeededRng } from '../harness/rng.js';
import { POISONS, archiveInMemory, drawState, poisonedArchive, rawState, validArchive, writeStreamed } from './sim-archives.js';

const membership = { voters: ['n1', 'n2', 'n3'], learners: ['n4'], addresses: { n1: 'sim:n1', n4: 'sim:n4' } };

describe('sim: the archives clients restore (sim-archives.ts)', () => {
  // Each client's restore built its archive with writeArchive on a scratch disk: a stream pipeline, a gzip stream
  // and the scratch files, ~0.5 ms of a seed's CPU each; archiveInMemory gives the same bytes in one step.
  it('archiveInMemory builds, in one synchronous step, the bytes writeArchive writes: states drawn as the clients draw them, poisoned ones, an empty one', async () => {
    const rng = new SeededRng(17);
    const raws: [Buffer, number][] = [[Buffer.alloc(0), 0]];
    for (let n = 0; n < 40; n++) {
      const records = [...drawState(rng, rng.pick([2, 4, 8]), n)].sort(([a], [b]) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
      raws.push([rawState(records), records.length]);
      raws.push([rawState([...records].reverse()), records.length + 1]);
    }
    raws.push([rawState(Array.from({ length: 3000 }, (_, i) => [`key-${String(i).padStart(5, '0')}`, 'v'.repeat(i % 300)] as const)), 3000]);
    for (const [i, [state, keys]] of raws.entries()) {
      const built = archiveInMemory(state, keys, membership, `restore-${i}`);
      assert.ok(built instanceof Buffer, `archive ${i} built in one step`);
      assert.ok(built.equals(await writeStreamed(state, keys, membership, `restore-${i}`)), `archive ${i} (${state.length} state bytes): writeArchive's bytes`);
    }
  });

  it('validArchive and poisonedArchive are archiveInMemory of their state.bin; a tar past one gzip block is left to writeArchive', async () => {
    const state = new Map([['k1', 'a'], ['k0', 'b'], ['r2', 'c']]);
    const sorted = [...state].sort(([a], [b]) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    assert.ok((await validArchive(state, membership, 'v')).equals(archiveInMemory(rawState(sorted), 3, membership, 'v') as Buffer));
    for (const poison of POISONS) assert.ok((await poisonedArchive(state, poison, membership, 'p')).length > 0);
    assert.ok((await poisonedArchive(state, 'key count lies', membership, 'p')).equals(archiveInMemory(rawState(sorted), 4, membership, 'p') as Buffer));
    assert.equal(archiveInMemory(Buffer.alloc(1024 * 1024), 0, membership, 'big'), null);
  });
});
