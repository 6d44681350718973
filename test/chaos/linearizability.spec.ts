/**
 * Tests of the linearizability checker: hand-written legal and illegal
 * histories, the textbook register examples, randomized histories from a
 * simulated linearizable register (and mutations that break them), the step
 * bound, and input validation. Every random draw comes from a seeded PRNG, so
 * a failure replays.
 */
import assert from 'node:assert/strict';
import { checkHistory, type KeyVerdict, type Op, type Outcome, type Verdict } from './linearizability.js';
import { SeededRng } from '../harness/rng.js';

type Draft = Omit<Op, 'id'>;

/** history numbers the ops 0, 1, 2, ... in the order given. */
function history(...ops: Draft[]): Op[] {
  return ops.map((op, id) => ({ id, ...op }));
}

function put(client: number, key: string, value: string, callMs: number, returnMs: number, outcome: Outcome = 'ok'): Draft {
  return { client, kind: 'put', key, value, callMs, returnMs, outcome };
}

function get(client: number, key: string, result: string | null, callMs: number, returnMs: number): Draft {
  return { client, kind: 'get', key, result, callMs, returnMs, outcome: 'ok' };
}

function del(client: number, key: string, callMs: number, returnMs: number, outcome: Outcome = 'ok'): Draft {
  return { client, kind: 'delete', key, callMs, returnMs, outcome };
}

/** cas: a compare-and-swap from `expected` (null: absent) to `value`; `swapped` for an ok one, `found` what a failed one read. */
function cas(
  client: number,
  key: string,
  expected: string | null,
  value: string,
  callMs: number,
  returnMs: number,
  outcome: Outcome | { swapped: boolean; found?: string | null },
): Draft {
  const base = { client, kind: 'cas' as const, key, expected, value, callMs, returnMs };
  if (typeof outcome === 'string') return { ...base, outcome };
  return { ...base, outcome: 'ok', swapped: outcome.swapped, ...(outcome.found !== undefined ? { result: outcome.found } : {}) };
}

const SWAPPED = { swapped: true };

function assertOk(v: Verdict): void {
  assert.equal(v.verdict, 'ok', JSON.stringify(v.keys, null, 2));
  assert.equal(v.ok, true);
}

/** assertIllegal checks the verdict is illegal on exactly `key` and returns that key's verdict. */
function assertIllegal(v: Verdict, key: string): KeyVerdict {
  assert.equal(v.verdict, 'illegal', JSON.stringify(v.keys, null, 2));
  assert.equal(v.ok, false);
  assert.deepEqual(
    v.keys.filter((k) => k.verdict === 'illegal').map((k) => k.key),
    [key],
  );
  const kv = v.keys.find((k) => k.key === key) as KeyVerdict;
  assert.match(kv.explanation ?? '', new RegExp(`key "${key}": not linearizable`));
  return kv;
}

interface SimConfig {
  clients: number;
  opsPerClient: number;
  keys: readonly string[];
}

/**
 * simulateStore runs random concurrent clients against a linearizable store:
 * every op that takes effect does so atomically at one instant inside its
 * interval (an ok op), or any time after its call, possibly after its timeout
 * (an unknown write that happened). Fails and half the unknown writes never
 * happen. Gets report the value at their instant. Values are unique.
 */
