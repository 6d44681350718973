/**
 * Client sessions (Raft dissertation §6.3): a write carrying a client request
 * id is applied at most once, on both storages, and the record survives a
 * reopen, a snapshot install and a restore (src/fsm/sessions.ts).
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import type { Membership } from '../../../src/raft/types.js';
import { decodeCommand, encodeCommand, KvCommandError, type KvCommand } from '../../../src/fsm/kv-command.js';
import { MemoryDataDir, MemoryStorage } from '../../../src/storage/memory-storage.js';
import { RocksStorage } from '../../../src/storage/rocks-storage.js';
import {
  SESSION_CLIENTS_MAX,
  SESSION_CLIENTS_PER_PRINCIPAL,
  SESSION_RESULTS_PER_CLIENT_MAX,
  SessionPlanner,
  SessionTable,
  decodeSessionRecord,
  encodeClientSession,
  isReservedKey,
  isSessionKey,
  sessionKey,
  sessionPrincipal,
  withResult,
  type ClientSession,
  type SessionResult,
  type SessionStamp,
} from '../../../src/fsm/sessions.js';
import type { ApplyItem, ApplyResult } from '../../../src/fsm/types.js';
import type { KeyValue } from '../../../src/storage/types.js';
import { withFsm, type FsmStore } from './fsm-store.js';
import { rejectsWith } from '../storage/helpers.js';

interface Fixture {
  open(): Promise<FsmStore>;
  dispose(): Promise<void>;
}

const implementations: { name: string; create(): Promise<Fixture> }[] = [
  {
    name: 'MemoryStorage',
    create: async () => {
      const dir = new MemoryDataDir('mem-sessions');
      return { open: async () => withFsm(await MemoryStorage.open(dir)), dispose: async () => undefined };
    },
  },
  {
    name: 'RocksStorage',
    create: async () => {
      const root = await mkdtemp(join(tmpdir(), 'snapcoord-sessions-'));
      return { open: async () => withFsm(await RocksStorage.open(join(root, 'data'))), dispose: () => rm(root, { recursive: true, force: true }) };
    },
  },
];

const enc = new TextEncoder();
const bytes = (s: string): Uint8Array => enc.encode(s);
const text = (b: Uint8Array | undefined): string | undefined => (b === undefined ? undefined : new TextDecoder().decode(b));
const MEMBERSHIP: Membership = { voters: ['n1'], learners: [], addresses: { n1: '127.0.0.1:1' } };

function item(index: number, command: KvCommand): ApplyItem {
  return { entry: { index, term: 1, type: 'normal', data: encodeCommand(command) } };
}

function put(key: string, value: string, session?: SessionStamp): KvCommand {
  return { op: 'put', key: bytes(key), value: bytes(value), ...(session !== undefined ? { session } : {}) };
}

function del(key: string, session?: SessionStamp): KvCommand {
  return { op: 'delete', key: bytes(key), ...(session !== undefined ? { session } : {}) };
}

async function allRecords(s: FsmStore): Promise<KeyValue[]> {
  const reader = await s.snapshotState();
  const out: KeyValue[] = [];
  for await (const batch of reader.batches()) out.push(...batch);
  return out;
}

async function userKeys(s: FsmStore): Promise<string[]> {
  return (await s.range({ limit: 10_000 })).kvs.map((kv) => Buffer.from(kv.key).toString('latin1'));
}

describe('client sessions: command encoding', () => {
  it('a session stamp round-trips and malformed stamps or reserved keys are refused', () => {
    const cmd = put('k', 'v', { clientId: 'client-1', seq: 2 ** 40 + 7 });
    assert.deepEqual(decodeCommand(encodeCommand(cmd)), { op: 'put', key: bytes('k'), value: bytes('v'), session: { clientId: 'client-1', seq: 2 ** 40 + 7 } });
    const batch: KvCommand = { op: 'batch', ops: [{ op: 'delete', key: bytes('a') }], session: { clientId: 'c', seq: 1 } };
    assert.deepEqual(decodeCommand(encodeCommand(batch)), batch);
    const code = (f: () => unknown): string => {
      try {
        f();
      } catch (err) {
        assert.ok(err instanceof KvCommandError);
        return err.code;
      }
      return 'none';
    };
    assert.equal(code(() => encodeCommand(put('k', 'v', { clientId: '', seq: 1 }))), 'badSession');
    assert.equal(code(() => encodeCommand(put('k', 'v', { clientId: 'has space', seq: 1 }))), 'badSession');
    assert.equal(code(() => encodeCommand(put('k', 'v', { clientId: 'x'.repeat(65), seq: 1 }))), 'badSession');
    assert.equal(code(() => encodeCommand(put('k', 'v', { clientId: 'c', seq: 0 }))), 'badSession');
    assert.equal(code(() => encodeCommand({ op: 'put', key: sessionKey('c'), value: bytes('x') })), 'reservedKey');
    assert.equal(code(() => encodeCommand({ op: 'delete', key: bytes('\u0000snapcoord/anything') })), 'reservedKey');
    // A hand-made entry with a reserved key is refused when decoded too (every node alike).
    const raw = encodeCommand({ op: 'put', key: bytes('\u0000snapcoordX'), value: bytes('x') });
    raw.set(bytes('/'), 3 + 10);
    assert.equal(code(() => decodeCommand(raw)), 'reservedKey');
  });

  it('a session record round-trips; the planner forgets the lowest request ids and the least recent clients', () => {
    const table = new SessionTable();
    const planner = new SessionPlanner(table);
    for (let seq = 1; seq <= SESSION_RESULTS_PER_CLIENT_MAX + 3; seq++) planner.record({ clientId: 'a', seq }, seq, { index: seq });
    table.commit(planner.changes);
    const a = table.get('a');
    assert.ok(a !== undefined);
    assert.equal(a.results.length, SESSION_RESULTS_PER_CLIENT_MAX);
    assert.equal(a.floorSeq, 3);
    assert.deepEqual(table.lookup({ clientId: 'a', seq: 2 }), { kind: 'expired', floorSeq: 3 });
    assert.equal(table.lookup({ clientId: 'a', seq: 4 }).kind, 'seen');
    assert.equal(table.lookup({ clientId: 'a', seq: 99 }).kind, 'new');
    assert.deepEqual(decodeSessionRecord(sessionKey('a'), encodeClientSession(a)), a);
  });
});

/** bound: a client id bound to the key tag `tag` (8 base64url characters), as src/api/bound-client-id.ts records it. */
const bound = (tag: string, id: string): string => `${tag}:${id}`;
const HOG = 'HoGhOg_1';
const VICTIM = 'v1ct1m-2';

