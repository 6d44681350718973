/**
 * Seeded archive fuzzing: archives whose framing and every hash are valid
 * but whose content is hostile. The base is built by the real writer
 * (takeSmallState + buildSmallArchive) from a state holding client keys and
 * the store's own reserved records (key revisions, client sessions, the
 * restore floor, an ops record); it is read back (readArchive), then its
 * records and meta.json are mutated and it is packed again with every hash
 * recomputed (SHA256SUMS over the new meta.json and state.bin; meta.json's
 * stateBytes / stateKeys recomputed unless the mutation is of them), so each
 * case reaches past the integrity checks to what reads the content.
 *
 * fuzzCases(n): the cases a spec runs, `FUZZ_CASES` in the environment to
 * run more by hand; fuzzSeed(): the first seed, `FUZZ_SEED` to replay one.
 */
import { Readable } from 'node:stream';

import { revisionKey, encodeKeyRevision } from '../../../src/fsm/key-revision.js';
import { opsRecordKey } from '../../../src/fsm/ops-record.js';
import { restoreFloorRecord } from '../../../src/fsm/restore-floor.js';
import { encodeClientSession, sessionKey } from '../../../src/fsm/sessions.js';
import { readArchive } from '../../../src/snapshot/archive.js';
import { buildSmallArchive, takeSmallState } from '../../../src/snapshot/small-archive.js';
import { decodeStateRecords, type StateRecord } from '../../../src/snapshot/state-format.js';
import type { SeededRng } from '../../harness/rng.js';
import { sha256, tarGz } from './helpers.js';

/** fuzzCases: how many cases a fuzz spec runs (`FUZZ_CASES` overrides `ciDefault`). */
export function fuzzCases(ciDefault: number): number {
  const n = Number(process.env['FUZZ_CASES'] ?? ciDefault);
  return Number.isSafeInteger(n) && n > 0 ? n : ciDefault;
}

/** fuzzSeed: the first case's seed (`FUZZ_SEED` overrides `ciDefault`); case i runs seed + i. */
export function fuzzSeed(ciDefault: number): number {
  const n = Number(process.env['FUZZ_SEED'] ?? ciDefault);
  return Number.isSafeInteger(n) && n >= 0 ? n : ciDefault;
}

const MEMBERSHIP = { voters: ['n1'], learners: [], addresses: { n1: '127.0.0.1:1' } };
const RESERVED = '\x00snapcoord/';

/** BaseArchive: a valid archive's meta.json (parsed) and records, as read back from the real writer's bytes. */
export interface BaseArchive {
  readonly meta: Record<string, unknown>;
  readonly records: StateRecord[];
  readonly bytes: Buffer;
}

const latin1 = (s: string): Buffer => Buffer.from(s, 'latin1');

