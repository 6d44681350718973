/**
 * FetchSnapshot streams a node serves at once, per member: a member that opens
 * streams and never reads them (a stalled or malicious one) takes at most half
 * of the node's transfers (SnapshotPolicy.maxTransfers), so another member
 * lagging behind is still sent the snapshot it needs. Before, the first member
 * to ask took every slot (4 unread streams), and every other member was
 * refused RESOURCE_EXHAUSTED until those streams were given up (60 s each,
 * and the member could open them again at once). Real nodes on RocksDB and
 * gRPC (RocksCluster), raw HTTP/2 streams that never read.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import http2 from 'node:http2';

import { FetchSnapshotRequest, RaftServiceService } from '../../../src/gen/snapcoord/v1/raft.js';
import { SERVED_CHUNK_BYTES_MIN, type SnapshotManager, transfersPerPeerMax } from '../../../src/node/snapshots.js';
import type { SnapshotMeta } from '../../../src/raft/types.js';
import { CLUSTER_ID_METADATA_KEY } from '../../../src/transport/peer-guard.js';
import { unreadCall } from '../../harness/unread-call.js';
import { until } from '../../harness/until.js';
import { RocksCluster } from './rocks-cluster.js';

const MAX_TRANSFERS = 4;
const enc = new TextEncoder();

/** outcome: 'data' once the stream has a message waiting (it is being served), else its grpc-status (a refusal). */
function outcome(req: http2.ClientHttp2Stream): Promise<'data' | number> {
  return new Promise((resolve) => {
    const status = (h: http2.IncomingHttpHeaders): void => {
      const s = h['grpc-status'];
      if (s !== undefined) resolve(Number(s));
    };
    req.on('response', status);
    req.on('trailers', status);
    const poll = setInterval(() => {
      if (req.readableLength > 0) resolve('data');
    }, 20);
    req.on('close', () => clearInterval(poll));
    void new Promise<void>((r) => setTimeout(r, 15_000).unref()).then(() => clearInterval(poll));
  });
}

describe('FetchSnapshot: transfers per member', function () {
  this.timeout(120_000);
  let c: RocksCluster;
  let snap: SnapshotMeta;
  let leaderId: string;

  before(async () => {
    c = await RocksCluster.start(3, { maxTransfers: MAX_TRANSFERS, snapshotEntries: 1_000_000 });
    const leader = await c.waitForLeader(20_000);
    leaderId = leader.id;
    // 6 MiB of incompressible values: far more than the HTTP/2 windows and the unsent messages a stream holds,
    // so a stream nobody reads stays open (and holds its transfer).
    for (let i = 0; i < 24; i++) await leader.propose({ op: 'put', key: enc.encode(`big/${i}`), value: randomBytes(256 * 1024) });
    snap = await leader.snapshotNow();
  });

  after(async () => {
    await c?.close();
  });

  it(`a member asking for 1-byte chunks is served chunks of ${SERVED_CHUNK_BYTES_MIN} bytes: no message (and SHA-256) per byte`, async () => {
    const a = c.members.find((m) => m.id !== leaderId);
    assert.ok(a !== undefined);
    const sm = c.member(leaderId).snapshots as SnapshotManager;
    const sizes: number[] = [];
    for await (const chunk of await sm.openChunks(a.id, snap.index, snap.digest, 0, 1)) {
      sizes.push(chunk.data.length);
      if (sizes.length === 3) break; // ends the transfer (its slot and snapshot released)
    }
    assert.deepEqual(sizes, [SERVED_CHUNK_BYTES_MIN, SERVED_CHUNK_BYTES_MIN, SERVED_CHUNK_BYTES_MIN]);
  });

  it(`one member holding unread streams gets at most ${transfersPerPeerMax(MAX_TRANSFERS)} of ${MAX_TRANSFERS}; another member is still served`, async () => {
    const [a, b] = c.members.filter((m) => m.id !== leaderId);
    assert.ok(a !== undefined && b !== undefined);
    const session = http2.connect(`http://${c.member(leaderId).peerAddress}`);
    session.on('error', () => undefined);
    const open = (from: string): http2.ClientHttp2Stream =>
      unreadCall(
        session,
        RaftServiceService.fetchSnapshot.path,
        FetchSnapshotRequest.encode({ from, index: BigInt(snap.index), term: BigInt(snap.term), digest: snap.digest, offset: 0n, chunkBytes: 0 }).finish(),
        { [CLUSTER_ID_METADATA_KEY]: 'snapcoord' },
      );
    try {
      // a opens as many streams as the node serves at once, one after another, and reads none of them.
      const byA: ('data' | number)[] = [];
      for (let i = 0; i < MAX_TRANSFERS; i++) byA.push(await outcome(open(a.id)));
      const perPeer = transfersPerPeerMax(MAX_TRANSFERS);
      assert.deepEqual(
        byA,
        [...Array<'data'>(perPeer).fill('data'), ...Array<number>(MAX_TRANSFERS - perPeer).fill(8)],
        `${a.id}'s streams beyond ${perPeer} must be refused RESOURCE_EXHAUSTED`,
      );
      // b, lagging behind, is sent the snapshot while a's streams are held.
      const byB = await outcome(open(b.id));
      assert.equal(byB, 'data', `${b.id} must be served while ${a.id} holds its streams (8: RESOURCE_EXHAUSTED)`);
    } finally {
      session.destroy();
    }
    // Every slot comes back once the streams are gone: a is served again.
    const again = http2.connect(`http://${c.member(leaderId).peerAddress}`);
    again.on('error', () => undefined);
    try {
      await until(`${a.id} to be served again`, 10_000, async () => {
        const r = await outcome(
          unreadCall(
            again,
            RaftServiceService.fetchSnapshot.path,
            FetchSnapshotRequest.encode({ from: a.id, index: BigInt(snap.index), term: BigInt(snap.term), digest: snap.digest, offset: 0n, chunkBytes: 0 }).finish(),
            { [CLUSTER_ID_METADATA_KEY]: 'snapcoord' },
          ),
        );
        return r === 'data' ? true : undefined;
      });
    } finally {
      again.destroy();
    }
    await until('the leader to still lead and commit', 10_000, async () => {
      await c.node(leaderId).propose({ op: 'put', key: enc.encode('after'), value: enc.encode('1') });
      return true;
    });
  });
});