function simulateStore(seed: number, cfg: SimConfig): Op[] {
  const sim = new SeededRng(seed);
  const rnd = (): number => sim.nextFloat();
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)] as T;
  const drafts: { op: Op; at?: number }[] = [];
  let id = 0;
  for (let client = 0; client < cfg.clients; client++) {
    let t = rnd() * 5;
    for (let k = 0; k < cfg.opsPerClient; k++) {
      const callMs = t;
      const duration = 0.5 + rnd() * 8;
      const returnMs = callMs + duration;
      const r = rnd();
      const kind = r < 0.45 ? 'put' : r < 0.85 ? 'get' : 'delete';
      const o = rnd();
      const outcome: Outcome = o < 0.07 ? 'fail' : o < 0.2 ? 'unknown' : 'ok';
      const op: Op = { id, client, kind, key: pick(cfg.keys), callMs, returnMs, outcome, ...(kind === 'put' ? { value: `s${seed}-v${id}` } : {}) };
      id++;
      if (outcome === 'ok') drafts.push({ op, at: callMs + rnd() * duration });
      else if (outcome === 'unknown' && kind !== 'get' && rnd() < 0.5) drafts.push({ op, at: callMs + rnd() * (duration + 10) });
      else drafts.push({ op });
      t = returnMs + rnd() * 2;
    }
  }
  const store = new Map<string, string>();
  const results = new Map<number, string | null>();
  const effects = drafts.filter((d) => d.at !== undefined).sort((a, b) => (a.at as number) - (b.at as number));
  for (const { op } of effects) {
    if (op.kind === 'put') store.set(op.key, op.value as string);
    else if (op.kind === 'delete') store.delete(op.key);
    else results.set(op.id, store.get(op.key) ?? null);
  }
  const ops = drafts.map(({ op }) => (results.has(op.id) ? { ...op, result: results.get(op.id) ?? null } : op));
  // Shuffle: the checker must not depend on the order of the input.
  for (let i = ops.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [ops[i], ops[j]] = [ops[j] as Op, ops[i] as Op];
  }
  return ops;
}

/** withResult returns a copy of `ops` where op `id` (a get) returns `result`. */
function withResult(ops: readonly Op[], id: number, result: string | null): Op[] {
  return ops.map((op) => (op.id === id ? { ...op, result } : op));
}

const okGets = (ops: readonly Op[]): Op[] => ops.filter((op) => op.kind === 'get' && op.outcome === 'ok');