/** baseArchive builds a valid archive of a small state (client keys and reserved records) with the real writer. */
export async function baseArchive(rng: SeededRng, index = 40): Promise<BaseArchive> {
  const recs: StateRecord[] = [];
  const keys = 1 + rng.nextInt(12);
  for (let i = 0; i < keys; i++) {
    const key = latin1(`k/${String(i).padStart(3, '0')}`);
    recs.push({ key, value: Buffer.alloc(rng.nextInt(40), 0x61 + i) });
    recs.push({ key: Buffer.from(revisionKey(key)), value: Buffer.from(encodeKeyRevision({ createRevision: 1 + i, modRevision: 2 + i, version: 1 + rng.nextInt(3) })) });
  }
  const sessions = rng.nextInt(4);
  for (let i = 0; i < sessions; i++) {
    const results = [{ seq: 3, index: 5 }, { seq: 4, index: 6, deleted: 1 }, { seq: 7, index: 9, succeeded: true }].slice(0, 1 + rng.nextInt(3));
    recs.push({ key: Buffer.from(sessionKey(`t${i}:client-${i}`)), value: Buffer.from(encodeClientSession({ clientId: `t${i}:client-${i}`, lastIndex: 10 + i, floorSeq: 2, results })) });
  }
  if (rng.chance(0.5)) {
    const f = restoreFloorRecord(7);
    recs.push({ key: Buffer.from(f.key), value: Buffer.from(f.value) });
  }
  if (rng.chance(0.5)) recs.push({ key: Buffer.from(opsRecordKey('schedule/last')), value: Buffer.from('2024-05-01T12:00:00.000Z') });
  recs.sort((a, b) => Buffer.compare(a.key, b.key));
  async function* source(): AsyncGenerator<StateRecord[]> {
    yield recs;
  }
  const taken = await takeSmallState(source());
  if (taken.kind !== 'small') throw new Error('baseArchive: the state is not small');
  const built = await buildSmallArchive(
    // A creation time of its own: a store keeps at most 64 different archives naming one term, index and time.
    { id: `snap-${index}`, index, term: 2, membership: MEMBERSHIP, createdAt: new Date(Date.UTC(2024, 4, 1) + rng.nextInt(2 ** 30) * 1000).toISOString(), snapcoordVersion: '0.1.0' },
    taken.encoder,
  );
  // Read back through the real reader: what the mutations start from is what a reader sees.
  let meta: Record<string, unknown> = {};
  const records: StateRecord[] = [];
  await readArchive(Readable.from([built.bytes]), async (m, state) => {
    meta = { ...m, membership: { ...m.membership } };
    for await (const batch of decodeStateRecords(state)) for (const r of batch) records.push({ key: Buffer.from(r.key), value: Buffer.from(r.value) });
  });
  return { meta, records, bytes: built.bytes };
}

/** FuzzedArchive: the archive bytes and what was done to them (printed with the seed when a case fails). */
export interface FuzzedArchive {
  readonly archive: Buffer;
  readonly what: string[];
  /** the state.bin records after the mutation, when the mutation kept it a sequence of whole records. */
  readonly records: StateRecord[] | null;
}

const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
};

/** encodeRaw: records as state.bin bytes, no check at all. */
export function encodeRaw(recs: readonly StateRecord[]): Buffer {
  const parts: Buffer[] = [];
  for (const r of recs) parts.push(u32(r.key.length), Buffer.from(r.key), u32(r.value.length), Buffer.from(r.value));
  return Buffer.concat(parts);
}

/** oddNumbers: JSON values for numeric fields nobody meant. */
const ODD_NUMBERS: readonly unknown[] = [0, -1, 1, 2 ** 31, 2 ** 32, 2 ** 53 - 1, 2 ** 53, 2 ** 53 + 2, 1e308, 0.5, -0, '5', 'NaN', null, true, [], {}, 'Infinity', 1e21];

/** u64 values nobody meant: 0, 1, around 2^32 and 2^53, the top. */
function oddU64(rng: SeededRng): Buffer {
  const b = Buffer.alloc(8);
  const pick = rng.nextInt(7);
  if (pick === 0) return b;
  if (pick === 1) b.writeUInt32BE(1, 4);
  else if (pick === 2) b.writeUInt32BE(0xffffffff, 4);
  else if (pick === 3) b.writeUInt32BE(1, 0);
  else if (pick === 4) { b.writeUInt32BE(0x00200000, 0); } // 2^53
  else if (pick === 5) { b.writeUInt32BE(0x001fffff, 0); b.writeUInt32BE(0xffffffff, 4); } // 2^53 - 1
  else b.fill(0xff);
  return b;
}

function randomBytes(rng: SeededRng, n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = rng.nextInt(256);
  return b;
}

