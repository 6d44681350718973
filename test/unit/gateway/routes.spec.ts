/**
 * Gateway mapping logic without a cluster: fastify inject (and, for
 * streaming, real HTTP) against a gateway whose gRPC target is an in-process
 * fake API. Checks each style's status codes and bodies, auth, 404/405,
 * body caps, the OpenAPI document, and the backpressure of both snapshot
 * streams.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import * as grpc from '@grpc/grpc-js';
import type { InjectOptions, LightMyRequestResponse as LightResponse } from 'fastify';
import { KeyRing, parseApiKeys, presentedKeys, redactUrl } from '../../../src/gateway/auth.js';
import { createGateway, localTarget, type Gateway } from '../../../src/gateway/gateway.js';
import { meiliTaskError, taskFilterOf } from '../../../src/gateway/meili-tasks.js';
import { OPENAPI, openApiPath } from '../../../src/gateway/openapi.js';
import { grpcFailure, httpStatusOfFailure, meiliCodeOf } from '../../../src/gateway/styles.js';
import { outsideRoots } from '../../../src/gateway/typesense-routes.js';
import type {
  CreateSnapshotRequest,
  GetSnapshotRequest,
  GetSnapshotResponse,
  ListTasksRequest,
  RestoreSnapshotRequest,
  RestoreSnapshotResponse,
  TaskFilter,
} from '../../../src/gen/snapcoord/v1/snapshot.js';
import { Role, grpcError, startFakeApi, status, task, unaryOk, type FakeApi, type FakeApiHandlers } from './fake-api.js';
import { logLines } from '../../harness/log-lines.js';
import { sleep, until } from '../../harness/until.js';

const KEY = 'admin-key-0123456789';
const READ_KEY = 'read-only-key-0123';
const TS_FORBIDDEN = 'Forbidden - a valid `x-typesense-api-key` header must be sent.';

interface Env {
  api: FakeApi;
  gw: Gateway;
}

async function setup(h: FakeApiHandlers, extra: Partial<Parameters<typeof createGateway>[0]> = {}): Promise<Env> {
  const api = await startFakeApi(h);
  const gw = createGateway({
    target: api.address,
    auth: { adminKey: KEY, keys: [{ key: READ_KEY, actions: ['snapshots.read'] }] },
    ...extra,
  });
  await gw.app.ready();
  return { api, gw };
}

async function teardown(env: Env | null): Promise<void> {
  if (env === null) return;
  await env.gw.close();
  await env.api.close();
}

const ts = { 'x-typesense-api-key': KEY };
const bearer = { authorization: `Bearer ${KEY}` };
const nomad = { 'x-nomad-token': KEY };

describe('gateway: auth', () => {
  it('KeyRing: admin key, restricted keys, missing / invalid / forbidden, insecure', () => {
    const ring = new KeyRing({ adminKey: KEY, keys: [{ key: READ_KEY, actions: ['snapshots.read'] }] });
    assert.equal(ring.check([KEY], 'admin'), 'ok');
    assert.equal(ring.check([KEY], 'cluster'), 'ok');
    assert.equal(ring.check([READ_KEY], 'snapshots.read'), 'ok');
    assert.equal(ring.check([READ_KEY], 'snapshots.write'), 'forbidden');
    assert.equal(ring.check(['nope-nope-nope'], 'snapshots.read'), 'invalid');
    assert.equal(ring.check([], 'snapshots.read'), 'missing');
    assert.equal(ring.check(['x'.repeat(5000)], 'snapshots.read'), 'invalid');
    assert.equal(ring.check(['wrong', KEY], 'cluster'), 'ok', 'any presented key may be the right one');
    assert.equal(new KeyRing({ adminKey: '', insecureNoAuth: true }).check([], 'admin'), 'ok');
    assert.equal(new KeyRing({ adminKey: '' }).check([KEY], 'admin'), 'invalid', 'no keys configured: nothing passes');
    const admin2 = new KeyRing({ adminKey: '', keys: [{ key: READ_KEY, actions: ['admin'] }] });
    assert.equal(admin2.check([READ_KEY], 'cluster'), 'ok', 'admin implies every action');
  });

  it('presentedKeys reads every style, whatever the route', () => {
    assert.deepEqual(presentedKeys({ 'x-typesense-api-key': 'a' }, {}), ['a']);
    assert.deepEqual(presentedKeys({}, { 'x-typesense-api-key': 'b' }), ['b']);
    assert.deepEqual(presentedKeys({ authorization: 'Bearer c' }, {}), ['c']);
    assert.deepEqual(presentedKeys({ authorization: 'Basic c' }, {}), []);
    assert.deepEqual(presentedKeys({ 'x-nomad-token': 'd' }, undefined), ['d']);
    assert.deepEqual(presentedKeys({ 'x-typesense-api-key': '' }, {}), []);
  });

  it('parseApiKeys validates entries without echoing keys', () => {
    assert.deepEqual(parseApiKeys('[{"key":"abcdefgh","actions":["cluster"]}]'), [{ key: 'abcdefgh', actions: ['cluster'] }]);
    assert.deepEqual(parseApiKeys(''), []);
    assert.throws(() => parseApiKeys('{'), /not valid JSON/);
    assert.throws(() => parseApiKeys('{}'), /JSON array/);
    assert.throws(() => parseApiKeys([{ key: 'short', actions: ['cluster'] }]), /at least 8/);
    assert.throws(() => parseApiKeys([{ key: 'abcdefgh', actions: ['root'] }]), /unknown action "root"/);
    assert.throws(() => parseApiKeys([{ key: 'abcdefgh', actions: [] }]), /non-empty/);
    assert.throws(() => parseApiKeys([{ key: 'abcdefgh', actions: ['cluster'], x: 1 }]), /unknown field "x"/);
    try {
      parseApiKeys([{ key: 'secret-key-value', actions: ['nope'] }]);
    } catch (err) {
      assert.doesNotMatch((err as Error).message, /secret-key-value/);
    }
  });

  it('redactUrl hides a key in the query string', () => {
    assert.equal(redactUrl('/debug?x-typesense-api-key=s3cret&a=1'), '/debug?x-typesense-api-key=<redacted>&a=1');
    assert.equal(redactUrl('/debug?a=1&X-TYPESENSE-API-KEY=s3cret'), '/debug?a=1&X-TYPESENSE-API-KEY=<redacted>');
  });

  it('the request log holds no key (headers or query)', async () => {
    const { lines, logger } = logLines('trace');
    const env = await setup({ cluster: { status: unaryOk(status(Role.ROLE_LEADER, 'n1')) } }, { logger });
    try {
      await env.gw.app.inject({ method: 'GET', url: `/debug?x-typesense-api-key=${KEY}` });
      await env.gw.app.inject({ method: 'GET', url: '/debug', headers: { ...bearer, ...nomad, ...ts } });
      const log = lines.join('');
      assert.match(log, /\/debug/);
      assert.doesNotMatch(log, new RegExp(KEY));
    } finally {
      await teardown(env);
    }
  });

  it('localTarget turns a wildcard bind address into loopback', () => {
    assert.equal(localTarget('0.0.0.0:7001'), '127.0.0.1:7001');
    assert.equal(localTarget('[::]:7001'), '[::1]:7001');
    assert.equal(localTarget('10.0.0.1:7001'), '10.0.0.1:7001');
  });
});

describe('gateway: Typesense routes', () => {
  let env: Env | null = null;
  let lastCreate: CreateSnapshotRequest | null = null;
  let createAnswer: () => grpc.ServiceError | null = () => null;
  let createWarnings: string[] = [];
  let role = Role.ROLE_LEADER;
  let leader = 'n1';
  let voteSuccess = true;
  /** statusCalls: Status calls the node got; statusGate: what each waits for before it answers. */
  let statusCalls = 0;
  let statusGate: Promise<void> = Promise.resolve();

  before(async () => {
    env = await setup(
      {
        cluster: {
          status: ((_call: unknown, cb: grpc.sendUnaryData<unknown>) => {
            statusCalls++;
            void statusGate.then(() => cb(null, status(role, leader)));
          }) as grpc.UntypedHandleCall,
          vote: unaryOk(() => ({ success: voteSuccess })),
        },
        snapshots: {
          createSnapshot: ((call: grpc.ServerUnaryCall<CreateSnapshotRequest, unknown>, cb: grpc.sendUnaryData<unknown>) => {
            lastCreate = call.request;
            const err = createAnswer();
            if (err !== null) cb(err);
            else cb(null, { directorySnapshot: { path: call.request.directory ?? '', info: undefined, warnings: createWarnings } });
          }) as grpc.UntypedHandleCall,
        },
      },
      {},
    );
  });
  after(() => teardown(env));
  beforeEach(() => {
    lastCreate = null;
    createAnswer = () => null;
    createWarnings = [];
    role = Role.ROLE_LEADER;
    leader = 'n1';
    statusCalls = 0;
    statusGate = Promise.resolve();
  });

  const inject = (o: InjectOptions): Promise<LightResponse> => env!.gw.app.inject(o);

  it('POST /operations/snapshot: 201 {"success":true}, CreateSnapshot{directory}', async () => {
    const r = await inject({ method: 'POST', url: '/operations/snapshot?snapshot_path=/tmp/ts-snap', headers: { ...ts, 'content-type': 'application/json' }, payload: '' });
    assert.equal(r.statusCode, 201);
    assert.match(String(r.headers['content-type']), /^application\/json/);
    assert.deepEqual(r.json(), { success: true });
    assert.equal(lastCreate?.directory, '/tmp/ts-snap');
    assert.equal(lastCreate?.task, undefined);
  });

  it('POST /operations/snapshot: the export\'s warnings (DirectorySnapshot.warnings) go with the 201 answer', async () => {
    createWarnings = ['snapshot_path /tmp/ts-snap holds the new snapshot, but the earlier one moved aside to /tmp/.snapcoord-old-x could not be removed (EBUSY); remove it by hand'];
    const r = await inject({ method: 'POST', url: '/operations/snapshot?snapshot_path=/tmp/ts-snap', headers: { ...ts, 'content-type': 'application/json' }, payload: '' });
    assert.equal(r.statusCode, 201);
    assert.deepEqual(r.json(), { success: true, warnings: createWarnings });
  });

  it('POST /operations/snapshot with a JSON body {} and with a form body is accepted', async () => {
    const a = await inject({ method: 'POST', url: '/operations/snapshot?snapshot_path=/tmp/a', headers: { ...ts, 'content-type': 'application/json' }, payload: '{}' });
    assert.equal(a.statusCode, 201);
    const b = await inject({ method: 'POST', url: '/operations/snapshot?snapshot_path=/tmp/b', headers: { ...ts, 'content-type': 'application/x-www-form-urlencoded' }, payload: 'a=b' });
    assert.equal(b.statusCode, 201);
  });

  it('POST /operations/snapshot without snapshot_path: 400 with Typesense message, no call', async () => {
    for (const url of ['/operations/snapshot', '/operations/snapshot?snapshot_path=']) {
      const r = await inject({ method: 'POST', url, headers: ts });
      assert.equal(r.statusCode, 400);
      assert.deepEqual(r.json(), { message: 'Parameter `snapshot_path` is required.' });
    }
    assert.equal(lastCreate, null);
  });

  it('POST /operations/snapshot: FAILED_PRECONDITION and ALREADY_EXISTS -> 409', async () => {
    for (const code of [grpc.status.FAILED_PRECONDITION, grpc.status.ALREADY_EXISTS]) {
      createAnswer = () => grpcError(code, 'another snapshot is being created');
      const r = await inject({ method: 'POST', url: '/operations/snapshot?snapshot_path=/tmp/x', headers: ts });
      assert.equal(r.statusCode, 409);
      assert.deepEqual(r.json(), { message: 'another snapshot is being created' });
    }
  });

  it('POST /operations/snapshot: a refused path (INVALID_ARGUMENT) -> 400 with the node\'s message; the node refusing the key (PERMISSION_DENIED) -> 403', async () => {
    createAnswer = () => grpcError(grpc.status.INVALID_ARGUMENT, 'snapshot_path /etc/x is outside the allowed roots');
    const r = await inject({ method: 'POST', url: '/operations/snapshot?snapshot_path=/etc/x', headers: ts });
    assert.equal(r.statusCode, 400);
    assert.deepEqual(r.json(), { message: 'snapshot_path /etc/x is outside the allowed roots' });
    createAnswer = () => grpcError(grpc.status.PERMISSION_DENIED, 'this API key may not call /snapcoord.v1.SnapshotService/CreateSnapshot');
    const denied = await inject({ method: 'POST', url: '/operations/snapshot?snapshot_path=/tmp/x', headers: ts });
    assert.equal(denied.statusCode, 403);
  });

  it('POST /operations/snapshot: the node unreachable / busy -> 503 / 429', async () => {
    createAnswer = () => grpcError(grpc.status.UNAVAILABLE, 'shutting down');
    assert.equal((await inject({ method: 'POST', url: '/operations/snapshot?snapshot_path=/tmp/x', headers: ts })).statusCode, 503);
    createAnswer = () => grpcError(grpc.status.RESOURCE_EXHAUSTED, 'busy');
    assert.equal((await inject({ method: 'POST', url: '/operations/snapshot?snapshot_path=/tmp/x', headers: ts })).statusCode, 429);
  });

  it('POST /operations/snapshot: a full disk (RESOURCE_EXHAUSTED, disk_full) -> 422 with the node\'s message', async () => {
    const message = 'disk full: 3.2 MiB free on /data/n1, below the reserve of 64 MiB (--min-free-bytes); writes are refused, reads still served';
    createAnswer = () => grpcError(grpc.status.RESOURCE_EXHAUSTED, message, { 'x-snapcoord-error-code': 'disk_full' });
    const r = await inject({ method: 'POST', url: '/operations/snapshot?snapshot_path=/tmp/x', headers: ts });
    assert.equal(r.statusCode, 422);
    assert.deepEqual(r.json(), { message });
  });

  it('auth: no key / wrong key -> 401 Typesense message; key in query, Bearer or Nomad token work too', async () => {
    for (const headers of [{}, { 'x-typesense-api-key': 'wrong' }]) {
      const r = await inject({ method: 'POST', url: '/operations/vote', headers });
      assert.equal(r.statusCode, 401);
      assert.deepEqual(r.json(), { message: TS_FORBIDDEN });
    }
    assert.equal((await inject({ method: 'POST', url: `/operations/vote?x-typesense-api-key=${KEY}` })).statusCode, 200);
    assert.equal((await inject({ method: 'POST', url: '/operations/vote', headers: bearer })).statusCode, 200);
    assert.equal((await inject({ method: 'POST', url: '/operations/vote', headers: nomad })).statusCode, 200);
    // A read-only key may not vote or snapshot.
    assert.equal((await inject({ method: 'POST', url: '/operations/vote', headers: { 'x-typesense-api-key': READ_KEY } })).statusCode, 401);
  });

  it('POST /operations/vote: {"success": true|false}', async () => {
    voteSuccess = true;
    assert.deepEqual((await inject({ method: 'POST', url: '/operations/vote', headers: ts })).json(), { success: true });
    voteSuccess = false;
    const r = await inject({ method: 'POST', url: '/operations/vote', headers: ts });
    assert.equal(r.statusCode, 200);
    assert.deepEqual(r.json(), { success: false });
  });

  it('GET /health: open; 200 with a known leader, 503 without', async () => {
    const ok = await inject({ method: 'GET', url: '/health' });
    assert.equal(ok.statusCode, 200);
    assert.deepEqual(ok.json(), { ok: true, status: 'available' });
    leader = '';
    role = Role.ROLE_CANDIDATE;
    const bad = await inject({ method: 'GET', url: '/health' });
    assert.equal(bad.statusCode, 503);
    assert.deepEqual(bad.json(), { ok: false, status: 'unavailable' });
  });

  it('GET /health: the requests that arrive while a Status call runs share it (a flood costs the node one call at a time); the next asks again', async () => {
    let open = (): void => undefined;
    statusGate = new Promise<void>((r) => {
      open = r;
    });
    const answers = Array.from({ length: 40 }, () => inject({ method: 'GET', url: '/health' }));
    await until('the first Status call', 5_000, () => (statusCalls >= 1 ? true : undefined));
    await sleep(100); // the other requests reach the route meanwhile
    assert.equal(statusCalls, 1);
    open();
    for (const r of await Promise.all(answers)) assert.equal(r.statusCode, 200);
    leader = '';
    assert.equal((await inject({ method: 'GET', url: '/health' })).statusCode, 503, 'no answer kept past its call');
    assert.equal(statusCalls, 2);
  });

  it('GET /debug: version and Typesense state numbers; needs a key', async () => {
    const expect: [Role, number][] = [
      [Role.ROLE_LEADER, 1],
      [Role.ROLE_FOLLOWER, 4],
      [Role.ROLE_CANDIDATE, 3],
      [Role.ROLE_PRE_CANDIDATE, 3],
    ];
    for (const [r, n] of expect) {
      role = r;
      const res = await inject({ method: 'GET', url: '/debug', headers: ts });
      assert.equal(res.statusCode, 200);
      const body = res.json() as { version: string; state: number };
      assert.equal(body.state, n);
      assert.match(body.version, /^\d+\.\d+\.\d+/);
    }
    assert.equal((await inject({ method: 'GET', url: '/debug' })).statusCode, 401);
  });

  it('404 and 405 in Typesense style', async () => {
    const nf = await inject({ method: 'GET', url: '/collections', headers: ts });
    assert.equal(nf.statusCode, 404);
    assert.deepEqual(nf.json(), { message: 'Not Found' });
    const na = await inject({ method: 'GET', url: '/operations/vote', headers: ts });
    assert.equal(na.statusCode, 405);
    assert.equal(na.headers['allow'], 'POST');
    assert.deepEqual(na.json(), { message: 'Method Not Allowed' });
    assert.equal((await inject({ method: 'DELETE', url: '/health' })).statusCode, 405);
  });

  it('a body over 64 KiB -> 413', async () => {
    const r = await inject({ method: 'POST', url: '/operations/vote', headers: { ...ts, 'content-type': 'application/json' }, payload: 'x'.repeat(65 * 1024) });
    assert.equal(r.statusCode, 413);
    assert.match((r.json() as { message: string }).message, /too large/);
  });

  it('snapshotRoots: a path outside them is refused before any call', async () => {
    assert.equal(outsideRoots('/srv/snaps/a', ['/srv/snaps']), null);
    assert.match(outsideRoots('/srv/snaps', ['/srv/snaps']) ?? '', /outside/);
    assert.match(outsideRoots('/srv/snaps/../etc', ['/srv/snaps']) ?? '', /outside/);
    assert.match(outsideRoots('relative/dir', ['/srv/snaps']) ?? '', /absolute/);
    const env2 = await setup({}, { snapshotRoots: ['/srv/snaps'] });
    try {
      const r = await env2.gw.app.inject({ method: 'POST', url: '/operations/snapshot?snapshot_path=/etc/passwd-dir', headers: ts });
      assert.equal(r.statusCode, 400);
      assert.match((r.json() as { message: string }).message, /outside the allowed snapshot roots/);
    } finally {
      await teardown(env2);
    }
  });
});

