/**
 * The wire form of the install reports and floor (issue 14 item 5): an append
 * answer carries the snapshot the follower installs, a heartbeat carries the
 * leader's install floor and newest snapshot index (covered by the header checksum like every header
 * field); absent values stay absent after a round trip.
 */
import assert from 'node:assert/strict';

import * as pb from '../../../src/gen/snapcoord/v1/raft.js';
import type { AppendResponse, Heartbeat } from '../../../src/raft/types.js';
import { CodecError, appendRequestFromProto, appendRequestToProto, appendResponseFromProto, appendResponseToProto } from '../../../src/transport/codec.js';

function wire<T>(type: { encode(m: T): { finish(): Uint8Array }; decode(b: Uint8Array): T }, m: T): T {
  return type.decode(type.encode(m).finish());
}

describe('codec: install reports and the install floor', () => {
  it('an append answer carries installingIndex; one without it decodes without it', () => {
    const withIt: AppendResponse = { type: 'appendResp', from: 'n2', to: 'n1', term: 5, reject: true, index: 90, hintIndex: 40, hintTerm: 4, installingIndex: 77 };
    assert.deepEqual(appendResponseFromProto(wire(pb.AppendEntriesResponse, appendResponseToProto(withIt))), withIt);
    const without: AppendResponse = { type: 'appendResp', from: 'n2', to: 'n1', term: 5, reject: false, index: 90, hintIndex: 0, hintTerm: 0 };
    assert.deepEqual(appendResponseFromProto(wire(pb.AppendEntriesResponse, appendResponseToProto(without))), without);
  });

  it('a heartbeat carries installFloor under the header checksum', () => {
    const hb: Heartbeat = { type: 'heartbeat', from: 'n1', to: 'n3', term: 5, commit: 100, readSeq: 9, installFloor: 77 };
    const p = appendRequestToProto(hb);
    assert.deepEqual(appendRequestFromProto(wire(pb.AppendEntriesRequest, p)), hb);
    const plain: Heartbeat = { type: 'heartbeat', from: 'n1', to: 'n3', term: 5, commit: 100, readSeq: 9 };
    assert.deepEqual(appendRequestFromProto(wire(pb.AppendEntriesRequest, appendRequestToProto(plain))), plain);
    // A floor damaged in transit (dropped, or changed) is refused with the whole heartbeat.
    for (const installFloor of [0n, 78n, 1n << 40n]) {
      assert.throws(
        () => appendRequestFromProto(wire(pb.AppendEntriesRequest, { ...p, installFloor })),
        (e: unknown) => e instanceof CodecError && /damaged in transit/.test(e.message),
      );
    }
  });

  it('a heartbeat carries the leader\'s snapshotIndex under the header checksum', () => {
    const hb: Heartbeat = { type: 'heartbeat', from: 'n1', to: 'n3', term: 5, commit: 100, readSeq: 9, installFloor: 77, snapshotIndex: 90 };
    const p = appendRequestToProto(hb);
    assert.deepEqual(appendRequestFromProto(wire(pb.AppendEntriesRequest, p)), hb);
    // A larger index forged or damaged in transit would let a follower compact what an installer needs: refused.
    for (const snapshotIndex of [0n, 91n, 1n << 40n]) {
      assert.throws(
        () => appendRequestFromProto(wire(pb.AppendEntriesRequest, { ...p, snapshotIndex })),
        (e: unknown) => e instanceof CodecError && /damaged in transit/.test(e.message),
      );
    }
  });
});