/** mutateValue: a reserved record's value changed the way a hostile writer would. */
function mutateValue(rng: SeededRng, v: Buffer): Buffer {
  const out = Buffer.from(v);
  switch (rng.nextInt(7)) {
    case 0: // a byte flipped
      if (out.length > 0) {
        const at = rng.nextInt(out.length);
        out[at] = (out[at] as number) ^ (1 << rng.nextInt(8));
      }
      return out;
    case 1: // truncated
      return out.subarray(0, rng.nextInt(out.length + 1));
    case 2: // extended
      return Buffer.concat([out, randomBytes(rng, 1 + rng.nextInt(20))]);
    case 3: // a u64 field set to something odd (sessions and revisions are u64 fields after a version byte)
      if (out.length >= 9) oddU64(rng).copy(out, 1 + 8 * rng.nextInt(Math.floor((out.length - 1) / 8)));
      return out;
    case 4: // the version byte
      if (out.length > 0) out[0] = rng.pick([0, 2, 0xff]);
      return out;
    case 5: // random
      return randomBytes(rng, rng.nextInt(64));
    default: // empty
      return Buffer.alloc(0);
  }
}

/** reservedKey: a key in the store's namespace, known or not. */
function reservedKey(rng: SeededRng): Buffer {
  return latin1(
    RESERVED +
      rng.pick([
        'session/',
        `session/${'x'.repeat(rng.nextInt(300))}`,
        'session/\x00\xff',
        'session/t0:client-0',
        'rev/k',
        'rev/kk/000',
        `rev/h${'\x01'.repeat(rng.pick([0, 31, 32, 33]))}`,
        'restore/last',
        'restore/other',
        'ops/',
        'ops/schedule/last',
        '',
        'unknown/x',
        '\xff',
      ]),
  );
}

/** sortUnique: records in key order, later duplicates dropped (the shape of a valid state.bin). */
function sortUnique(recs: StateRecord[]): StateRecord[] {
  const out = [...recs].sort((a, b) => Buffer.compare(a.key, b.key));
  return out.filter((r, i) => i === 0 || Buffer.compare((out[i - 1] as StateRecord).key, r.key) !== 0);
}

/**
 * fuzzArchive: one hostile archive from `base`, decided by `rng`. Most cases
 * keep state.bin a valid sequence of records (sorted, unique, within the
 * limits) so that they reach past the format check to what the records
 * mean; some break the format or lie in meta.json.
 */