describe('gateway: Meilisearch routes', () => {
  let env: Env | null = null;
  let lastList: ListTasksRequest | null = null;
  let lastCancel: TaskFilter | null = null;

  before(async () => {
    env = await setup({
      snapshots: {
        createSnapshot: unaryOk((req) => {
          const r = req as CreateSnapshotRequest;
          return r.task === true && r.directory === undefined ? { task: task({ uid: 12n, status: 'processing' }) } : {};
        }),
      },
      tasks: {
        getTask: ((call: grpc.ServerUnaryCall<{ uid: bigint }, unknown>, cb: grpc.sendUnaryData<unknown>) => {
          if (call.request.uid === 404n) cb(grpcError(grpc.status.NOT_FOUND, 'Task `404` not found.', { 'x-snapcoord-error-code': 'task_not_found' }));
          else
            cb(null, {
              task: task({
                uid: call.request.uid,
                batchUid: 3n,
                status: 'succeeded',
                details: { path: '/data/n1.snapshot', bytesDone: 10n, bytesTotal: 10n, digest: 'ab', index: 9n, matchedTasks: 0n, canceledTasks: 0n, originalFilter: '' },
                duration: 'PT0.5S',
                startedAt: '2026-01-02T03:04:06.000Z',
                finishedAt: '2026-01-02T03:04:06.500Z',
              }),
            });
        }) as grpc.UntypedHandleCall,
        listTasks: ((call: grpc.ServerUnaryCall<ListTasksRequest, unknown>, cb: grpc.sendUnaryData<unknown>) => {
          lastList = call.request;
          if (call.request.limit === 999_999) {
            cb(grpcError(grpc.status.INVALID_ARGUMENT, 'limit too large', { 'x-snapcoord-error-code': 'invalid_task_limit' }));
            return;
          }
          cb(null, { results: [task({ uid: 2n }), task({ uid: 1n, status: 'failed', error: { message: 'disk full', code: 'disk_full', type: '', link: '' } })], total: 2n, limit: call.request.limit, from: 2n });
        }) as grpc.UntypedHandleCall,
        cancelTasks: ((call: grpc.ServerUnaryCall<{ filter: TaskFilter }, unknown>, cb: grpc.sendUnaryData<unknown>) => {
          lastCancel = call.request.filter;
          cb(null, { task: task({ uid: 30n, type: 'taskCancelation' }) });
        }) as grpc.UntypedHandleCall,
      },
    });
  });
  after(() => teardown(env));

  const inject = (o: InjectOptions): Promise<LightResponse> => env!.gw.app.inject(o);

  it('a full disk is Meilisearch\'s no_space_left_on_device (422, type system); a busy node stays 429 too_many_requests', () => {
    const full = grpcFailure(grpcError(grpc.status.RESOURCE_EXHAUSTED, 'disk full', { 'x-snapcoord-error-code': 'disk_full' }));
    assert.equal(httpStatusOfFailure(full), 422);
    assert.deepEqual(meiliCodeOf(full), { code: 'no_space_left_on_device', type: 'system' });
    // A node of an earlier version named Meilisearch's code itself: the same answer.
    const legacy = grpcFailure(grpcError(grpc.status.RESOURCE_EXHAUSTED, 'disk full', { 'x-snapcoord-error-code': 'no_space_left_on_device' }));
    assert.equal(httpStatusOfFailure(legacy), 422);
    assert.deepEqual(meiliCodeOf(legacy), { code: 'no_space_left_on_device', type: 'system' });
    const busy = grpcFailure(grpcError(grpc.status.RESOURCE_EXHAUSTED, 'busy'));
    assert.equal(httpStatusOfFailure(busy), 429);
    assert.deepEqual(meiliCodeOf(busy), { code: 'too_many_requests', type: 'system' });
  });

  it('a failed task\'s error in Meilisearch\'s words: disk_full is no_space_left_on_device (system); another code keeps its name (internal, link of internal)', () => {
    const link = (code: string): string => `https://docs.meilisearch.com/errors#${code}`;
    assert.deepEqual(meiliTaskError('disk_full', 'ENOSPC'), { message: 'ENOSPC', code: 'no_space_left_on_device', type: 'system', link: link('no_space_left_on_device') });
    assert.deepEqual(meiliTaskError('no_space_left_on_device', 'ENOSPC'), { message: 'ENOSPC', code: 'no_space_left_on_device', type: 'system', link: link('no_space_left_on_device') });
    assert.deepEqual(meiliTaskError('snapshot_creation_failed', 'boom'), { message: 'boom', code: 'snapshot_creation_failed', type: 'internal', link: link('internal') });
    assert.deepEqual(meiliTaskError('internal', 'boom'), { message: 'boom', code: 'internal', type: 'internal', link: link('internal') });
  });

  it('POST /snapshots -> 202 summarized task (status "enqueued" even if the node has started it already)', async () => {
    const r = await inject({ method: 'POST', url: '/snapshots', headers: { ...bearer, 'content-type': 'application/json' } });
    assert.equal(r.statusCode, 202);
    assert.deepEqual(r.json(), { taskUid: 12, indexUid: null, status: 'enqueued', type: 'snapshotCreation', enqueuedAt: '2026-01-02T03:04:05.000Z' });
  });

  it('auth: missing -> 401 missing_authorization_header; wrong -> 403 invalid_api_key; read-only key cannot write', async () => {
    const a = await inject({ method: 'POST', url: '/snapshots' });
    assert.equal(a.statusCode, 401);
    assert.deepEqual(a.json(), {
      message: 'The Authorization header is missing. It must use the bearer authorization method.',
      code: 'missing_authorization_header',
      type: 'auth',
      link: 'https://docs.meilisearch.com/errors#missing_authorization_header',
    });
    const b = await inject({ method: 'GET', url: '/tasks', headers: { authorization: 'Bearer wrong' } });
    assert.equal(b.statusCode, 403);
    assert.equal((b.json() as { code: string }).code, 'invalid_api_key');
    assert.equal((b.json() as { type: string }).type, 'auth');
    assert.equal((await inject({ method: 'GET', url: '/tasks', headers: { authorization: `Bearer ${READ_KEY}` } })).statusCode, 200);
    assert.equal((await inject({ method: 'POST', url: '/snapshots', headers: { authorization: `Bearer ${READ_KEY}` } })).statusCode, 403);
  });

  it('GET /tasks/:uid -> task JSON with nulls for unset fields', async () => {
    const r = await inject({ method: 'GET', url: '/tasks/5', headers: bearer });
    assert.equal(r.statusCode, 200);
    assert.deepEqual(r.json(), {
      uid: 5,
      batchUid: 3,
      indexUid: null,
      status: 'succeeded',
      type: 'snapshotCreation',
      canceledBy: null,
      details: { path: '/data/n1.snapshot', bytesDone: 10, bytesTotal: 10, digest: 'ab', index: 9 },
      error: null,
      duration: 'PT0.5S',
      enqueuedAt: '2026-01-02T03:04:05.000Z',
      startedAt: '2026-01-02T03:04:06.000Z',
      finishedAt: '2026-01-02T03:04:06.500Z',
    });
  });

  it('GET /tasks/:uid: 404 task_not_found; 400 invalid_task_uids', async () => {
    const nf = await inject({ method: 'GET', url: '/tasks/404', headers: bearer });
    assert.equal(nf.statusCode, 404);
    assert.deepEqual(nf.json(), { message: 'Task `404` not found.', code: 'task_not_found', type: 'invalid_request', link: 'https://docs.meilisearch.com/errors#task_not_found' });
    const bad = await inject({ method: 'GET', url: '/tasks/abc', headers: bearer });
    assert.equal(bad.statusCode, 400);
    assert.equal((bad.json() as { code: string }).code, 'invalid_task_uids');
  });

  it('GET /tasks: filters, paging and the {results,total,limit,from,next} page', async () => {
    const r = await inject({
      method: 'GET',
      url: '/tasks?uids=1,2&statuses=succeeded,failed&types=snapshotCreation&canceledBy=4&batchUids=5&limit=5&from=10&reverse=true&afterEnqueuedAt=2026-01-01&beforeFinishedAt=2026-01-03T00:00:00Z',
      headers: bearer,
    });
    assert.equal(r.statusCode, 200);
    const body = r.json() as { results: { uid: number; error: unknown; duration: unknown; startedAt: unknown }[]; total: number; limit: number; from: number; next: unknown };
    assert.equal(body.total, 2);
    assert.equal(body.limit, 5);
    assert.equal(body.from, 2);
    assert.equal(body.next, null);
    assert.deepEqual(body.results[0]?.error, null);
    assert.equal(body.results[0]?.duration, null);
    assert.equal(body.results[0]?.startedAt, null);
    // The node says disk_full; Meilisearch's vocabulary (code, type, link) is the gateway's.
    assert.deepEqual(body.results[1]?.error, { message: 'disk full', code: 'no_space_left_on_device', type: 'system', link: 'https://docs.meilisearch.com/errors#no_space_left_on_device' });
    const req = lastList!;
    assert.equal(req.limit, 5);
    assert.equal(req.from, 10n);
    assert.equal(req.reverse, true);
    assert.deepEqual(req.filter?.uids, [1n, 2n]);
    assert.deepEqual(req.filter?.statuses, ['succeeded', 'failed']);
    assert.deepEqual(req.filter?.types, ['snapshotCreation']);
    assert.deepEqual(req.filter?.canceledBy, [4n]);
    assert.deepEqual(req.filter?.batchUids, [5n]);
    assert.equal(req.filter?.afterEnqueuedAt, '2026-01-01T00:00:00.000Z');
    assert.equal(req.filter?.beforeFinishedAt, '2026-01-03T00:00:00.000Z');
    // Defaults
    await inject({ method: 'GET', url: '/tasks', headers: bearer });
    assert.equal(lastList!.limit, 20);
    assert.equal(lastList!.from, undefined);
    assert.equal(lastList!.reverse, false);
  });

  it('GET /tasks: bad parameters -> 400 with Meilisearch codes', async () => {
    const cases: [string, string][] = [
      ['uids=x', 'invalid_task_uids'],
      ['statuses=done', 'invalid_task_statuses'],
      ['types=bogus', 'invalid_task_types'],
      ['canceledBy=-1', 'invalid_task_canceled_by'],
      ['batchUids=a', 'invalid_task_batch_uids'],
      ['limit=ten', 'invalid_task_limit'],
      ['from=x', 'invalid_task_from'],
      ['reverse=maybe', 'invalid_task_reverse'],
      ['beforeEnqueuedAt=yesterday', 'invalid_task_before_enqueued_at'],
      ['afterStartedAt=2026-13-45', 'invalid_task_after_started_at'],
      ['indexUids=movies', 'invalid_task_index_uids'],
      ['color=red', 'bad_request'],
    ];
    for (const [q, code] of cases) {
      const r = await inject({ method: 'GET', url: `/tasks?${q}`, headers: bearer });
      assert.equal(r.statusCode, 400, q);
      const body = r.json() as { code: string; type: string; link: string; message: string };
      assert.equal(body.code, code, q);
      assert.equal(body.type, 'invalid_request');
      assert.equal(body.link, `https://docs.meilisearch.com/errors#${code}`);
    }
    // The node's own code (trailer) wins.
    const r = await inject({ method: 'GET', url: '/tasks?limit=999999', headers: bearer });
    assert.equal(r.statusCode, 400);
    assert.equal((r.json() as { code: string }).code, 'invalid_task_limit');
  });

  it('wildcards match everything', () => {
    const f = taskFilterOf({ uids: '*', statuses: '*', types: '*', indexUids: '*' });
    assert.deepEqual([f.uids, f.statuses, f.types], [[], [], []]);
  });

  it('POST /tasks/cancel: needs a filter; 202 taskCancelation', async () => {
    const none = await inject({ method: 'POST', url: '/tasks/cancel', headers: bearer });
    assert.equal(none.statusCode, 400);
    assert.equal((none.json() as { code: string }).code, 'missing_task_filters');
    const limit = await inject({ method: 'POST', url: '/tasks/cancel?limit=3', headers: bearer });
    assert.equal(limit.statusCode, 400);
    const ok = await inject({ method: 'POST', url: '/tasks/cancel?statuses=enqueued&uids=1,2', headers: { ...bearer, 'content-type': 'application/json' } });
    assert.equal(ok.statusCode, 202);
    assert.deepEqual(ok.json(), { taskUid: 30, indexUid: null, status: 'enqueued', type: 'taskCancelation', enqueuedAt: '2026-01-02T03:04:05.000Z' });
    assert.deepEqual(lastCancel?.statuses, ['enqueued']);
    assert.deepEqual(lastCancel?.uids, [1n, 2n]);
  });

  it('404 and 405 in Meilisearch style', async () => {
    const nf = await inject({ method: 'GET', url: '/tasks/1/documents', headers: bearer });
    assert.equal(nf.statusCode, 404);
    assert.deepEqual(nf.json(), { message: 'Not Found', code: 'not_found', type: 'invalid_request', link: 'https://docs.meilisearch.com/errors#not_found' });
    const na = await inject({ method: 'DELETE', url: '/snapshots', headers: bearer });
    assert.equal(na.statusCode, 405);
    assert.equal((na.json() as { code: string }).code, 'method_not_allowed');
    assert.equal(na.headers['allow'], 'POST');
  });

  it('the node unreachable -> 503 in Meilisearch shape', async () => {
    const gw = createGateway({ target: '127.0.0.1:1', auth: { adminKey: KEY } });
    try {
      const r = await gw.app.inject({ method: 'GET', url: '/tasks', headers: bearer });
      assert.equal(r.statusCode, 503);
      const body = r.json() as { code: string; type: string };
      assert.equal(body.type, 'system');
      // And /health says unavailable.
      const h = await gw.app.inject({ method: 'GET', url: '/health' });
      assert.equal(h.statusCode, 503);
    } finally {
      await gw.close();
    }
  });
});

