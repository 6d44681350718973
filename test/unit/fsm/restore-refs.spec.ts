/**
 * RestoreRefs.newestIndex (src/fsm/restore-command.ts): the restore entry a
 * leader's voter changes wait for (Node.changeMembership). A restore entry
 * replaced by a new leader's log was never committed and stops counting; one
 * compacted, or inside a log reset's snapshot, still counts; one a log reset
 * discarded past its snapshot counts again only if the leader sends it again.
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
    // A log reset to a snapshot at 7: the snapshot covers the restore at 7.
    refs.noteEntries([restore(7, 'd')]);
    refs.clear(7);
    refs.noteEntries([plain(8)]);
    assert.equal(refs.newestIndex(), 7);
  });

  it('one a log reset discarded past its snapshot counts again only if the leader sends it again', () => {
    // An old leader appended a restore at 7 that reached this node only, and died; the next leader's log ended at
    // 5 and it sent this node a snapshot at 4 (its log reset), then its entries from 5. Before: newestIndex stayed
    // 7, above that leader's whole log, so as leader this node refused every change of the voters until its log
    // grew back to 7 and a quorum applied whatever entry got there (in a quiet cluster, never).
    const refs = new RestoreRefs();
    refs.noteEntries([plain(1), restore(2, 'b'), plain(3), plain(4), plain(5), plain(6), restore(7)]);
    refs.clear(4);
    assert.equal(refs.newestIndex(), 2, 'the restore at 7, discarded past the snapshot at 4, does not count; the one at 2, inside it, does');
    refs.noteEntries([plain(5)]);
    assert.equal(refs.newestIndex(), 2);
    assert.deepEqual(refs.digests(), new Set());
    // A committed one comes again: as an entry (noted again) ...
    refs.clear(4);
    refs.noteEntries([plain(5), plain(6), restore(7, 'c')]);
    assert.equal(refs.newestIndex(), 7);
    assert.deepEqual(refs.digests(), new Set([digest('c')]));
    // ... or inside a later snapshot: a reset to it, before any entry came, counts it.
    const later = new RestoreRefs();
    later.noteEntries([plain(1), restore(2, 'b'), restore(7)]);
    later.clear(4);
    assert.equal(later.newestIndex(), 2);
    later.clear(9);
    assert.equal(later.newestIndex(), 7);
  });
});