export async function fuzzArchive(rng: SeededRng, base: BaseArchive): Promise<FuzzedArchive> {
  const what: string[] = [];
  let recs: StateRecord[] = base.records.map((r) => ({ key: Buffer.from(r.key), value: Buffer.from(r.value) }));
  const meta: Record<string, unknown> = { ...base.meta };
  let keepOrder = rng.chance(0.85);
  const steps = 1 + rng.nextInt(4);
  for (let s = 0; s < steps; s++) {
    const reserved = recs.map((r, i) => [r, i] as const).filter(([r]) => r.key[0] === 0);
    switch (rng.chance(0.2) ? rng.pick([8, 9, 11]) : rng.pick([0, 1, 2, 3, 4, 5, 6, 7, 10])) {
      case 0:
      case 1:
      case 2: {
        // a reserved record's value
        if (reserved.length === 0) break;
        const [r, i] = rng.pick(reserved);
        recs[i] = { key: r.key, value: mutateValue(rng, Buffer.from(r.value)) };
        what.push(`value of ${JSON.stringify(Buffer.from(r.key).toString('latin1'))} mutated`);
        break;
      }
      case 3:
      case 4: {
        // a new reserved record, known or unknown name, odd value
        const key = reservedKey(rng);
        const value = rng.chance(0.5) ? mutateValue(rng, Buffer.from(rng.pick(recs.length > 0 ? recs : [{ key, value: Buffer.alloc(25, 1) }]).value)) : randomBytes(rng, rng.nextInt(40));
        recs.push({ key, value });
        what.push(`reserved record ${JSON.stringify(key.toString('latin1').slice(0, 60))} added (${value.length} bytes)`);
        break;
      }
      case 5: {
        // a record dropped
        if (recs.length === 0) break;
        const i = rng.nextInt(recs.length);
        what.push(`record ${JSON.stringify(Buffer.from((recs[i] as StateRecord).key).toString('latin1'))} dropped`);
        recs.splice(i, 1);
        break;
      }
      case 6: {
        // a reserved key's suffix changed (a session under another client id, a revision of another key)
        if (reserved.length === 0) break;
        const [r, i] = rng.pick(reserved);
        const key = Buffer.concat([Buffer.from(r.key), randomBytes(rng, 1 + rng.nextInt(3))]);
        recs[i] = { key, value: r.value };
        what.push(`key ${JSON.stringify(Buffer.from(r.key).toString('latin1'))} -> ${JSON.stringify(key.toString('latin1'))}`);
        break;
      }
      case 7: {
        // a client key with odd bytes / sizes
        const n = rng.pick([1, 2, 4095, 4096]);
        const key = rng.chance(0.5) ? randomBytes(rng, n) : Buffer.alloc(n, rng.pick([0, 0xff, 0x6b]));
        if (key.length > 0 && key[0] === 0 && rng.chance(0.5)) key[0] = 1;
        const value = Buffer.alloc(rng.pick([0, 1, 1024 * 1024]), 0x76);
        recs.push({ key, value });
        what.push(`client key of ${n} bytes (first ${key[0]}), value ${value.length} bytes`);
        break;
      }
      case 8: {
        // meta.json: a numeric field set to something odd
        const field = rng.pick(['index', 'term', 'formatVersion', 'stateBytes', 'stateKeys']);
        meta[field] = rng.pick(ODD_NUMBERS);
        what.push(`meta.${field} = ${JSON.stringify(meta[field])}`);
        break;
      }
      case 9: {
        // meta.json: another field odd
        const field = rng.pick(['id', 'createdAt', 'snapcoordVersion', 'membership', 'extra']);
        const value = rng.pick<unknown>([
          '',
          'x'.repeat(200),
          '../etc',
          '2024-02-30T00:00:00.000Z',
          { voters: [], learners: [], addresses: {} },
          { voters: ['n1', 'n1'], learners: [], addresses: {} },
          { voters: ['n2'], learners: ['n1'], addresses: { n2: 'x:1', __proto__: 'y' } },
          { voters: ['n1'], learners: ['n1'], addresses: {} },
          { voters: ['\u0000'], learners: [], addresses: {} },
          null,
          7,
        ]);
        if (field === 'extra') meta['extra'] = value;
        else meta[field] = value;
        what.push(`meta.${field} = ${JSON.stringify(value)?.slice(0, 80)}`);
        break;
      }
      case 10: {
        // order broken: two records swapped, or one repeated
        if (recs.length < 2) break;
        const i = rng.nextInt(recs.length - 1);
        if (rng.chance(0.5)) [recs[i], recs[i + 1]] = [recs[i + 1] as StateRecord, recs[i] as StateRecord];
        else recs.splice(i, 0, recs[i] as StateRecord);
        keepOrder = false;
        what.push(`order broken at ${i}`);
        break;
      }
      default: {
        // index/term of the snapshot relative to the sessions inside (a session newer than the snapshot)
        meta['index'] = rng.pick([0, 1, 5, 9, 11, 2 ** 40]);
        what.push(`meta.index = ${String(meta['index'])}`);
        break;
      }
    }
  }
  if (keepOrder) recs = sortUnique(recs);
  const state = encodeRaw(recs);
  const lieCounts = what.some((w) => /meta\.state(Bytes|Keys)/.test(w));
  if (!lieCounts) {
    meta['stateBytes'] = state.length;
    meta['stateKeys'] = recs.length;
  }
  const metaBytes = Buffer.from(JSON.stringify(meta));
  const sums = Buffer.from(`${sha256(metaBytes)}  meta.json\n${sha256(state)}  state.bin\n`);
  const archive = await tarGz(
    [
      { header: { name: 'meta.json' }, body: metaBytes },
      { header: { name: 'state.bin' }, body: state },
      { header: { name: 'SHA256SUMS' }, body: sums },
    ],
    { level: 1 },
  );
  return { archive, what, records: recs };
}
