/**
 * LeaderForwarder's channels to the leader's client plane (review30): one per member, at the address that member
 * advertised last. The address is the member's word (x-snapcoord-client-address, each call's metadata: under mutual
 * TLS taken as it comes), and the forwarder kept a channel for every id@address it ever forwarded to, none closed
 * until the node stopped: a member (or a removed member a node still follows) that advertised a new address on each
 * append stream it opened left one more open channel per forwarded write.
 */
import { strict as assert } from 'node:assert';
import * as grpc from '@grpc/grpc-js';
import { LeaderForwarder, type NodeView } from '../../../src/api/leader-forwarder.js';

describe('LeaderForwarder: one client channel per member, the one at its last address', () => {
  const node = { id: 'n1', brief: () => ({ role: 'follower', leader: 'n2' }), dialAddressOf: () => '' } as unknown as NodeView;
  const shut = (c: grpc.Client): boolean => c.getChannel().getConnectivityState(false) === grpc.connectivityState.SHUTDOWN;

  it('a member advertising a new address gets a new channel, and its old one is closed', () => {
    const f = new LeaderForwarder(node);
    try {
      const kvs = Array.from({ length: 50 }, (_, i) => f.kv({ id: 'n2', address: `127.0.0.1:${20_000 + i}` }));
      const clusters = Array.from({ length: 50 }, (_, i) => f.cluster({ id: 'n2', address: `127.0.0.1:${20_000 + i}` }));
      assert.equal(f.kv({ id: 'n2', address: '127.0.0.1:20049' }), kvs[49], 'the channel at the last address is reused');
      assert.deepEqual(kvs.slice(0, 49).filter((c) => !shut(c.raw)).length, 0, 'channels to addresses the member no longer advertises are left open');
      assert.deepEqual(clusters.slice(0, 49).filter((c) => !shut(c.raw)).length, 0, 'cluster channels to old addresses are left open');
      assert.equal(shut(kvs[49]?.raw as grpc.Client), false);
      // Another member keeps its own.
      const n3 = f.kv({ id: 'n3', address: '127.0.0.1:21000' });
      assert.equal(shut(kvs[49]?.raw as grpc.Client), false);
      assert.equal(f.kv({ id: 'n3', address: '127.0.0.1:21000' }), n3);
    } finally {
      f.close();
    }
  });
});
