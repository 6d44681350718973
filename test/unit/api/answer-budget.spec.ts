/**
 * AnswerBudget (src/api/answer-budget.ts): the bytes of one API key's answers
 * being built or left unread that a node holds at once. Before, only their
 * number was bounded (CallGate's 64 answer places for Get and Range; none
 * for Txn): 64 unread Txn answers of 15 MiB on one connection took a live
 * node from 226 to 1,294 MiB, and 2 connections of 128 stalled every other
 * client (an honest Put: DEADLINE_EXCEEDED after 10 s).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { connect, type Socket } from 'node:net';

import { ANSWER_BUDGET_METHODS, AnswerBudget, answerBytesMaxOf, answerBytesOf, INSPECT_SNAPSHOT_ANSWER_BYTES_RESERVED, LIST_SNAPSHOTS_ANSWER_BYTES_RESERVED, STATUS_ANSWER_BYTES_RESERVED } from '../../../src/api/answer-budget.js';
import { ANSWER_METHODS } from '../../../src/api/call-gate.js';
import { clientAuthInterceptor } from '../../../src/api/auth-interceptor.js';
import { KvClient } from '../../../src/client/kv-client.js';
import { KEY_BYTES_MAX, VALUE_BYTES_MAX } from '../../../src/fsm/kv-command.js';
import { TXN_ANSWER_BYTES_MAX } from '../../../src/fsm/types.js';
import { RangeRequest, TxnOpType } from '../../../src/gen/snapcoord/v1/kv.js';
import { InspectSnapshotRequest, ListSnapshotsRequest, ListTasksRequest } from '../../../src/gen/snapcoord/v1/snapshot.js';
import { StatusRequest } from '../../../src/gen/snapcoord/v1/cluster.js';
import type { Node } from '../../../src/node/node.js';
import type { TaskQueue, TaskRunner } from '../../../src/ops/task-queue.js';
import { until } from '../../harness/until.js';
import { soloServer } from './harness.js';
import { SnapshotNode } from './snapshot-node.js';
import { h2Frame, hpackLiteral } from './raw-http2.js';

const MiB = 1024 * 1024;
const PAIR = KEY_BYTES_MAX + VALUE_BYTES_MAX;

describe('AnswerBudget: what an answer may hold, and room by caller', () => {
  it('reserves a pair for a Get, limit pairs (at most 4 MiB past the first) for a Range, the pairs a Txn reads for a Txn, limit tasks for a ListTasks', () => {
    const get = answerBytesMaxOf('/snapcoord.v1.KVService/Get', { key: new Uint8Array(3) });
    assert.ok(get >= PAIR && get < PAIR + 1024, String(get));
    const one = answerBytesMaxOf('/snapcoord.v1.KVService/Range', { limit: 1 });
    assert.ok(one >= PAIR && one < PAIR + 1024, String(one));
    const all = answerBytesMaxOf('/snapcoord.v1.KVService/Range', { limit: 0 });
    assert.ok(all >= PAIR + 4 * MiB && all < PAIR + 4 * MiB + 100 * 1024, String(all));
    const op = (type: TxnOpType, prevKv = false): object => ({ type, key: new Uint8Array(1), value: new Uint8Array(), prevKv });
    const cas = answerBytesMaxOf('/snapcoord.v1.KVService/Txn', { success: [op(TxnOpType.TXN_OP_TYPE_PUT)], failure: [] });
    assert.ok(cas < 1024, `a Txn that reads nothing reserves little: ${cas}`);
    const reads = answerBytesMaxOf('/snapcoord.v1.KVService/Txn', { success: [op(TxnOpType.TXN_OP_TYPE_PUT, true)], failure: [op(TxnOpType.TXN_OP_TYPE_GET), op(TxnOpType.TXN_OP_TYPE_GET)] });
    assert.ok(reads >= 2 * PAIR && reads < 2 * PAIR + 1024, `the larger branch: ${reads}`);
    const many = answerBytesMaxOf('/snapcoord.v1.KVService/Txn', { success: Array.from({ length: 128 }, () => op(TxnOpType.TXN_OP_TYPE_GET)), failure: [] });
    assert.ok(many >= TXN_ANSWER_BYTES_MAX && many < TXN_ANSWER_BYTES_MAX + 64 * 1024, `at most TXN_ANSWER_BYTES_MAX: ${many}`);
    const tasks = answerBytesMaxOf('/snapcoord.v1.TaskService/ListTasks', { limit: 1000 });
    assert.ok(tasks >= 1000 * (4096 + 2048) && tasks < 8 * MiB, `a ListTasks of 1,000 tasks: ${tasks}`);
    assert.ok(answerBytesMaxOf('/snapcoord.v1.TaskService/ListTasks', { limit: 0 }) < tasks / 40, 'its default limit is 20');
  });

  it('counts an answer by its bytes and strings', () => {
    const n = answerBytesOf({ header: { revision: 3n }, kvs: [{ key: new Uint8Array(10), value: new Uint8Array(1000) }], more: false });
    assert.ok(n >= 1010 && n < 1100, String(n));
  });

  it('lets a caller with nothing held through whatever it asks; then only what fits, in order; bytes given back let the waiting go on', () => {
    const b = new AnswerBudget(10);
    const started: string[] = [];
    const w = (name: string, wants: number): { wants: number; granted(): void } => ({ wants, granted: () => started.push(name) });
    assert.equal(b.ask('A', w('a1', 25)), true, 'alone: more than the budget still goes');
    assert.equal(b.ask('A', w('a2', 1)), false);
    assert.equal(b.ask('B', w('b1', 4)), true, 'another caller has its own room');
    b.release('A', 20); // 5 held: a2 fits
    assert.deepEqual(started, ['a2']);
    assert.equal(b.usedOf('A'), 6);
    assert.equal(b.ask('A', w('a3', 8)), false);
    b.release('A', 5); // 1 held: a3 fits
    assert.deepEqual(started, ['a2', 'a3']);
    assert.equal(b.usedOf('A'), 9);
    const a4 = w('a4', 9);
    assert.equal(b.ask('A', a4), false);
    assert.equal(b.ask('A', w('a5', 1)), false, 'a small one does not pass a larger one waiting before it');
    b.forget('A', a4);
    assert.deepEqual(started, ['a2', 'a3', 'a5'], 'the one that held it back is gone');
    assert.equal(b.usedOf('A'), 10);
    assert.equal(b.waitingOf('A'), 0);
    b.release('A', 10);
    assert.equal(b.usedOf('A'), 0);
    assert.throws(() => new AnswerBudget(0), /bytesPerCallerMax must be a whole number >= 1/);
  });
});

const KEY = 'answer-budget-admin-key';
const NARROW = 'answer-budget-kv-read-key';
const BUDGET = 4 * MiB;
const VALUE = 512 * 1024;

describe('gRPC client plane: the bytes of one key\'s unread answers (AnswerBudget, real HTTP/2)', function () {
  this.timeout(60_000);
  const solo = soloServer({
    interceptors: [clientAuthInterceptor({ adminKey: KEY, keys: [{ key: NARROW, actions: ['kv.read'] }] })],
    clientAnswerBytesPerCallerMax: BUDGET,
  });

  it('Range calls whose answers are never read run while their bytes fit the budget; the rest wait unrun; another key goes on; all comes back when the client goes', async () => {
    const admin = new KvClient(solo.api.address, { apiKey: KEY });
    const enc = new TextEncoder();
    const owner = `key:${createHash('sha256').update(NARROW).digest('hex').slice(0, 32)}`;
    let ranges = 0;
    const realRange = solo.node.range.bind(solo.node);
    solo.node.range = ((...a: Parameters<Node['range']>) => {
      ranges++;
      return realRange(...a);
    }) as Node['range'];
    let raw: Socket | null = null;
    try {
      await admin.put({ key: enc.encode('big/0'), value: new Uint8Array(VALUE) }, { deadlineMs: 10_000 });
      ranges = 0;
      // A client that never reads and never opens its flow-control window: each 512 KiB answer stays in the node.
      raw = connect(solo.api.port, '127.0.0.1');
      raw.on('error', () => undefined);
      raw.pause();
      const CALLS = 16;
      const headers = (sid: number): Buffer =>
        h2Frame(1, 4, sid, Buffer.concat([
          hpackLiteral(':method', 'POST'), hpackLiteral(':scheme', 'http'), hpackLiteral(':path', '/snapcoord.v1.KVService/Range'),
          hpackLiteral(':authority', 'x'), hpackLiteral('content-type', 'application/grpc'), hpackLiteral('te', 'trailers'),
          hpackLiteral('authorization', `Bearer ${NARROW}`),
        ]));
      const msg = Buffer.from(RangeRequest.encode({ prefix: enc.encode('big/'), start: new Uint8Array(), end: new Uint8Array(), limit: 1, serializable: true }).finish());
      const body = Buffer.concat([Buffer.from([0, 0, 0, 0, msg.length]), msg]);
      raw.write(Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), h2Frame(4, 0, 0, Buffer.alloc(0))]));
      for (let i = 0; i < CALLS; i++) raw.write(Buffer.concat([headers(1 + 2 * i), h2Frame(0, 1, 1 + 2 * i, body)]));
      await until('every call to run or wait', 10_000, () => (ranges + solo.api.answerBudget.waitingOf(owner) >= CALLS ? true : undefined));
      await new Promise((r) => setTimeout(r, 500));
      // Each call reserves a whole pair (1 MiB) until its 512 KiB answer is built: at most 7 run (8 would hold 4 MiB
      // of answers and a reservation). Before: all 16 ran (64 answer places), 8 MiB of answers held.
      assert.ok(ranges >= 1 && ranges <= 7, `${ranges} Range calls ran`);
      assert.equal(ranges + solo.api.answerBudget.waitingOf(owner), CALLS, 'the others wait, unrun');
      assert.ok(solo.api.answerBudget.usedOf(owner) <= BUDGET, `${solo.api.answerBudget.usedOf(owner)} bytes held`);
      // Another key is not held back.
      const r = await admin.range({ prefix: enc.encode('big/'), serializable: true }, { deadlineMs: 10_000 });
      assert.equal(r.kvs.length, 1);
      // The client goes: its calls end, its bytes come back.
      raw.destroy();
      await until('the budget to be given back', 10_000, () => (solo.api.answerBudget.usedOf(owner) === 0 && solo.api.answerBudget.waitingOf(owner) === 0 ? true : undefined));
      const narrow = new KvClient(solo.api.address, { apiKey: NARROW });
      try {
        assert.equal((await narrow.range({ prefix: enc.encode('big/'), serializable: true }, { deadlineMs: 5_000 })).kvs.length, 1);
      } finally {
        narrow.close();
      }
      assert.equal(solo.api.answerBudget.usedOf(owner), 0, 'a read answer gives its bytes back');
    } finally {
      raw?.destroy();
      solo.node.range = realRange;
      admin.close();
    }
  });
});

describe('gRPC client plane: unread ListTasks answers (AnswerBudget, real HTTP/2)', function () {
  this.timeout(60_000);

  it('ListTasks calls of up to 1,000 tasks whose answers are never read run while they fit the budget; the rest wait unrun', async () => {
    let release: () => void = () => undefined;
    const held = new Promise<void>((r) => (release = r));
    const wrapRunner = (real: TaskRunner): TaskRunner => async (task, progress) => {
      await held;
      return real(task, progress);
    };
    // 1 MiB: a ListTasks of limit 1,000 reserves ~7 MiB, so one runs at a time while its answer is unread.
    const n = await SnapshotNode.start({ wrapRunner, clientAnswerBytesPerCallerMax: MiB });
    let raw: Socket | null = null;
    let lists = 0;
    const realList = n.tasks.list.bind(n.tasks);
    n.tasks.list = ((...a: Parameters<TaskQueue['list']>) => {
      lists++;
      return realList(...a);
    }) as TaskQueue['list'];
    try {
      for (let i = 0; i < 1000; i++) await n.tasks.enqueue('snapshotCreation');
      raw = connect(n.api.port, '127.0.0.1');
      raw.on('error', () => undefined);
      raw.pause();
      const CALLS = 8;
      const headers = (sid: number): Buffer =>
        h2Frame(1, 4, sid, Buffer.concat([
          hpackLiteral(':method', 'POST'), hpackLiteral(':scheme', 'http'), hpackLiteral(':path', '/snapcoord.v1.TaskService/ListTasks'),
          hpackLiteral(':authority', 'x'), hpackLiteral('content-type', 'application/grpc'), hpackLiteral('te', 'trailers'),
        ]));
      const msg = Buffer.from(ListTasksRequest.encode({ filter: undefined, limit: 1000, reverse: false }).finish());
      const body = Buffer.concat([Buffer.from([0, 0, 0, 0, msg.length]), msg]);
      raw.write(Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), h2Frame(4, 0, 0, Buffer.alloc(0))]));
      for (let i = 0; i < CALLS; i++) raw.write(Buffer.concat([headers(1 + 2 * i), h2Frame(0, 1, 1 + 2 * i, body)]));
      // No key (the node runs without auth): the calls count against their host.
      const host = '127.0.0.1';
      await until('every call to run or wait', 10_000, () => (lists + n.api.answerBudget.waitingOf(host) >= CALLS ? true : undefined));
      await new Promise((r) => setTimeout(r, 300));
      // Before: all 8 ran, each answer (1,000 tasks, more than the client's 64 KiB window) left unsent in the node's memory.
      assert.equal(lists, 1, `${lists} ListTasks calls ran`);
      raw.destroy();
      await until('the budget to be given back', 10_000, () => (n.api.answerBudget.usedOf(host) === 0 && n.api.answerBudget.waitingOf(host) === 0 ? true : undefined));
    } finally {
      raw?.destroy();
      n.tasks.list = realList;
      release();
      await n.close();
    }
  });
});

describe('gRPC client plane: unread Status, ListSnapshots and InspectSnapshot answers (AnswerBudget, real HTTP/2)', function () {
  this.timeout(60_000);
  const STATUS = '/snapcoord.v1.ClusterService/Status';
  const LIST = '/snapcoord.v1.SnapshotService/ListSnapshots';
  const INSPECT = '/snapcoord.v1.SnapshotService/InspectSnapshot';

  it('each reserves its *_ANSWER_BYTES_RESERVED and takes an answer place, as Get, Range, Txn and ListTasks do', () => {
    assert.equal(answerBytesMaxOf(STATUS, {}), STATUS_ANSWER_BYTES_RESERVED);
    assert.equal(answerBytesMaxOf(LIST, {}), LIST_SNAPSHOTS_ANSWER_BYTES_RESERVED);
    assert.equal(answerBytesMaxOf(INSPECT, { id: 'x' }), INSPECT_SNAPSHOT_ANSWER_BYTES_RESERVED);
    for (const path of [STATUS, LIST, INSPECT]) {
      assert.ok(ANSWER_BUDGET_METHODS.has(path), path);
      assert.ok(ANSWER_METHODS.has(path), path);
    }
  });

  it('a client that loops them and reads nothing: one runs while its answer is unread (the budget is smaller than a reservation), the rest wait unrun; all comes back when it goes', async () => {
    // 8 KiB: less than any of their reservations, so a caller holding one unread answer has no room for another.
    const n = await SnapshotNode.start({ clientAnswerBytesPerCallerMax: 8 * 1024 });
    let statuses = 0;
    let lists = 0;
    const realStatus = n.node.status.bind(n.node);
    n.node.status = ((...a: Parameters<Node['status']>) => {
      statuses++;
      return realStatus(...a);
    }) as Node['status'];
    const store = n.snapshots.store;
    const realList = store.list.bind(store);
    store.list = (async () => {
      lists++;
      return realList();
    }) as typeof store.list;
    const sockets: Socket[] = [];
    try {
      await n.node.snapshotNow();
      const id = (await realList())[0]?.id ?? '';
      assert.notEqual(id, '');
      const host = '127.0.0.1';
      const CALLS = 24;
      const loop = async (path: string, msg: Buffer, ran: () => number): Promise<number> => {
        const raw = connect(n.api.port, '127.0.0.1');
        sockets.push(raw);
        raw.on('error', () => undefined);
        raw.pause();
        const headers = (sid: number): Buffer =>
          h2Frame(1, 4, sid, Buffer.concat([
            hpackLiteral(':method', 'POST'), hpackLiteral(':scheme', 'http'), hpackLiteral(':path', path),
            hpackLiteral(':authority', 'x'), hpackLiteral('content-type', 'application/grpc'), hpackLiteral('te', 'trailers'),
          ]));
        const body = Buffer.concat([Buffer.from([0, 0, 0, 0, msg.length]), msg]);
        // SETTINGS_INITIAL_WINDOW_SIZE 0: no answer's bytes leave the node until this client opens its window (never).
        const settings = h2Frame(4, 0, 0, Buffer.from([0, 4, 0, 0, 0, 0]));
        raw.write(Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), settings]));
        const before = ran();
        for (let i = 0; i < CALLS; i++) raw.write(Buffer.concat([headers(1 + 2 * i), h2Frame(0, 1, 1 + 2 * i, body)]));
        // No key (the node runs without auth): the calls count against their host.
        await until(`${path}: a call to run and the others to wait`, 10_000, () => (ran() - before >= 1 && n.api.answerBudget.waitingOf(host) >= 1 ? true : undefined));
        await new Promise((r) => setTimeout(r, 300));
        const runs = ran() - before;
        raw.destroy();
        await until(`${path}: the budget to be given back`, 10_000, () => (n.api.answerBudget.usedOf(host) === 0 && n.api.answerBudget.waitingOf(host) === 0 ? true : undefined));
        return runs;
      };
      // Before: every one of them ran, each answer left unsent in the node's memory (64 at most once they took answer places).
      assert.equal(await loop(STATUS, Buffer.from(StatusRequest.encode({}).finish()), () => statuses), 1, 'Status calls run');
      assert.equal(await loop(LIST, Buffer.from(ListSnapshotsRequest.encode({}).finish()), () => lists), 1, 'ListSnapshots calls run');
      assert.equal(await loop(INSPECT, Buffer.from(InspectSnapshotRequest.encode({ id }).finish()), () => lists), 1, 'InspectSnapshot calls run');
    } finally {
      for (const s of sockets) s.destroy();
      n.node.status = realStatus;
      store.list = realList;
      await n.close();
    }
  });
});
