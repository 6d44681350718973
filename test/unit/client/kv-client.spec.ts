import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import { KvClient } from '../../../src/client/kv-client.js';
import { RequestIds } from '../../../src/client/request-ids.js';
import { KVServiceService, type GetRequest, type GetResponse, type PutRequest, type PutResponse } from '../../../src/gen/snapcoord/v1/kv.js';

/** A real KVService on 127.0.0.1:0 whose Put fails the first `failFirst` calls with UNAVAILABLE and whose Get never answers. */
async function startServer(failFirst: number): Promise<{ address: string; puts: PutRequest[]; keys: string[]; close: () => void }> {
  const puts: PutRequest[] = [];
  const keys: string[] = [];
  const server = new grpc.Server();
  server.addService(KVServiceService, {
    put(call: grpc.ServerUnaryCall<PutRequest, PutResponse>, cb: grpc.sendUnaryData<PutResponse>) {
      puts.push(call.request);
      keys.push(String(call.metadata.get('authorization')[0] ?? ''));
      if (puts.length <= failFirst) cb({ code: grpc.status.UNAVAILABLE, details: 'answer lost' });
      else cb(null, { header: { memberId: 'm', raftTerm: 1n, revision: BigInt(puts.length) }, prevKv: undefined, replayed: false });
    },
    get(_call: grpc.ServerUnaryCall<GetRequest, GetResponse>, _cb: grpc.sendUnaryData<GetResponse>) {
      // never answers: the client's deadline or signal ends the call
    },
  } as grpc.UntypedServiceImplementation);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err !== null ? reject(err) : resolve(p))),
  );
  return { address: `127.0.0.1:${port}`, puts, keys, close: () => server.forceShutdown() };
}

describe('client: KvClient over a real gRPC server', function () {
  this.timeout(20_000);
  const enc = new TextEncoder();

  it('putIdempotent retries with the same request id, the next write gets the next id, and every call carries the bearer key', async () => {
    const s = await startServer(2);
    const c = new KvClient(s.address, { apiKey: 'k-123' }, new RequestIds('cli-kv'));
    try {
      const res = await c.putIdempotent({ key: enc.encode('a'), value: enc.encode('1') }, { backoffMs: 1 });
      assert.equal(res.header?.revision, 3n);
      await c.putIdempotent({ key: enc.encode('b'), value: enc.encode('2') }, { backoffMs: 1 });
      assert.deepEqual(
        s.puts.map((p) => [p.clientId, p.requestId]),
        [['cli-kv', 1n], ['cli-kv', 1n], ['cli-kv', 1n], ['cli-kv', 2n]],
      );
      assert.deepEqual(new Set(s.keys), new Set(['Bearer k-123']));
    } finally {
      c.close();
      s.close();
    }
  });

  it('a plain put is not retried and carries no request id; no key, no authorization', async () => {
    const s = await startServer(1);
    const c = new KvClient(s.address);
    try {
      await assert.rejects(c.put({ key: enc.encode('a'), value: enc.encode('1') }), (err: grpc.ServiceError) => err.code === grpc.status.UNAVAILABLE);
      assert.deepEqual(s.puts.map((p) => [p.clientId, p.requestId]), [['', 0n]]);
      assert.deepEqual(s.keys, ['']);
    } finally {
      c.close();
      s.close();
    }
  });

  it('a call ends at its deadline (DEADLINE_EXCEEDED) or when its signal aborts (CANCELLED)', async () => {
    const s = await startServer(0);
    const c = new KvClient(s.address);
    try {
      await assert.rejects(c.get({ key: enc.encode('a') }, { deadlineMs: 200 }), (err: grpc.ServiceError) => err.code === grpc.status.DEADLINE_EXCEEDED);
      const ac = new AbortController();
      const pending = c.get({ key: enc.encode('a') }, { deadlineMs: 10_000, signal: ac.signal });
      setTimeout(() => ac.abort(), 100);
      await assert.rejects(pending, (err: grpc.ServiceError) => err.code === grpc.status.CANCELLED);
      const aborted = new AbortController();
      aborted.abort();
      await assert.rejects(c.get({ key: enc.encode('a') }, { signal: aborted.signal }), (err: grpc.ServiceError) => err.code === grpc.status.CANCELLED);
    } finally {
      c.close();
      s.close();
    }
  });
});
