/**
 * RestoreRefs.newestIndex (src/fsm/restore-command.ts): the restore entry a
 * leader's voter changes wait for (Node.changeMembership). A restore entry
 * replaced by a new leader's log was never committed and stops counting; one
 * compacted or discarded by a log reset still counts.
 */
import assert from 'node:assert/strict';

import { encodeRestoreCommand, RestoreRefs } from '../../../src/fsm/restore-command.js';

const digest = (c: string): string => c.repeat(64);
const restore = (index: number, c = 'a'): { index: number; type: string; data: Uint8Array } => ({
  index,
  type: 'normal',
  data: encodeRestoreCommand({ digest: digest(c), sizeBytes: 10, index: 1, term: 1 }),
});
const plain = (index: number): { index: number; type: string; data: Uint8Array } => ({ index, type: 'normal', data: new Uint8Array(0) });

describe('RestoreRefs.newestIndex', () => {
  it('a restore entry replaced by a shorter log (never committed) no longer holds the voter changes', () => {
    // An old leader appended writes 5..9 and a restore at 10, none committed; the next leader's log ended at 4 and
    // its no-op at 5 replaced them. Before: newestIndex stayed 10, above the whole log, so every change of the
    // voters was refused until the log grew back to 10 (in a quiet cluster, never).
    const refs = new RestoreRefs();
    refs.noteEntries([plain(1), restore(2, 'b'), plain(3), plain(4)]);
    refs.noteEntries([plain(5), plain(6), plain(7), plain(8), plain(9), restore(10)]);
    assert.equal(refs.newestIndex(), 10);
    refs.noteEntries([plain(5)]);
    assert.equal(refs.newestIndex(), 2);
    assert.deepEqual(refs.digests(), new Set([digest('b')]));
    refs.noteEntries([plain(2)]);
    assert.equal(refs.newestIndex(), 0);
  });

  it('one compacted away, or discarded by a log reset, still counts; a later replacement falls back to it', () => {
    const refs = new RestoreRefs();
    refs.noteEntries([restore(3), plain(4)]);
    refs.dropThrough(4);
    assert.equal(refs.newestIndex(), 3);
    refs.noteEntries([plain(5), restore(6, 'c')]);
    refs.noteEntries([plain(6)]);
    assert.equal(refs.newestIndex(), 3);
    // A log reset: the snapshot covers some of them, the leader sends the others again.
    refs.noteEntries([restore(7, 'd')]);
    refs.clear();
    refs.noteEntries([plain(5)]);
    assert.equal(refs.newestIndex(), 7);
  });
});