describe('client sessions: the per-principal share', () => {
  /** fill: one planner call per new client of `ids`, at indexes from `from`, committed in batches of `batch`. */
  function fill(table: SessionTable, ids: readonly string[], from: number, batch = 1000): number {
    let index = from;
    for (let at = 0; at < ids.length; at += batch) {
      const planner = new SessionPlanner(table);
      for (const id of ids.slice(at, at + batch)) {
        planner.record({ clientId: id, seq: 1 }, index, { index });
        index++;
      }
      table.commit(planner.changes);
    }
    return index;
  }
  const hogIds = (n: number, first = 1): string[] => Array.from({ length: n }, (_, i) => bound(HOG, `h${first + i}`));

  it('the principal of a client id is its key tag; an id not bound to one has the unbound principal', () => {
    assert.equal(sessionPrincipal(bound(HOG, 'x')), HOG);
    assert.equal(sessionPrincipal(`${HOG}#${'a'.repeat(43)}`), HOG);
    assert.equal(sessionPrincipal('legacy-client'), '');
    assert.equal(sessionPrincipal('HoGhOg_1'), '');
    assert.equal(sessionPrincipal('HoG.hOg1:x'), '');
    assert.equal(sessionPrincipal('HoGh=g_1:x'), '');
  });

  it('a key that opens more than SESSION_CLIENTS_MAX clients forgets its own least recent ones, never another key\'s', () => {
    const table = new SessionTable();
    const others = [bound(VICTIM, 'a'), bound(VICTIM, 'b'), 'legacy-client'];
    let index = fill(table, others, 1);
    index = fill(table, hogIds(SESSION_CLIENTS_MAX + 500), index);
    assert.equal(table.size, SESSION_CLIENTS_MAX);
    for (const id of others) assert.equal(table.lookup({ clientId: id, seq: 1 }).kind, 'seen', `${id} kept`);
    // The hog's oldest went first: 3 + 8692 - 8192 = 503 of them.
    assert.equal(table.lookup({ clientId: bound(HOG, 'h503'), seq: 1 }).kind, 'new');
    assert.equal(table.lookup({ clientId: bound(HOG, 'h504'), seq: 1 }).kind, 'seen');
    assert.equal(table.countOf(HOG), SESSION_CLIENTS_MAX - others.length);
    assert.equal(table.countOf(VICTIM), 2);
    assert.deepEqual([...table.overShare()], [HOG]);
    // In one apply call too (the planner's own count and cursors).
    const planner = new SessionPlanner(table);
    for (let i = 0; i < 2 * SESSION_CLIENTS_PER_PRINCIPAL; i++, index++) planner.record({ clientId: bound(HOG, `again${i}`), seq: 1 }, index, { index });
    table.commit(planner.changes);
    for (const id of others) assert.equal(table.lookup({ clientId: id, seq: 1 }).kind, 'seen', `${id} kept`);
    assert.equal(table.lookup({ clientId: bound(HOG, `h${503 + 2 * SESSION_CLIENTS_PER_PRINCIPAL}`), seq: 1 }).kind, 'new');
    assert.equal(table.lookup({ clientId: bound(HOG, `h${504 + 2 * SESSION_CLIENTS_PER_PRINCIPAL}`), seq: 1 }).kind, 'seen');
    assert.equal(table.size, SESSION_CLIENTS_MAX);
  });

  it('within one apply call a key over its share forgets its stored clients, then the ones it opened in that call, oldest first', () => {
    const table = new SessionTable();
    const tags = Array.from({ length: 7 }, (_, k) => `other__${k}`);
    let index = 1;
    for (const tag of tags) index = fill(table, Array.from({ length: 1013 }, (_, i) => bound(tag, `c${i}`)), index);
    index = fill(table, hogIds(SESSION_CLIENTS_MAX - 7 * 1013), index); // 1101: over its share
    assert.equal(table.size, SESSION_CLIENTS_MAX);
    const planner = new SessionPlanner(table);
    const fresh = Array.from({ length: 3000 }, (_, i) => bound(HOG, `new${i}`));
    for (const id of fresh) {
      planner.record({ clientId: id, seq: 1 }, index, { index });
      index++;
    }
    table.commit(planner.changes);
    assert.equal(table.size, SESSION_CLIENTS_MAX);
    assert.equal(table.countOf(HOG), 1101);
    for (const tag of tags) assert.equal(table.countOf(tag), 1013, tag);
    assert.equal(table.lookup({ clientId: bound(HOG, 'h1101'), seq: 1 }).kind, 'new');
    assert.equal(table.lookup({ clientId: bound(HOG, 'new1898'), seq: 1 }).kind, 'new');
    assert.equal(table.lookup({ clientId: bound(HOG, 'new1899'), seq: 1 }).kind, 'seen');
  });

  it('a key within its share takes the room of the keys over theirs; with none over, the least recent of all goes', () => {
    const table = new SessionTable();
    const older = bound('older___', 'o'); // the least recent of all, but its key is within its share
    let index = fill(table, [older], 1);
    index = fill(table, hogIds(SESSION_CLIENTS_MAX - 1), index);
    index = fill(table, [bound(VICTIM, 'a')], index);
    assert.equal(table.lookup({ clientId: bound(HOG, 'h1'), seq: 1 }).kind, 'new', 'the hog, over its share, made room');
    assert.equal(table.lookup({ clientId: older, seq: 1 }).kind, 'seen');
    assert.equal(table.countOf(VICTIM), 1);
    assert.equal(table.countOf(HOG), SESSION_CLIENTS_MAX - 2);
    // 8 keys at their share: a ninth key's client replaces the least recent client of all.
    const even = new SessionTable();
    const tags = Array.from({ length: 8 }, (_, k) => `tag____${k}`);
    let at = 1;
    for (let i = 0; i < SESSION_CLIENTS_PER_PRINCIPAL; i++) for (const tag of tags) at = fill(even, [bound(tag, `c${i}`)], at);
    assert.equal(even.size, SESSION_CLIENTS_MAX);
    assert.equal(even.overShare().size, 0);
    fill(even, [bound('ninth___', 'c')], at);
    assert.equal(even.lookup({ clientId: bound(tags[0] as string, 'c0'), seq: 1 }).kind, 'new');
    assert.equal(even.lookup({ clientId: bound(tags[1] as string, 'c0'), seq: 1 }).kind, 'seen');
    // A table rebuilt from its records (a reopen, an install) has the same accounting.
    const rebuilt = SessionTable.of(table.sessions());
    assert.equal(rebuilt.countOf(HOG), table.countOf(HOG));
    assert.deepEqual([...rebuilt.overShare()], [HOG]);
    assert.ok(index > 0);
  });
});

