/**
 * The gateway forwards the caller's own key to the node's client plane, so
 * the node decides (issue 13, item 4): a real gRPC server with the real
 * client auth interceptor stands in front of recording ClusterService and
 * SnapshotService handlers.
 */
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import { clientAuthInterceptor } from '../../../src/api/auth-interceptor.js';
import { createGateway, type Gateway } from '../../../src/gateway/gateway.js';
import { ClusterServiceService, Role } from '../../../src/gen/snapcoord/v1/cluster.js';
import { SnapshotServiceService } from '../../../src/gen/snapcoord/v1/snapshot.js';
import { status } from './fake-api.js';

const NODE_ADMIN = 'node-admin-key-0123456789';
const GW_ADMIN = 'gateway-admin-key-0123456789';
const OPERATOR = 'operator-cluster-key-0123456789';
const READER = 'reader-snapshots-read-0123456789';

describe('gateway: the caller\'s key goes to the node, which decides', function () {
  this.timeout(30_000);
  let server: grpc.Server;
  let gw: Gateway;
  const seen: { method: string; authorization: string }[] = [];

  before(async () => {
    server = new grpc.Server({
      interceptors: [
        clientAuthInterceptor({
          adminKey: NODE_ADMIN,
          keys: [
            { key: OPERATOR, actions: ['cluster'] },
            { key: READER, actions: ['snapshots.read'] },
            { key: GW_ADMIN, actions: ['snapshots.read'] },
          ],
        }),
      ],
    });
    const record = (method: string, call: { metadata: grpc.Metadata }): void => {
      seen.push({ method, authorization: String(call.metadata.get('authorization')[0] ?? '') });
    };
    const unimplemented = (_call: unknown, cb: grpc.sendUnaryData<unknown>): void => cb({ code: grpc.status.UNIMPLEMENTED, details: 'not here' } as grpc.ServiceError);
    const clusterHandlers: Record<string, grpc.UntypedHandleCall> = Object.fromEntries(Object.keys(ClusterServiceService).map((k) => [k, unimplemented]));
    clusterHandlers['status'] = ((call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      record('status', call);
      cb(null, status(Role.ROLE_LEADER, 'n1'));
    }) as grpc.UntypedHandleCall;
    clusterHandlers['vote'] = ((call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      record('vote', call);
      cb(null, { success: true });
    }) as grpc.UntypedHandleCall;
    server.addService(ClusterServiceService, clusterHandlers);
    server.addService(SnapshotServiceService, Object.fromEntries(Object.keys(SnapshotServiceService).map((k) => [k, unimplemented])));
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err !== null ? reject(err) : resolve(p))),
    );
    // The gateway knows the same operator key, and has an admin key of its own that the node gives only snapshots.read.
    gw = createGateway({
      target: `127.0.0.1:${port}`,
      auth: { adminKey: GW_ADMIN, keys: [{ key: OPERATOR, actions: ['cluster'] }, { key: READER, actions: ['snapshots.read'] }] },
    });
    await gw.app.ready();
  });

  after(async () => {
    await gw.close();
    server.forceShutdown();
  });

  it('POST /operations/vote with an operator key reaches the node carrying that key, not the gateway\'s', async () => {
    seen.length = 0;
    const res = await gw.app.inject({ method: 'POST', url: '/operations/vote', headers: { 'x-typesense-api-key': OPERATOR } });
    assert.equal(res.statusCode, 200, res.body);
    assert.deepEqual(JSON.parse(res.body), { success: true });
    assert.deepEqual(seen, [{ method: 'vote', authorization: `Bearer ${OPERATOR}` }]);
  });

  it('a key the gateway accepts but the node gives less is refused by the node (the gateway lends no power)', async () => {
    seen.length = 0;
    // GW_ADMIN is admin for the gateway, but only snapshots.read for the node: voting is refused there.
    const res = await gw.app.inject({ method: 'POST', url: '/operations/vote', headers: { 'x-typesense-api-key': GW_ADMIN } });
    assert.ok(res.statusCode === 401 || res.statusCode === 403, `${res.statusCode} ${res.body}`);
    assert.deepEqual(seen, [], 'the node refused before its handler ran');
  });

  it('a key passed in any style (Bearer, Nomad token, Typesense query) is the one forwarded', async () => {
    for (const headers of [{ authorization: `Bearer ${OPERATOR}` }, { 'x-nomad-token': OPERATOR }]) {
      seen.length = 0;
      const res = await gw.app.inject({ method: 'POST', url: '/operations/vote', headers });
      assert.equal(res.statusCode, 200, res.body);
      assert.deepEqual(seen, [{ method: 'vote', authorization: `Bearer ${OPERATOR}` }]);
    }
    seen.length = 0;
    const res = await gw.app.inject({ method: 'POST', url: `/operations/vote?x-typesense-api-key=${OPERATOR}` });
    assert.equal(res.statusCode, 200, res.body);
    assert.deepEqual(seen, [{ method: 'vote', authorization: `Bearer ${OPERATOR}` }]);
  });

  it('GET /health (open) asks the node with the gateway\'s own key', async () => {
    seen.length = 0;
    const res = await gw.app.inject({ method: 'GET', url: '/health' });
    assert.equal(res.statusCode, 200, res.body);
    assert.deepEqual(seen, [{ method: 'status', authorization: `Bearer ${GW_ADMIN}` }]);
  });
});

describe('gateway with --insecure-no-auth in front of a node that asks for keys', function () {
  this.timeout(30_000);
  let server: grpc.Server;
  let gw: Gateway;
  const seen: string[] = [];

  before(async () => {
    server = new grpc.Server({ interceptors: [clientAuthInterceptor({ adminKey: NODE_ADMIN })] });
    const unimplemented = (_call: unknown, cb: grpc.sendUnaryData<unknown>): void => cb({ code: grpc.status.UNIMPLEMENTED, details: 'not here' } as grpc.ServiceError);
    const handlers: Record<string, grpc.UntypedHandleCall> = Object.fromEntries(Object.keys(ClusterServiceService).map((k) => [k, unimplemented]));
    handlers['vote'] = ((call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      seen.push(String(call.metadata.get('authorization')[0] ?? ''));
      cb(null, { success: true });
    }) as grpc.UntypedHandleCall;
    server.addService(ClusterServiceService, handlers);
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err !== null ? reject(err) : resolve(p))),
    );
    // An open gateway that happens to hold the node's admin key must not lend it to anonymous callers.
    gw = createGateway({ target: `127.0.0.1:${port}`, auth: { adminKey: NODE_ADMIN, insecureNoAuth: true } });
    await gw.app.ready();
  });

  after(async () => {
    await gw.close();
    server.forceShutdown();
  });

  it('an anonymous vote reaches the node without the gateway\'s key and is refused there', async () => {
    const res = await gw.app.inject({ method: 'POST', url: '/operations/vote' });
    assert.equal(res.statusCode, 401, res.body);
    assert.deepEqual(seen, []);
  });

  it('a caller\'s own valid key still passes through', async () => {
    const res = await gw.app.inject({ method: 'POST', url: '/operations/vote', headers: { 'x-typesense-api-key': NODE_ADMIN } });
    assert.equal(res.statusCode, 200, res.body);
    assert.deepEqual(seen, [`Bearer ${NODE_ADMIN}`]);
  });
});