describe('linearizability checker', () => {
  describe('legal histories', () => {
    it('accepts a sequential history of puts, gets and deletes', () => {
      const v = checkHistory(
        history(get(0, 'x', null, 0, 1), put(0, 'x', 'a', 2, 3), get(1, 'x', 'a', 4, 5), put(1, 'x', 'b', 6, 7), get(0, 'x', 'b', 8, 9), del(0, 'x', 10, 11), get(1, 'x', null, 12, 13)),
      );
      assertOk(v);
      assert.equal(v.ops, 7);
    });

    it('accepts a get concurrent with a put returning either the new value or the old one', () => {
      for (const seen of ['a', 'b']) {
        assertOk(checkHistory(history(put(0, 'x', 'a', 0, 1), put(1, 'x', 'b', 2, 10), get(2, 'x', seen, 3, 8))));
      }
      // Old then new, on two clients, both overlapping the put.
      assertOk(checkHistory(history(put(0, 'x', 'a', 0, 1), put(1, 'x', 'b', 2, 10), get(2, 'x', 'a', 3, 5), get(3, 'x', 'b', 4, 6))));
    });

    it('counts ops whose intervals only touch (return == call) as concurrent', () => {
      assertOk(checkHistory(history(put(0, 'x', 'a', 0, 5), get(1, 'x', null, 5, 6))));
    });

    it("accepts a get that sees an 'unknown' put, even after the put timed out", () => {
      assertOk(checkHistory(history(put(0, 'x', 'a', 0, 1), put(1, 'x', 'b', 2, 4, 'unknown'), get(2, 'x', 'a', 5, 6), get(2, 'x', 'b', 7, 8), get(0, 'x', 'b', 9, 10))));
    });

    it("accepts an 'unknown' put or delete that is never observed", () => {
      assertOk(checkHistory(history(put(0, 'x', 'a', 0, 1), put(1, 'x', 'b', 2, 4, 'unknown'), del(2, 'x', 2, 4, 'unknown'), get(0, 'x', 'a', 5, 6), get(0, 'x', 'a', 50, 60))));
      // Here a get returns null, so the search keeps the delete; it must still be free to leave it out.
      const v = checkHistory(history(get(0, 'x', null, 0, 1), put(0, 'x', 'a', 2, 3), del(1, 'x', 4, 5, 'unknown'), get(0, 'x', 'a', 6, 7), get(0, 'x', 'a', 100, 101)));
      assertOk(v);
      assert.equal(v.ops, 5);
    });

    it("ignores 'fail' ops and 'unknown' gets", () => {
      const v = checkHistory(
        history(put(0, 'x', 'a', 0, 1), put(1, 'x', 'b', 2, 3, 'fail'), { client: 2, kind: 'get', key: 'x', result: 'zzz', callMs: 4, returnMs: 5, outcome: 'unknown' }, get(0, 'x', 'a', 6, 7)),
      );
      assertOk(v);
      assert.equal(v.ops, 2);
    });

    it('accepts deletes followed by gets returning null', () => {
      assertOk(checkHistory(history(put(0, 'x', 'a', 0, 1), del(1, 'x', 2, 3), get(0, 'x', null, 4, 5), del(1, 'x', 6, 7), get(2, 'x', null, 8, 9))));
      // A get concurrent with the delete may still see the value.
      assertOk(checkHistory(history(put(0, 'x', 'a', 0, 1), del(1, 'x', 2, 6), get(0, 'x', 'a', 3, 4), get(0, 'x', null, 7, 8))));
    });

    it('checks several interleaved keys independently', () => {
      const v = checkHistory(
        history(
          put(0, 'x', 'x1', 0, 4),
          put(1, 'y', 'y1', 1, 3),
          get(2, 'x', null, 2, 3),
          get(2, 'y', 'y1', 4, 5),
          put(1, 'x', 'x2', 4, 6),
          get(0, 'x', 'x2', 7, 8),
          del(2, 'y', 6, 9),
          get(3, 'z', null, 0, 10),
          get(1, 'y', null, 10, 11),
        ),
      );
      assertOk(v);
      assert.deepEqual(
        v.keys.map((k) => [k.key, k.ops, k.verdict]),
        [
          ['x', 4, 'ok'],
          ['y', 4, 'ok'],
          ['z', 1, 'ok'],
        ],
      );
    });
  });

  describe('illegal histories', () => {
    it('rejects a stale read: a get after a completed put returns the older value', () => {
      const kv = assertIllegal(checkHistory(history(put(0, 'x', 'a', 0, 1), put(1, 'x', 'b', 2, 3), get(2, 'x', 'a', 4, 5))), 'x');
      // The explanation shows the prefix and the get that could not be placed.
      assert.match(kv.explanation ?? '', /Longest linearizable prefix: 2 op\(s\)/);
      assert.match(kv.explanation ?? '', /value is "b" and none of these can go next:\n {2}#2 c2 get -> "a" \[4, 5\] ok/);
    });

    it('rejects a read of a value that was never written', () => {
      const kv = assertIllegal(checkHistory(history(put(0, 'x', 'a', 0, 10), get(1, 'x', 'ghost', 1, 9))), 'x');
      assert.match(kv.explanation ?? '', /get -> "ghost"/);
    });

    it('rejects non-monotonic reads: B, then a later read sees the older A', () => {
      // Both puts overlap both gets, but the second get starts after the first returned.
      assertIllegal(checkHistory(history(put(0, 'x', 'a', 0, 20), put(1, 'x', 'b', 0, 20), get(2, 'x', 'b', 1, 5), get(3, 'x', 'a', 6, 10), get(2, 'x', 'b', 11, 12))), 'x');
      // Same with the write order pinned: a before b.
      assertIllegal(checkHistory(history(put(0, 'x', 'a', 0, 1), put(1, 'x', 'b', 2, 20), get(2, 'x', 'b', 3, 5), get(3, 'x', 'a', 6, 10))), 'x');
    });

    it("rejects a get that returns the value of a 'fail' put", () => {
      assertOk(checkHistory(history(put(0, 'x', 'a', 0, 1), put(1, 'x', 'b', 2, 3, 'unknown'), get(2, 'x', 'b', 4, 5))));
      assertIllegal(checkHistory(history(put(0, 'x', 'a', 0, 1), put(1, 'x', 'b', 2, 3, 'fail'), get(2, 'x', 'b', 4, 5))), 'x');
    });

    it('rejects a read of a deleted key returning the value after the delete completed', () => {
      assertIllegal(checkHistory(history(put(0, 'x', 'a', 0, 1), del(1, 'x', 2, 3), get(2, 'x', 'a', 4, 5))), 'x');
    });

    it("rejects a get of a value written only after the get returned (even by an 'unknown' put)", () => {
      assertIllegal(checkHistory(history(get(0, 'x', 'a', 0, 1), put(1, 'x', 'a', 2, 3, 'unknown'))), 'x');
    });

    it('makes the whole verdict illegal for one illegal key among legal ones, and names it', () => {
      const v = checkHistory(
        history(
          put(0, 'a', 'a1', 0, 1),
          get(1, 'a', 'a1', 2, 3),
          put(0, 'b', 'b1', 2, 3),
          put(1, 'b', 'b2', 4, 5),
          get(0, 'b', 'b1', 6, 7), // stale
          put(2, 'c', 'c1', 0, 10),
          get(3, 'c', 'c1', 1, 2),
        ),
      );
      assertIllegal(v, 'b');
      assert.deepEqual(
        v.keys.map((k) => [k.key, k.verdict]),
        [
          ['a', 'ok'],
          ['b', 'illegal'],
          ['c', 'ok'],
        ],
      );
    });
  });

  // The register examples of MIT 6.824 (2017, quiz 2, section VII), also the first
  // tests of porcupine (TestRegisterModel); the register starts at 0, here: absent.
  describe('textbook examples (6.824 quiz / porcupine TestRegisterModel)', () => {
    it('legal: a read of 100 and a read of 0, both concurrent with the write of 100', () => {
      assertOk(checkHistory(history(put(0, 'r', '100', 0, 100), get(1, 'r', '100', 25, 75), get(2, 'r', null, 30, 60))));
    });

    it('illegal: a read of 0 that starts after a read of 200 has returned', () => {
      assertIllegal(checkHistory(history(put(0, 'r', '200', 0, 100), get(1, 'r', '200', 10, 30), get(2, 'r', null, 40, 90))), 'r');
    });
  });

  describe('randomized: a simulated linearizable store', () => {
    const SEEDS = 60;
    const configFor = (seed: number): SimConfig => ({
      clients: 3 + (seed % 3),
      opsPerClient: 8 + (seed % 5),
      keys: seed % 2 === 0 ? ['k'] : ['k', 'j'],
    });

    it(`accepts ${SEEDS} simulated histories with unknown and failed ops`, () => {
      let unknownWrites = 0;
      let readsOfUnknown = 0;
      for (let seed = 1; seed <= SEEDS; seed++) {
        const ops = simulateStore(seed, configFor(seed));
        const v = checkHistory(ops);
        assert.equal(v.verdict, 'ok', `seed ${seed}: ${JSON.stringify(v.keys)}`);
        const unknown = new Set(ops.filter((op) => op.kind === 'put' && op.outcome === 'unknown').map((op) => op.value));
        unknownWrites += unknown.size;
        readsOfUnknown += okGets(ops).filter((g) => unknown.has(g.result ?? undefined)).length;
      }
      // The generator really exercises unknown outcomes, including ones that took effect.
      assert.ok(unknownWrites >= 20, `unknown writes: ${unknownWrites}`);
      assert.ok(readsOfUnknown >= 5, `reads of unknown writes: ${readsOfUnknown}`);
    });

    it('rejects each of them once one get returns a value written only after it returned', () => {
      for (let seed = 1; seed <= SEEDS; seed++) {
        const ops = simulateStore(seed, configFor(seed));
        const gets = okGets(ops);
        assert.ok(gets.length > 0, `seed ${seed}: no gets`);
        // A put called after the get returned (any outcome), else a value nobody wrote.
        const pairs = gets.flatMap((g) => ops.filter((p) => p.kind === 'put' && p.key === g.key && p.callMs > g.returnMs).map((p) => [g, p.value as string] as const));
        const [g, value] = pairs[seed % Math.max(1, pairs.length)] ?? [gets[0] as Op, 'never-written'];
        assertIllegal(checkHistory(withResult(ops, g.id, value)), g.key);
      }
    });

    it('rejects them once one get returns a value overwritten before it was called (stale read)', () => {
      let mutations = 0;
      for (let seed = 1; seed <= SEEDS; seed++) {
        const ops = simulateStore(seed, configFor(seed));
        const ok = ops.filter((op) => op.outcome === 'ok');
        // a (a put) returned before b (a write) was called, and b returned before g (a get) was called.
        const triples = okGets(ops).flatMap((g) =>
          ok
            .filter((b) => b.kind !== 'get' && b.key === g.key && b.returnMs < g.callMs)
            .flatMap((b) => ok.filter((a) => a.kind === 'put' && a.key === g.key && a.returnMs < b.callMs).map((a) => [g, a] as const)),
        );
        if (triples.length === 0) continue;
        const [g, a] = triples[seed % triples.length] as (typeof triples)[number];
        assertIllegal(checkHistory(withResult(ops, g.id, a.value as string)), g.key);
        mutations++;
      }
      assert.ok(mutations >= SEEDS / 2, `only ${mutations} seeds had a stale-read mutation`);
    });
  });

  describe('compare-and-swap (a register with cas, as in Jepsen\'s etcd test)', () => {
    it('accepts a sequential history: swaps that held, failed swaps that found another value, a swap from absent', () => {
      assertOk(
        checkHistory(
          history(
            cas(0, 'k', null, 'a', 0, 1, SWAPPED),
            cas(1, 'k', null, 'x', 2, 3, { swapped: false, found: 'a' }),
            cas(0, 'k', 'a', 'b', 4, 5, SWAPPED),
            get(1, 'k', 'b', 6, 7),
            cas(1, 'k', 'a', 'c', 8, 9, { swapped: false, found: 'b' }),
            cas(0, 'k', 'zzz', 'c', 10, 11, { swapped: false }), // Jepsen style: no value found
            del(0, 'k', 12, 13),
            cas(1, 'k', 'b', 'd', 14, 15, { swapped: false, found: null }),
            cas(1, 'k', null, 'e', 16, 17, SWAPPED),
            get(0, 'k', 'e', 18, 19),
          ),
        ),
      );
    });

    it('accepts two concurrent swaps from one value when exactly one wins and the other finds its value', () => {
      const h = history(
        put(0, 'k', 'a', 0, 1),
        cas(1, 'k', 'a', 'b', 2, 10, SWAPPED),
        cas(2, 'k', 'a', 'c', 3, 9, { swapped: false, found: 'b' }),
        get(0, 'k', 'b', 11, 12),
      );
      assertOk(checkHistory(h));
    });

    it("accepts an 'unknown' cas that took effect (observed) and one that never did (its compare could not hold)", () => {
      assertOk(checkHistory(history(put(0, 'k', 'a', 0, 1), cas(1, 'k', 'a', 'b', 2, 3, 'unknown'), get(0, 'k', 'b', 10, 11))));
      assertOk(checkHistory(history(put(0, 'k', 'a', 0, 1), cas(1, 'k', 'zzz', 'b', 2, 3, 'unknown'), get(0, 'k', 'a', 10, 11))));
      // an unknown cas that would have swapped, but nobody saw it: it may have failed, or been lost
      assertOk(checkHistory(history(put(0, 'k', 'a', 0, 1), cas(1, 'k', 'a', 'b', 2, 3, 'unknown'), get(0, 'k', 'a', 10, 11))));
    });

    it('keeps an unobserved unknown write when a failed cas without a found value needs it to have happened', () => {
      // the failed cas expected 'a', so 'u' must have been written before it: dropping 'u' would make this illegal
      assertOk(checkHistory(history(put(0, 'k', 'a', 0, 1), put(1, 'k', 'u', 2, 3, 'unknown'), cas(0, 'k', 'a', 'b', 4, 5, { swapped: false }))));
    });

    it('rejects a lost update: two swaps from the same value both succeed', () => {
      const h = history(put(0, 'k', 'a', 0, 1), cas(1, 'k', 'a', 'b', 2, 10, SWAPPED), cas(2, 'k', 'a', 'c', 3, 9, SWAPPED));
      const kv = assertIllegal(checkHistory(h), 'k');
      assert.match(kv.explanation ?? '', /cas "a" -> "[bc]" swapped/);
    });

    it('rejects a swap whose expected value was overwritten before it was called', () => {
      assertIllegal(checkHistory(history(put(0, 'k', 'a', 0, 1), put(0, 'k', 'c', 2, 3), cas(1, 'k', 'a', 'b', 4, 5, SWAPPED))), 'k');
      assertIllegal(checkHistory(history(cas(1, 'k', 'a', 'b', 0, 1, SWAPPED))), 'k'); // the key starts absent
    });

    it('rejects a failed swap while the key held exactly the expected value, and one that found a value never written', () => {
      assertIllegal(checkHistory(history(put(0, 'k', 'a', 0, 1), cas(1, 'k', 'a', 'b', 2, 3, { swapped: false }))), 'k');
      assertIllegal(checkHistory(history(put(0, 'k', 'a', 0, 1), cas(1, 'k', 'q', 'b', 2, 3, { swapped: false, found: 'never' }))), 'k');
      // the key is absent until after the swap returned, yet the swap from absent failed
      assertIllegal(checkHistory(history(cas(1, 'k', null, 'b', 0, 1, { swapped: false }), put(0, 'k', 'x', 5, 6))), 'k');
    });

    it("rejects a read of an 'unknown' cas's value when its compare could never have held", () => {
      assertIllegal(checkHistory(history(put(0, 'k', 'a', 0, 1), cas(1, 'k', 'zzz', 'b', 2, 3, 'unknown'), get(0, 'k', 'b', 10, 11))), 'k');
    });

    it('rejects a swap applied twice (the same swap observed after the value moved on)', () => {
      // c0 swaps a->b, c1 puts a again... then a get still sees b although nothing swapped a->b a second time
      const h = history(
        put(0, 'k', 'a', 0, 1),
        cas(0, 'k', 'a', 'b', 2, 3, SWAPPED),
        put(1, 'k', 'a', 4, 5),
        get(2, 'k', 'b', 6, 7),
      );
      assertIllegal(checkHistory(h), 'k');
    });

    /** simulateCas: a linearizable register with cas (values unique per op), clients of random ops, some unknown or failed. */
    function simulateCas(seed: number): Op[] {
      const rng = new SeededRng(seed);
      const drafts: { op: Op; at?: number }[] = [];
      let id = 0;
      const written: string[] = [];
      for (let client = 0; client < 4; client++) {
        let t = rng.nextFloat() * 3;
        for (let k = 0; k < 10; k++) {
          const callMs = t;
          const duration = 0.5 + rng.nextFloat() * 6;
          const r = rng.nextFloat();
          const kind = r < 0.2 ? 'put' : r < 0.3 ? 'delete' : r < 0.7 ? 'cas' : 'get';
          const o = rng.nextFloat();
          const outcome: Outcome = kind === 'get' ? 'ok' : o < 0.05 ? 'fail' : o < 0.15 ? 'unknown' : 'ok';
          const value = `v${id}`;
          const expected = written.length === 0 || rng.nextFloat() < 0.2 ? null : (written[Math.max(0, written.length - 1 - rng.nextInt(3))] as string);
          if (kind === 'put' || kind === 'cas') written.push(value);
          const op: Op = { id, client, kind, key: 'k', callMs, returnMs: callMs + duration, outcome, ...(kind === 'put' || kind === 'cas' ? { value } : {}), ...(kind === 'cas' ? { expected } : {}) };
          id++;
          if (outcome === 'ok') drafts.push({ op, at: callMs + rng.nextFloat() * duration });
          else if (outcome === 'unknown' && rng.nextFloat() < 0.5) drafts.push({ op, at: callMs + rng.nextFloat() * (duration + 8) });
          else drafts.push({ op });
          t = callMs + duration + rng.nextFloat() * 2;
        }
      }
      let state: string | null = null;
      const done = new Map<number, Partial<Op>>();
      for (const { op } of drafts.filter((d) => d.at !== undefined).sort((a, b) => (a.at as number) - (b.at as number))) {
        if (op.kind === 'put') state = op.value as string;
        else if (op.kind === 'delete') state = null;
        else if (op.kind === 'get') done.set(op.id, { result: state });
        else if (state === op.expected) {
          state = op.value as string;
          done.set(op.id, { swapped: true });
        } else {
          done.set(op.id, { swapped: false, result: state });
        }
      }
      // an ok cas or get that took effect gets its answer; an unknown cas that did not happen keeps none
      return drafts.map(({ op }) => (op.outcome === 'ok' ? { ...op, ...done.get(op.id) } : op));
    }

    it('accepts 40 simulated histories of a register with cas, and rejects each once a swap claims a value never written', () => {
      let swapped = 0;
      let notSwapped = 0;
      for (let seed = 1; seed <= 40; seed++) {
        const ops = simulateCas(seed);
        assertOk(checkHistory(ops));
        const ok = ops.filter((op) => op.kind === 'cas' && op.outcome === 'ok');
        swapped += ok.filter((op) => op.swapped === true).length;
        notSwapped += ok.filter((op) => op.swapped === false).length;
        const victim = ok.find((op) => op.swapped === true);
        if (victim !== undefined) {
          assertIllegal(checkHistory(ops.map((op) => (op.id === victim.id ? { ...op, expected: 'never-written' } : op))), 'k');
        }
        const failed = ok.find((op) => op.swapped === false);
        if (failed !== undefined) {
          // claiming the failed swap found the very value it expected is malformed; claiming it found a value never written is illegal
          assertIllegal(checkHistory(ops.map((op) => (op.id === failed.id ? { ...op, result: 'never-written' } : op))), 'k');
        }
      }
      assert.ok(swapped >= 40 && notSwapped >= 40, `the generator exercises both outcomes (${swapped} swapped, ${notSwapped} not)`);
    });

    it('validates cas ops: a value, an expected value, swapped when ok, a failed swap not finding its expected value', () => {
      const base = history(cas(0, 'k', 'a', 'b', 0, 1, SWAPPED))[0] as Op;
      assert.throws(() => checkHistory([{ ...base, value: undefined } as unknown as Op]), /cas without a string value/);
      assert.throws(() => checkHistory([{ ...base, expected: undefined } as unknown as Op]), /cas without an expected value/);
      assert.throws(() => checkHistory([{ ...base, swapped: undefined } as unknown as Op]), /cas ok without swapped/);
      assert.throws(() => checkHistory([{ ...base, swapped: false, result: 'a' }]), /did not swap yet found the expected value/);
    });
  });

  describe('search bounds', () => {
    /** 12 'unknown' puts all concurrent with each other and with every get; the gets read them in `order`. */
    const unknownPuts = (order: readonly (number | null)[]): Op[] =>
      history(
        ...Array.from({ length: 12 }, (_, c) => put(c, 'k', `v${c}`, 0, 5, 'unknown')),
        ...order.map((v, i) => get(100, 'k', v === null ? null : `v${v}`, 1 + 2 * i, 2 + 2 * i)),
      );

    it('memoisation keeps 12 concurrent unknown puts (12! orders) to a few hundred thousand steps', () => {
      // Without the memo, the search walks through the orders of the puts: far beyond 10^6 steps.
      // With it, each (set of linearized puts, value, gets done) configuration is searched once.
      const ascending = [null, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
      const legal = checkHistory(unknownPuts(ascending));
      assertOk(legal);
      const illegal = checkHistory(unknownPuts([...ascending, 0])); // v0 again, after v11: impossible
      assertIllegal(illegal, 'k');
      for (const v of [legal, illegal]) {
        const steps = v.keys[0]?.steps ?? 0;
        assert.ok(steps > 0 && steps < 1_000_000, `steps: ${steps}`);
      }
    });

    it('handles thousands of ops on one key without recursion, in steps linear in the history', () => {
      /** Three clients, overlapping: every 10 ms a put, and two concurrent gets, of the previous value and of the new one. */
      const steps = (n: number): number => {
        const drafts: Draft[] = [];
        for (let i = 0; i < n; i++) {
          const t = 10 * Math.floor(i / 3);
          if (i % 3 === 0) drafts.push(put(0, 'k', `v${t}`, t, t + 9));
          else if (i % 3 === 1) drafts.push(get(1, 'k', t === 0 ? null : `v${t - 10}`, t + 1, t + 11));
          else drafts.push(get(2, 'k', `v${t}`, t + 1, t + 11));
        }
        const v = checkHistory(history(...drafts));
        assertOk(v);
        return v.keys[0]?.steps ?? 0;
      };
      const small = steps(2_000);
      const large = steps(20_000);
      assert.ok(large < 11 * small && large < 20 * 20_000, `steps: ${small} for 2,000 ops, ${large} for 20,000`);
    });

    it('drops unknown writes that no get observed: 40 timed-out puts cost no search', () => {
      const v = checkHistory(
        history(
          put(0, 'k', 'a', 0, 1),
          ...Array.from({ length: 40 }, (_, c) => put(c + 1, 'k', `lost${c}`, 2, 3, 'unknown')),
          ...Array.from({ length: 20 }, (_, i) => get(100, 'k', 'a', 4 + i, 5 + i)),
        ),
      );
      assertOk(v);
      assert.deepEqual(
        v.keys.map((k) => [k.ops, k.steps]),
        [[21, 21]],
      );
    });

    it("says 'unknown', never 'ok', when maxStepsPerKey runs out", () => {
      const ops = unknownPuts([null, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
      const v = checkHistory(ops, { maxStepsPerKey: 50 });
      assert.equal(v.verdict, 'unknown');
      assert.equal(v.ok, false);
      assert.deepEqual(
        v.keys.map((k) => [k.verdict, k.steps]),
        [['unknown', 50]],
      );
      // An illegal key elsewhere still makes the whole verdict illegal.
      const both = checkHistory([...ops, { id: 999, client: 200, kind: 'get', key: 'other', result: 'ghost', callMs: 0, returnMs: 1, outcome: 'ok' }], { maxStepsPerKey: 50 });
      assert.equal(both.verdict, 'illegal');
    });
  });

  describe('input validation', () => {
    const cases: [string, Op[], RegExp][] = [
      ['returnMs < callMs', history(put(0, 'x', 'a', 5, 4)), /returnMs 4 < callMs 5/],
      ['a non-finite time', history(put(0, 'x', 'a', 0, Infinity, 'unknown')), /must be finite/],
      ['a duplicate id', [{ id: 7, ...put(0, 'x', 'a', 0, 1) }, { id: 7, ...get(1, 'x', 'a', 2, 3) }], /op #7 .*duplicate id/],
      ['a put without a value', [{ id: 0, client: 0, kind: 'put', key: 'x', callMs: 0, returnMs: 1, outcome: 'ok' }], /put without a string value/],
      ['a get ok without a result', [{ id: 0, client: 0, kind: 'get', key: 'x', callMs: 0, returnMs: 1, outcome: 'ok' }], /get ok without a result/],
      ['a client with overlapping ops', history(put(0, 'x', 'a', 0, 10), get(1, 'x', 'a', 1, 2), get(0, 'x', 'a', 9, 12)), /client 0 runs ops #0 \[0, 10\] and #2 \[9, 12\] at the same time/],
      ['an unknown kind', [{ id: 0, client: 0, kind: 'append', key: 'x', callMs: 0, returnMs: 1, outcome: 'ok' } as unknown as Op], /unknown kind append/],
    ];
    for (const [what, ops, message] of cases) {
      it(`throws on ${what}`, () => {
        assert.throws(() => checkHistory(ops), message);
      });
    }

    it('accepts a failed or unknown get without a result, and back-to-back ops of one client', () => {
      const ops: Op[] = [
        { id: 0, client: 0, kind: 'get', key: 'x', callMs: 0, returnMs: 1, outcome: 'fail' },
        { id: 1, client: 0, kind: 'get', key: 'x', callMs: 1, returnMs: 2, outcome: 'unknown' },
      ];
      assertOk(checkHistory(ops));
    });

    it('rejects a bad maxStepsPerKey', () => {
      assert.throws(() => checkHistory([], { maxStepsPerKey: -1 }), /maxStepsPerKey/);
    });
  });
});