/** httpCall: one real HTTP request; resolves with the response (body unread). */
function httpCall(port: number, method: string, path: string, headers: Record<string, string>, body?: Buffer): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, method, path, headers }, resolve);
    req.on('error', reject);
    req.end(body);
  });
}

async function readAll(res: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of res) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

const MiB = 1024 * 1024;

describe('gateway: Nomad routes', function () {
  this.timeout(60_000);

  it('GET /v1/operator/snapshot: headers, body, ?stale', async () => {
    const body = Buffer.from('pretend this is a tar.gz archive'.repeat(1000));
    const hex = createHash('sha256').update(body).digest('hex');
    let stale: boolean | null = null;
    const env = await setup({
      snapshots: {
        getSnapshot: ((call: grpc.ServerWritableStream<GetSnapshotRequest, GetSnapshotResponse>) => {
          stale = call.request.stale;
          const info = { id: 's1', index: 42n, term: 2n, sizeBytes: BigInt(body.length), digest: hex, createdAt: '', stateBytes: 0n, stateKeys: 0n, snapcoordVersion: '', formatVersion: 1 };
          call.write({ info, knownLeader: true, lastContactMs: 7n });
          for (let i = 0; i < body.length; i += 5000) call.write({ data: body.subarray(i, i + 5000), knownLeader: true, lastContactMs: 7n });
          call.end();
        }) as grpc.UntypedHandleCall,
      },
    });
    try {
      const r = await env.gw.app.inject({ method: 'GET', url: '/v1/operator/snapshot?stale', headers: nomad });
      assert.equal(r.statusCode, 200);
      assert.equal(r.headers['content-type'], 'application/x-gzip');
      assert.equal(r.headers['digest'], `sha-256=${Buffer.from(hex, 'hex').toString('base64')}`);
      assert.equal(r.headers['x-nomad-index'], '42');
      assert.equal(r.headers['x-nomad-knownleader'], 'true');
      assert.equal(r.headers['x-nomad-lastcontact'], '7');
      assert.ok(r.rawPayload.equals(body));
      assert.equal(stale, true);
      await env.gw.app.inject({ method: 'GET', url: '/v1/operator/snapshot', headers: nomad });
      assert.equal(stale, false);
      await env.gw.app.inject({ method: 'GET', url: '/v1/operator/snapshot?stale=false', headers: nomad });
      assert.equal(stale, false);
    } finally {
      await teardown(env);
    }
  });

  it('GET /v1/operator/snapshot: errors before the first message are plain text; auth is 403 Permission denied', async () => {
    const env = await setup({ snapshots: { getSnapshot: ((call: grpc.ServerWritableStream<unknown, unknown>) => call.emit('error', grpcError(grpc.status.UNAVAILABLE, 'no leader'))) as grpc.UntypedHandleCall } });
    try {
      const r = await env.gw.app.inject({ method: 'GET', url: '/v1/operator/snapshot', headers: nomad });
      assert.equal(r.statusCode, 503);
      assert.match(String(r.headers['content-type']), /^text\/plain/);
      assert.equal(r.body, 'no leader\n');
      const denied = await env.gw.app.inject({ method: 'GET', url: '/v1/operator/snapshot', headers: { 'x-nomad-token': 'wrong' } });
      assert.equal(denied.statusCode, 403);
      assert.equal(denied.body, 'Permission denied\n');
      assert.equal((await env.gw.app.inject({ method: 'GET', url: '/v1/operator/snapshot' })).statusCode, 403);
      const nf = await env.gw.app.inject({ method: 'GET', url: '/v1/agent/self', headers: nomad });
      assert.equal(nf.statusCode, 404);
      assert.match(String(nf.headers['content-type']), /^text\/plain/);
      const na = await env.gw.app.inject({ method: 'DELETE', url: '/v1/operator/snapshot', headers: nomad });
      assert.equal(na.statusCode, 405);
      assert.equal(na.body, 'Invalid method\n');
      assert.equal(na.headers['allow'], 'GET, PUT, POST');
    } finally {
      await teardown(env);
    }
  });

  it('GET /v1/operator/snapshot: bytes that do not match the announced digest cut the response', async () => {
    const env = await setup({
      snapshots: {
        getSnapshot: ((call: grpc.ServerWritableStream<unknown, GetSnapshotResponse>) => {
          const info = { id: 's1', index: 1n, term: 1n, sizeBytes: 10n, digest: '0'.repeat(64), createdAt: '', stateBytes: 0n, stateKeys: 0n, snapcoordVersion: '', formatVersion: 1 };
          call.write({ info, knownLeader: true, lastContactMs: 0n });
          call.write({ data: Buffer.from('0123456789'), knownLeader: true, lastContactMs: 0n });
          call.end();
        }) as grpc.UntypedHandleCall,
      },
    });
    try {
      const port = Number((await env.gw.listen('127.0.0.1:0')).split(':')[1]);
      const res = await httpCall(port, 'GET', '/v1/operator/snapshot', nomad);
      assert.equal(res.statusCode, 200);
      await assert.rejects(readAll(res), /aborted|ECONNRESET|terminated/);
    } finally {
      await teardown(env);
    }
  });

  it('PUT/POST /v1/operator/snapshot: raw bytes whatever the Content-Type; 200 empty text/plain', async () => {
    const got: Buffer[] = [];
    let answer: grpc.ServiceError | null = null;
    const env = await setup({
      snapshots: {
        restoreSnapshot: ((call: grpc.ServerReadableStream<RestoreSnapshotRequest, RestoreSnapshotResponse>, cb: grpc.sendUnaryData<RestoreSnapshotResponse>) => {
          const parts: Buffer[] = [];
          call.on('data', (m: RestoreSnapshotRequest) => parts.push(Buffer.from(m.data)));
          call.on('end', () => {
            got.push(Buffer.concat(parts));
            if (answer !== null) cb(answer);
            else cb(null, { index: 5n, archive: undefined });
          });
        }) as grpc.UntypedHandleCall,
      },
    });
    try {
      const archive = Buffer.from(Array.from({ length: 200_000 }, (_, i) => i % 251));
      for (const [method, ct] of [
        ['PUT', 'application/x-www-form-urlencoded'],
        ['POST', 'application/octet-stream'],
        ['PUT', 'application/json'],
      ] as const) {
        const r = await env.gw.app.inject({ method, url: '/v1/operator/snapshot', headers: { ...nomad, 'content-type': ct }, payload: archive });
        assert.equal(r.statusCode, 200, `${method} ${ct}: ${r.body}`);
        assert.equal(r.body, '');
        assert.match(String(r.headers['content-type']), /^text\/plain/);
        assert.ok(got.at(-1)?.equals(archive), `${method} ${ct}: the node got the exact bytes`);
      }
      // No Content-Type at all.
      const port = Number((await env.gw.listen('127.0.0.1:0')).split(':')[1]);
      const res = await httpCall(port, 'PUT', '/v1/operator/snapshot', { ...nomad, 'content-length': String(archive.length) }, archive);
      assert.equal(res.statusCode, 200);
      await readAll(res);
      assert.ok(got.at(-1)?.equals(archive));
      // A bad archive: INVALID_ARGUMENT -> 400 plain text with the node's message.
      answer = grpcError(grpc.status.INVALID_ARGUMENT, 'archive state.bin: SHA-256 mismatch');
      const bad = await env.gw.app.inject({ method: 'PUT', url: '/v1/operator/snapshot', headers: nomad, payload: archive });
      assert.equal(bad.statusCode, 400);
      assert.equal(bad.body, 'archive state.bin: SHA-256 mismatch\n');
      // Auth.
      const denied = await env.gw.app.inject({ method: 'PUT', url: '/v1/operator/snapshot', headers: { 'x-nomad-token': READ_KEY }, payload: archive });
      assert.equal(denied.statusCode, 403);
      assert.equal(denied.body, 'Permission denied\n');
    } finally {
      await teardown(env);
    }
  });

  it('PUT /v1/operator/snapshot: a body over restoreBytesMax -> 413 (declared or counted while streaming)', async () => {
    let calls = 0;
    const env = await setup(
      {
        snapshots: {
          restoreSnapshot: ((call: grpc.ServerReadableStream<RestoreSnapshotRequest, RestoreSnapshotResponse>, cb: grpc.sendUnaryData<RestoreSnapshotResponse>) => {
            calls++;
            call.on('data', () => undefined);
            call.on('end', () => cb(null, { index: 1n, archive: undefined }));
            call.on('cancelled', () => undefined);
          }) as grpc.UntypedHandleCall,
        },
      },
      { restoreBytesMax: 100_000 },
    );
    try {
      const declared = await env.gw.app.inject({ method: 'PUT', url: '/v1/operator/snapshot', headers: nomad, payload: Buffer.alloc(100_001) });
      assert.equal(declared.statusCode, 413);
      assert.equal(calls, 0);
      // Chunked (no Content-Length): counted while streaming.
      const port = Number((await env.gw.listen('127.0.0.1:0')).split(':')[1]);
      const res = await new Promise<IncomingMessage>((resolve, reject) => {
        const req = httpRequest({ host: '127.0.0.1', port, method: 'PUT', path: '/v1/operator/snapshot', headers: { ...nomad, 'transfer-encoding': 'chunked' } }, resolve);
        req.on('error', reject);
        for (let i = 0; i < 30; i++) req.write(Buffer.alloc(10_000));
        req.end();
      });
      assert.equal(res.statusCode, 413);
      assert.match((await readAll(res)).toString(), /too large/);
    } finally {
      await teardown(env);
    }
  });

  it('download backpressure: a stalled HTTP reader stops the gRPC stream; memory stays flat over 1 GiB', async function () {
    this.timeout(120_000);
    const chunk = Buffer.alloc(MiB, 7);
    const total = 1024; // MiB
    let produced = 0;
    const env = await setup({
      snapshots: {
        getSnapshot: ((call: grpc.ServerWritableStream<unknown, GetSnapshotResponse>) => {
          void (async () => {
            call.write({ info: { id: 's', index: 1n, term: 1n, sizeBytes: BigInt(total * MiB), digest: '', createdAt: '', stateBytes: 0n, stateKeys: 0n, snapcoordVersion: '', formatVersion: 1 }, knownLeader: true, lastContactMs: 0n });
            for (let i = 0; i < total; i++) {
              produced += MiB;
              if (!call.write({ data: chunk, knownLeader: true, lastContactMs: 0n })) await once(call, 'drain');
            }
            call.end();
          })();
        }) as grpc.UntypedHandleCall,
      },
    });
    try {
      const port = Number((await env.gw.listen('127.0.0.1:0')).split(':')[1]);
      const res = await httpCall(port, 'GET', '/v1/operator/snapshot', nomad);
      assert.equal(res.statusCode, 200);
      res.pause();
      await new Promise((r) => setTimeout(r, 1_500));
      const aheadMiB = produced / MiB;
      assert.ok(aheadMiB < 64, `the producer ran ${aheadMiB} MiB ahead of a stalled reader`);
      global.gc?.();
      const rssBefore = process.memoryUsage().rss;
      let consumed = 0;
      let rssMax = rssBefore;
      const hash = createHash('sha256');
      for await (const c of res) {
        consumed += (c as Buffer).length;
        hash.update(c as Buffer);
        if ((consumed & (64 * MiB - 1)) < (c as Buffer).length) rssMax = Math.max(rssMax, process.memoryUsage().rss);
      }
      assert.equal(consumed, total * MiB);
      const growthMiB = (rssMax - rssBefore) / MiB;
      assert.ok(growthMiB < 200, `RSS grew by ${growthMiB.toFixed(0)} MiB while streaming 1 GiB`);
    } finally {
      await teardown(env);
    }
  });

  it('restore backpressure: a slow node stops reading the HTTP body', async function () {
    this.timeout(120_000);
    let received = 0;
    let release: () => void = () => undefined;
    const released = new Promise<void>((r) => (release = r));
    const env = await setup({
      snapshots: {
        restoreSnapshot: ((call: grpc.ServerReadableStream<RestoreSnapshotRequest, RestoreSnapshotResponse>, cb: grpc.sendUnaryData<RestoreSnapshotResponse>) => {
          void (async () => {
            for await (const m of call as AsyncIterable<RestoreSnapshotRequest>) {
              received += m.data.byteLength;
              if (received > 4 * MiB) await released; // stall after 4 MiB
            }
            cb(null, { index: 1n, archive: undefined });
          })();
        }) as grpc.UntypedHandleCall,
      },
    });
    try {
      const port = Number((await env.gw.listen('127.0.0.1:0')).split(':')[1]);
      const totalMiB = 256;
      let sent = 0;
      const req = httpRequest({ host: '127.0.0.1', port, method: 'PUT', path: '/v1/operator/snapshot', headers: { ...nomad, 'content-type': 'application/x-www-form-urlencoded' } });
      const response = new Promise<IncomingMessage>((resolve, reject) => {
        req.on('response', resolve);
        req.on('error', reject);
      });
      const chunk = Buffer.alloc(MiB, 1);
      const writer = (async () => {
        for (let i = 0; i < totalMiB; i++) {
          sent += MiB;
          if (!req.write(chunk)) await once(req, 'drain');
        }
        req.end();
      })();
      await new Promise((r) => setTimeout(r, 1_500));
      const gapMiB = (sent - received) / MiB;
      assert.ok(sent < totalMiB * MiB, 'the client could not send everything while the node stalls');
      assert.ok(gapMiB < 64, `${gapMiB} MiB were in flight between the client and a stalled node`);
      release();
      await writer;
      const res = await response;
      assert.equal(res.statusCode, 200);
      await readAll(res);
      assert.equal(received, totalMiB * MiB);
    } finally {
      await teardown(env);
    }
  });
});

describe('gateway: OpenAPI', () => {
  it('GET /openapi.json (open) describes every registered route, and nothing else', async () => {
    const gw = createGateway({ target: '127.0.0.1:1', auth: { adminKey: KEY } });
    try {
      await gw.app.ready();
      const r = await gw.app.inject({ method: 'GET', url: '/openapi.json' });
      assert.equal(r.statusCode, 200);
      const doc = r.json() as { openapi: string; paths: Record<string, Record<string, unknown>> };
      assert.match(doc.openapi, /^3\./);
      const real = gw.routes.filter((x) => !x.methodNotAllowed);
      assert.ok(real.length >= 11, `${real.length} routes`);
      for (const route of real) {
        assert.ok(doc.paths[openApiPath(route.url)]?.[route.method.toLowerCase()] !== undefined, `${route.method} ${route.url} missing from openapi.json`);
      }
      for (const [path, ops] of Object.entries(OPENAPI.paths)) {
        for (const m of Object.keys(ops)) {
          assert.ok(real.some((x) => openApiPath(x.url) === path && x.method.toLowerCase() === m), `${m} ${path} documented but not registered`);
        }
      }
    } finally {
      await gw.close();
    }
  });
});