describe('client sessions: withResult', () => {
  /** reference: the record with `result` added as the table defines it (seq order, the lowest dropped past the cap, floorSeq their highest). */
  function reference(s: ClientSession | undefined, clientId: string, index: number, result: SessionResult): ClientSession {
    const results = [...(s?.results ?? []), result].sort((a, b) => a.seq - b.seq);
    let floorSeq = s?.floorSeq ?? 0;
    while (results.length > SESSION_RESULTS_PER_CLIENT_MAX) floorSeq = Math.max(floorSeq, (results.shift() as SessionResult).seq);
    return { clientId, lastIndex: index, floorSeq, results };
  }

  it('adds a result in seq order, drops the lowest past SESSION_RESULTS_PER_CLIENT_MAX and raises floorSeq, as a sort of them all would', () => {
    let seed = 11;
    const rnd = (n: number): number => Math.floor(((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * n);
    for (let round = 0; round < 200; round++) {
      let s: ClientSession | undefined;
      let mine: ClientSession | undefined;
      const used = new Set<number>();
      const steps = rnd(3 * SESSION_RESULTS_PER_CLIENT_MAX);
      for (let i = 0; i < steps; i++) {
        // Mostly increasing request ids, some out of order (a retry of an older write that is still new), never a repeat.
        let seq = round % 3 === 0 ? 1 + rnd(4 * SESSION_RESULTS_PER_CLIENT_MAX) : i + 1 + (rnd(4) === 0 ? -rnd(5) : 0);
        while (used.has(seq) || seq < 1 || seq <= (s?.floorSeq ?? 0)) seq++;
        used.add(seq);
        const result: SessionResult = rnd(2) === 0 ? { index: i + 1, seq } : { index: i + 1, seq, deleted: rnd(2) };
        s = reference(s, 'c', i + 1, result);
        mine = withResult(mine, 'c', i + 1, result);
        assert.deepEqual(mine, s, `round ${round} step ${i}`);
        assert.ok(mine.results.length <= SESSION_RESULTS_PER_CLIENT_MAX);
      }
    }
  });
});

for (const impl of implementations) {
  describe(`client sessions on ${impl.name}`, function () {
    this.timeout(60_000);
    let fixture: Fixture;
    let store: FsmStore;

    beforeEach(async () => {
      fixture = await impl.create();
      store = await fixture.open();
    });
    afterEach(async () => {
      await store.close();
      await fixture.dispose();
    });

    it('A retried Put with the same request id applies once', async () => {
      const c1: SessionStamp = { clientId: 'writer-1', seq: 1 };
      const [first] = await store.apply([item(1, put('k', 'v1', c1))]);
      assert.deepEqual(first, { index: 1, ok: true });
      await store.apply([item(2, put('k', 'other'))]); // another writer, no request id
      const results = await store.apply([item(3, put('k', 'v1', c1)), item(4, put('k2', 'x', { clientId: 'writer-1', seq: 2 }))]);
      assert.deepEqual(results, [
        { index: 3, ok: true, firstIndex: 1 },
        { index: 4, ok: true },
      ]);
      assert.equal(text(await store.get(bytes('k'))), 'other', 'the retry did not write again');
      assert.equal(store.appliedIndex(), 4);
      // Within one apply call too: the second copy of a request id is a replay of the first.
      const same = await store.apply([item(5, put('j', 'a', { clientId: 'w2', seq: 7 })), item(6, put('j', 'b', { clientId: 'w2', seq: 7 }))]);
      assert.deepEqual(same, [
        { index: 5, ok: true },
        { index: 6, ok: true, firstIndex: 5 },
      ]);
      assert.equal(text(await store.get(bytes('j'))), 'a');
      assert.deepEqual(store.lookupSession({ clientId: 'w2', seq: 7 }), { kind: 'seen', result: { seq: 7, index: 5 } });
    });

    it('a Delete with a request id reports what it deleted, and its retry reports the same', async () => {
      await store.apply([item(1, put('k', 'v'))]);
      const s: SessionStamp = { clientId: 'd', seq: 1 };
      const r = await store.apply([item(2, put('n', 'v')), item(3, del('n', { clientId: 'd', seq: 9 })), item(4, del('k', s)), item(5, del('missing', { clientId: 'd', seq: 10 }))]);
      assert.deepEqual(r, [
        { index: 2, ok: true },
        { index: 3, ok: true, deleted: 1 },
        { index: 4, ok: true, deleted: 1 },
        { index: 5, ok: true, deleted: 0 },
      ]);
      await store.apply([item(6, put('k', 'again'))]);
      const [retry] = await store.apply([item(7, del('k', s))]);
      assert.deepEqual(retry, { index: 7, ok: true, firstIndex: 4, deleted: 1 });
      assert.equal(text(await store.get(bytes('k'))), 'again', 'the retried delete did not delete the newer value');
    });

    it('session records are reserved: not readable, not listed, not writable', async () => {
      await store.apply([item(1, put('\u0000a', '1')), item(2, put('z', '2', { clientId: 'c', seq: 1 })), item(3, put('\u0000snapcoord0', '3'))]);
      assert.equal(await store.get(sessionKey('c')), undefined);
      assert.deepEqual(await userKeys(store), ['\u0000a', '\u0000snapcoord0', 'z']);
      assert.deepEqual((await store.range({ prefix: bytes('\u0000snapcoord/'), limit: 10 })).kvs, []);
      // Limits and paging count data only.
      const page = await store.range({ limit: 1, start: bytes('\u0000b') });
      assert.deepEqual(page.kvs.map((kv) => text(kv.key)), ['\u0000snapcoord0']);
      assert.equal(page.more, true);
      const [bad] = await store.apply([{ entry: { index: 4, term: 1, type: 'normal', data: Uint8Array.from([0x01, 0x00, 0x14, ...sessionKey('c'), 0, 0, 0, 1, 0x41]) } }]);
      assert.equal(bad?.ok, false);
      assert.equal((bad as Extract<ApplyResult, { ok: false }>).code, 'reservedKey');
      // But they are state: in the snapshot stream (so in the digest), under their reserved key.
      const records = await allRecords(store);
      assert.ok(records.some((r) => isReservedKey(r.key)));
    });

    it('the record survives a reopen, and a snapshot installed elsewhere', async () => {
      const s: SessionStamp = { clientId: 'persist', seq: 3 };
      await store.apply([item(1, put('k', 'v', s))]);
      await store.close();
      store = await fixture.open();
      assert.deepEqual(store.lookupSession(s), { kind: 'seen', result: { seq: 3, index: 1 } });
      const [again] = await store.apply([item(2, put('k', 'changed', s))]);
      assert.deepEqual(again, { index: 2, ok: true, firstIndex: 1 });

      // A follower that installs this state remembers the id too.
      const other = await withFsm(await MemoryStorage.open(new MemoryDataDir('follower')));
      try {
        const reader = await store.snapshotState();
        await other.installState(reader.batches(), { appliedIndex: reader.appliedIndex, membership: MEMBERSHIP });
        assert.equal(await other.stateDigest(), await store.stateDigest());
        const [replay] = await other.apply([item(3, put('k', 'changed', s))]);
        assert.deepEqual(replay, { index: 3, ok: true, firstIndex: 1 });
        assert.equal(text(await other.get(bytes('k'))), 'v');
        assert.deepEqual(await userKeys(other), ['k']);
      } finally {
        await other.close();
      }
    });

    it('an install with keepSessions (a restore) keeps the table, ignores the archive\'s, and records its own id', async () => {
      await store.apply([item(1, put('k', 'v', { clientId: 'before', seq: 1 }))]);
      const archive: KeyValue[] = [
        { key: bytes('\u0000a'), value: bytes('x') },
        { key: sessionKey('from-archive'), value: encodeClientSession({ clientId: 'from-archive', lastIndex: 1, floorSeq: 0, results: [{ seq: 1, index: 1 }] }) },
        { key: bytes('\u0000snapcoord/other'), value: bytes('dropped') },
        { key: bytes('restored'), value: bytes('r') },
      ];
      await store.installState([archive], { appliedIndex: 5, membership: MEMBERSHIP, keepSessions: true, session: { clientId: 'restorer', seq: 1 } });
      assert.deepEqual(await userKeys(store), ['\u0000a', 'restored']);
      assert.equal(store.lookupSession({ clientId: 'before', seq: 1 }).kind, 'seen');
      assert.equal(store.lookupSession({ clientId: 'from-archive', seq: 1 }).kind, 'new');
      assert.deepEqual(store.lookupSession({ clientId: 'restorer', seq: 1 }), { kind: 'seen', result: { seq: 1, index: 5 } });
      await store.close();
      store = await fixture.open();
      assert.equal(store.lookupSession({ clientId: 'restorer', seq: 1 }).kind, 'seen');

      // Without keepSessions (a snapshot install) the source's table is the new one; a malformed record is refused.
      await store.installState([archive], { appliedIndex: 6, membership: MEMBERSHIP });
      assert.equal(store.lookupSession({ clientId: 'before', seq: 1 }).kind, 'new');
      assert.equal(store.lookupSession({ clientId: 'from-archive', seq: 1 }).kind, 'seen');
      await rejectsWith(
        store.installState([[{ key: sessionKey('bad'), value: bytes('nonsense') }]], { appliedIndex: 7, membership: MEMBERSHIP }),
        'invalidArgument',
        /session record/,
      );
      assert.equal(store.appliedIndex(), 6);
    });

    it('a request id older than those remembered is refused, not applied again', async () => {
      const items: ApplyItem[] = [];
      const n = SESSION_RESULTS_PER_CLIENT_MAX + 5;
      for (let seq = 1; seq <= n; seq++) items.push(item(seq, put(`k${seq}`, 'v', { clientId: 'busy', seq })));
      await store.apply(items);
      await store.apply([item(n + 1, del('k1'))]);
      const [old] = await store.apply([item(n + 2, put('k1', 'v', { clientId: 'busy', seq: 1 }))]);
      assert.equal(old?.ok, false);
      assert.equal((old as Extract<ApplyResult, { ok: false }>).code, 'requestIdExpired');
      assert.equal(await store.get(bytes('k1')), undefined, 'not applied again');
      const [kept] = await store.apply([item(n + 3, put('k6', 'x', { clientId: 'busy', seq: 6 }))]);
      assert.deepEqual(kept, { index: n + 3, ok: true, firstIndex: 6 });
    });

    it('a key opening more than SESSION_CLIENTS_MAX clients cannot push out another key\'s: its retry is still answered, the state survives a reopen and an install', async () => {
      const victim: SessionStamp = { clientId: bound(VICTIM, 'payments'), seq: 1 };
      const legacy: SessionStamp = { clientId: 'legacy-client', seq: 1 };
      await store.apply([item(1, put('victim', 'v1', victim)), item(2, put('legacy', 'l1', legacy))]);
      let index = 3;
      const hog = SESSION_CLIENTS_MAX + 300;
      for (let done = 0; done < hog; ) {
        const items: ApplyItem[] = [];
        for (let i = 0; i < 1000 && done < hog; i++, done++) items.push(item(index++, put('hog', `${done}`, { clientId: bound(HOG, `h${done + 1}`), seq: 1 })));
        await store.apply(items);
      }
      await store.apply([item(index++, put('victim', 'v2'))]); // another writer in between
      // The victim's retry is answered with its first result and not applied again.
      const [retry] = await store.apply([item(index++, put('victim', 'v1', victim))]);
      assert.deepEqual(retry, { index: index - 1, ok: true, firstIndex: 1 });
      assert.equal(text(await store.get(bytes('victim'))), 'v2', 'the retry did not write again');
      assert.equal(store.lookupSession(legacy).kind, 'seen', 'an unbound client is not pushed out either');
      // The hog's own oldest went: 2 + 8492 - 8192 = 302 of them.
      assert.equal(store.lookupSession({ clientId: bound(HOG, 'h302'), seq: 1 }).kind, 'new');
      assert.equal(store.lookupSession({ clientId: bound(HOG, 'h303'), seq: 1 }).kind, 'seen');
      assert.equal((await allRecords(store)).filter((r) => isSessionKey(r.key)).length, SESSION_CLIENTS_MAX);

      // After a reopen the accounting is rebuilt from the records: the hog's next client pushes out its own oldest.
      await store.close();
      store = await fixture.open();
      const follower = await withFsm(await MemoryStorage.open(new MemoryDataDir('share-follower')));
      try {
        const reader = await store.snapshotState();
        await follower.installState(reader.batches(), { appliedIndex: reader.appliedIndex, membership: MEMBERSHIP });
        assert.equal(await follower.stateDigest(), await store.stateDigest());
        const next = [item(index, put('hog', 'x', { clientId: bound(HOG, 'next'), seq: 1 })), item(index + 1, put('victim', 'v1', victim))];
        for (const s of [store, follower]) {
          const [, replay] = await s.apply(next);
          assert.deepEqual(replay, { index: index + 1, ok: true, firstIndex: 1 });
          assert.equal(s.lookupSession({ clientId: bound(HOG, 'h303'), seq: 1 }).kind, 'new');
          assert.equal(s.lookupSession({ clientId: bound(HOG, 'h304'), seq: 1 }).kind, 'seen');
          assert.equal(s.lookupSession(legacy).kind, 'seen');
        }
        assert.equal(await follower.stateDigest(), await store.stateDigest(), 'the same state on both');
        // A restore keeps the table (keepSessions) and records its own id under the same rule.
        const restorer: SessionStamp = { clientId: bound(HOG, 'restorer'), seq: 1 };
        await follower.installState([[{ key: bytes('restored'), value: bytes('r') }]], { appliedIndex: index + 5, membership: MEMBERSHIP, keepSessions: true, session: restorer });
        assert.equal(follower.lookupSession(restorer).kind, 'seen');
        assert.equal(follower.lookupSession(victim).kind, 'seen');
        assert.equal(follower.lookupSession(legacy).kind, 'seen');
        assert.equal(follower.lookupSession({ clientId: bound(HOG, 'h304'), seq: 1 }).kind, 'new');
        assert.equal(follower.lookupSession({ clientId: bound(HOG, 'h305'), seq: 1 }).kind, 'seen');
      } finally {
        await follower.close();
      }
    });

    it('the table keeps at most SESSION_CLIENTS_MAX clients, forgetting the least recently active', async () => {
      const items: ApplyItem[] = [];
      for (let i = 1; i <= SESSION_CLIENTS_MAX + 1; i++) items.push(item(i, put('k', `${i}`, { clientId: `c${i}`, seq: 1 })));
      await store.apply(items.slice(0, 100));
      await store.apply(items.slice(100));
      assert.equal(store.lookupSession({ clientId: 'c1', seq: 1 }).kind, 'new', 'the oldest client is forgotten');
      assert.equal(store.lookupSession({ clientId: 'c2', seq: 1 }).kind, 'seen');
      const sessions = (await allRecords(store)).filter((r) => isSessionKey(r.key));
      assert.equal(sessions.length, SESSION_CLIENTS_MAX);
      await store.close();
      store = await fixture.open();
      assert.equal(store.lookupSession({ clientId: 'c1', seq: 1 }).kind, 'new');
      assert.equal(store.lookupSession({ clientId: `c${SESSION_CLIENTS_MAX + 1}`, seq: 1 }).kind, 'seen');
    });
  });
}
