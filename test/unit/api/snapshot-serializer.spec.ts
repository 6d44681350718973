/** serializeGetSnapshotResponse: the one-copy GetSnapshot encoder writes what the generated encoder writes. */
import assert from 'node:assert/strict';
import { GetSnapshotResponse } from '../../../src/gen/snapcoord/v1/snapshot.js';
import { SNAPSHOT_SERVICE_DEFINITION, serializeGetSnapshotResponse } from '../../../src/api/snapshot-serializer.js';

describe('api: serializeGetSnapshotResponse', () => {
  const info = { id: 's-1', index: 7n, term: 2n, sizeBytes: 10n, digest: 'ab', createdAt: 'now', stateBytes: 3n, stateKeys: 1n, snapcoordVersion: '0.1.0', formatVersion: 1 };
  const cases: GetSnapshotResponse[] = [
    { info, knownLeader: true, lastContactMs: 0n },
    { data: new Uint8Array(0), knownLeader: false, lastContactMs: 0n },
    { data: new Uint8Array([1, 2, 3]), knownLeader: true, lastContactMs: 0n },
    { data: new Uint8Array(200).fill(4), knownLeader: false, lastContactMs: 127n },
    { data: new Uint8Array(1 << 20).fill(9), knownLeader: true, lastContactMs: 2n ** 63n + 5n },
    { data: Buffer.alloc(300, 5).subarray(100, 200), knownLeader: true, lastContactMs: 300n },
    { knownLeader: true, lastContactMs: 1n },
  ];

  it('writes byte for byte what the generated encoder writes, and it decodes back', () => {
    for (const m of cases) {
      const ours = serializeGetSnapshotResponse(m);
      assert.ok(ours.equals(Buffer.from(GetSnapshotResponse.encode(m).finish())), JSON.stringify({ ...m, data: m.data?.length }, (_k, v: unknown) => (typeof v === 'bigint' ? String(v) : v)));
      const back = GetSnapshotResponse.decode(ours);
      const plain = (r: GetSnapshotResponse): object => ({ info: r.info, data: r.data === undefined ? undefined : Buffer.from(r.data), knownLeader: r.knownLeader, lastContactMs: r.lastContactMs });
      assert.deepEqual(plain(back), plain(m));
    }
  });

  it('copies a data piece: the encoded message shares no memory with it', () => {
    const data = Buffer.alloc(64, 1);
    const out = serializeGetSnapshotResponse({ data, knownLeader: true, lastContactMs: 5n });
    data.fill(2);
    assert.ok(Buffer.from(GetSnapshotResponse.decode(out).data ?? []).equals(Buffer.alloc(64, 1)));
  });

  it('refuses a last contact beyond uint64, as the generated encoder does', () => {
    assert.throws(() => serializeGetSnapshotResponse({ data: new Uint8Array(1), knownLeader: false, lastContactMs: 2n ** 64n }), /too large/);
    assert.throws(() => GetSnapshotResponse.encode({ data: new Uint8Array(1), knownLeader: false, lastContactMs: 2n ** 64n }), /too large/);
  });

  it('SNAPSHOT_SERVICE_DEFINITION encodes GetSnapshot with it', () => {
    assert.equal(SNAPSHOT_SERVICE_DEFINITION.getSnapshot.responseSerialize, serializeGetSnapshotResponse);
    assert.equal(SNAPSHOT_SERVICE_DEFINITION.getSnapshot.path, '/snapcoord.v1.SnapshotService/GetSnapshot');
  });
});
