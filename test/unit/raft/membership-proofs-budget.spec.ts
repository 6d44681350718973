/**
 * Membership.proofs stay within a total budget (MEMBERSHIP_PROOFS_CHARS_TOTAL_MAX): sixteen proofs of a large
 * configuration (or of big RSA certificates), each within MEMBERSHIP_PROOF_CHARS_MAX, would make 128 KiB, and a
 * snapshot's meta.json, which carries the membership, is capped at META_BYTES_MAX (64 KiB): every snapshot of such a
 * cluster was written with a meta.json the store then refuses to read back ('more than 66560 bytes': corrupt).
 */
import assert from 'node:assert/strict';
import { MEMBERSHIP_PROOF_CHARS_MAX, MEMBERSHIP_PROOFS_CHARS_TOTAL_MAX, MEMBERSHIP_PROOFS_MAX, applyConfChange, decodeConfChange, encodeConfChange } from '../../../src/raft/membership.js';
import type { Membership } from '../../../src/raft/types.js';
import { archiveMetaBytes } from '../../../src/snapshot/archive-writer.js';
import { SnapshotStore } from '../../../src/snapshot/store.js';
import { inBatches, records, tempDir } from '../snapshot/helpers.js';

describe('membership proofs: a total budget keeps a snapshot\'s meta.json writable', function () {
  const proofOf = (i: number, chars: number): string => `x509.${String(i).padStart(4, '0')}${'A'.repeat(chars - 9)}`;
  const changes = (m0: Membership, n: number, chars: number): Membership => {
    let m = m0;
    for (let i = 0; i < n; i++) {
      // Through the entry's encoding, as the log carries it.
      const cc = decodeConfChange(encodeConfChange({ op: 'addLearner', nodeId: `l${i % 4}`, address: `127.0.0.1:${7100 + (i % 4)}`, proof: proofOf(i, chars) }));
      m = applyConfChange(m, cc);
    }
    return m;
  };
  const base: Membership = { voters: ['n1', 'n2', 'n3'], learners: [], addresses: { n1: '127.0.0.1:7001', n2: '127.0.0.1:7002', n3: '127.0.0.1:7003' } };

  it('16 changes with proofs of the largest allowed size: the newest proofs kept within the budget, and meta.json still fits', () => {
    const m = changes(base, 20, MEMBERSHIP_PROOF_CHARS_MAX);
    // Without the budget: ArchiveError member-too-large, 'meta.json would be 131… bytes, more than 65536'.
    const { metaBytes } = archiveMetaBytes({ id: 'snap-1', index: 40, term: 2, membership: m, createdAt: '2026-12-07T14:00:00.000Z', snapcoordVersion: '0.0.0' }, 0, 0);
    assert.ok(metaBytes.length < 64 * 1024);
    const proofs = m.proofs ?? [];
    const total = proofs.reduce((n, p) => n + p.length, 0);
    assert.ok(total <= MEMBERSHIP_PROOFS_CHARS_TOTAL_MAX, `${total} characters of proofs`);
    assert.equal(proofs.length, Math.floor(MEMBERSHIP_PROOFS_CHARS_TOTAL_MAX / MEMBERSHIP_PROOF_CHARS_MAX));
    // The newest kept, oldest first.
    assert.deepEqual(proofs.map((p) => p.slice(5, 9)), ['0016', '0017', '0018', '0019']);
  });

  it('small proofs: still the last MEMBERSHIP_PROOFS_MAX, all of them', () => {
    const m = changes(base, 20, 1200);
    const proofs = m.proofs ?? [];
    assert.equal(proofs.length, MEMBERSHIP_PROOFS_MAX);
    assert.equal(proofs[0]?.slice(5, 9), '0004');
    assert.equal(proofs.at(-1)?.slice(5, 9), '0019');
  });

  it('a snapshot of a membership after many large proofs is read back by a store opened afresh', async function () {
    this.timeout(20_000);
    const m = changes(base, 20, MEMBERSHIP_PROOF_CHARS_MAX);
    const { dir, cleanup } = await tempDir('h-review29-proofs-');
    try {
      const first = await SnapshotStore.open(dir, { retain: 3 });
      const made = await first.createFromRecords({ index: 40, term: 2, membership: m }, inBatches(records(5)));
      // A store opened afresh reads meta.json from disk (the writer's cache does not hide a refusal).
      const again = await SnapshotStore.open(dir, { retain: 3 });
      const listed = await again.list();
      assert.deepEqual(listed.map((x) => x.id), [made.id]);
      assert.deepEqual(listed[0]?.meta.membership.proofs, m.proofs);
    } finally {
      await cleanup();
    }
  });
});
