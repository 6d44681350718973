/**
 * meta.json and SHA256SUMS of the snapshot archive: the types, a strict schema
 * check for meta.json (every field, no unknown ones), a deterministic
 * serialisation, and the SHA256SUMS codec ("<hex>  <name>\n" per member).
 */
import type { Membership } from '../raft/types.js';
import { MEMBERSHIP_IDS_MAX, MEMBERSHIP_PROOF_CHARS_MAX, MEMBERSHIP_PROOFS_MAX, MEMBER_ADDRESS_CHARS_MAX, NODE_ID_CHARS_MAX } from '../raft/membership.js';
import { ArchiveError } from './errors.js';

export const ARCHIVE_FORMAT_VERSION = 1;
export const META_NAME = 'meta.json';
export const STATE_NAME = 'state.bin';
export const SUMS_NAME = 'SHA256SUMS';
/** ARCHIVE_MEMBERS: the archive's entries, in their required order. */
export const ARCHIVE_MEMBERS = [META_NAME, STATE_NAME, SUMS_NAME] as const;
export type ArchiveMemberName = (typeof ARCHIVE_MEMBERS)[number];

/** META_BYTES_MAX: the largest meta.json accepted (64 KiB). */
export const META_BYTES_MAX = 64 * 1024;
/** SUMS_BYTES_MAX: the largest SHA256SUMS accepted (4 KiB). */
export const SUMS_BYTES_MAX = 4 * 1024;

const ID_CHARS_MAX = 128;
const VERSION_CHARS_MAX = 64;
/** UTF8_STRICT decodes meta.json (fatal: invalid UTF-8 throws); one instance (it keeps no state between whole decodes). */
const UTF8_STRICT = new TextDecoder('utf-8', { fatal: true });

/**
 * ArchiveMeta is meta.json. `id` names the snapshot (a safe file name),
 * `index`/`term` the last log entry it includes, `membership` the
 * configuration as of `index`, `stateBytes`/`stateKeys` the size and record
 * count of state.bin, `createdAt` an ISO-8601 UTC time with milliseconds.
 */
export interface ArchiveMeta {
  readonly formatVersion: 1;
  readonly id: string;
  readonly index: number;
  readonly term: number;
  readonly membership: Membership;
  readonly stateBytes: number;
  readonly stateKeys: number;
  readonly createdAt: string;
  readonly snapcoordVersion: string;
}

const META_KEYS = [
  'formatVersion',
  'id',
  'index',
  'term',
  'membership',
  'stateBytes',
  'stateKeys',
  'createdAt',
  'snapcoordVersion',
] as const;

/** SNAPSHOT_ID_PATTERN: what a snapshot id may look like (a safe single path component). */
export const SNAPSHOT_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function fail(message: string): never {
  throw new ArchiveError('bad-meta', `meta.json: ${message}`);
}

function checkCount(obj: Record<string, unknown>, key: string): number {
  const v = obj[key];
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    fail(`${key} must be a whole number >= 0 (got ${JSON.stringify(v)})`);
  }
  return v;
}

function checkString(v: unknown, what: string, maxChars: number): string {
  if (typeof v !== 'string' || v.length === 0 || v.length > maxChars) {
    fail(`${what} must be a non-empty string of at most ${maxChars} characters`);
  }
  // C0, DEL and C1 (U+0080-U+009F): a terminal that takes 8-bit controls reads U+009B as CSI, and U+0085 (NEL)
  // breaks a log line; none belongs in an id, a version, an address or a proof. Before, C1 passed. Also the
  // line and paragraph separators (U+2028, U+2029: a new line to many viewers) and the bidirectional embeddings,
  // overrides and isolates (U+202A-U+202E, U+2066-U+2069), which reorder what an operator reads ("Trojan Source").
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f-\u009f\u2028-\u202e\u2066-\u2069]/.test(v)) fail(`${what} contains control characters`);
  return v;
}

function checkIdList(v: unknown, what: string): string[] {
  if (!Array.isArray(v)) fail(`${what} must be an array`);
  if (v.length > MEMBERSHIP_IDS_MAX) fail(`${what} has more than ${MEMBERSHIP_IDS_MAX} members`);
  const ids = v.map((x, i) => checkString(x, `${what}[${i}]`, NODE_ID_CHARS_MAX));
  if (new Set(ids).size !== ids.length) fail(`${what} lists a node twice`);
  return ids;
}

/** isIsoTimestamp: whether s is exactly what Date.prototype.toISOString produces. */
export function isIsoTimestamp(s: string): boolean {
  // A pure function of s: the last timestamp that passed is not checked again (a snapshot's createdAt is
  // checked as it is built, written, parsed back and listed).
  if (s === lastIsoTimestamp) return true;
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/.test(s)) return false;
  const ms = Date.parse(s);
  if (!(Number.isFinite(ms) && new Date(ms).toISOString() === s)) return false;
  lastIsoTimestamp = s;
  return true;
}

let lastIsoTimestamp: string | null = null;

/** checkMembership validates a Membership value (used for meta.json and for callers' input). */
/**
 * setOwn makes `value` an own enumerable, writable, configurable data property `key` of `obj`, whatever
 * the key: plain assignment does exactly that (and costs a fraction of a defineProperty), except for
 * `__proto__`, which Object.prototype's setter would take (it sets the prototype instead).
 */
export function setOwn(obj: Record<string, string>, key: string, value: string): void {
  if (key === '__proto__') Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
  else obj[key] = value;
}

export function checkMembership(v: unknown): Membership {
  if (!isRecord(v)) fail('membership must be an object');
  const extra = Object.keys(v).filter((k) => k !== 'voters' && k !== 'learners' && k !== 'addresses' && k !== 'proofs');
  if (extra.length > 0) fail(`membership has unknown field(s) ${extra.join(', ')}`);
  const voters = checkIdList(v['voters'], 'membership.voters');
  const learners = checkIdList(v['learners'], 'membership.learners');
  if (learners.some((l) => voters.includes(l))) fail('membership: a node is both voter and learner');
  const addressesRaw = v['addresses'];
  if (!isRecord(addressesRaw)) fail('membership.addresses must be an object');
  const entries = Object.entries(addressesRaw);
  if (entries.length > MEMBERSHIP_IDS_MAX * 2) fail(`membership.addresses has more than ${MEMBERSHIP_IDS_MAX * 2} entries`);
  const addresses: Record<string, string> = {};
  for (const [node, addr] of entries) {
    checkString(node, 'a membership.addresses key', NODE_ID_CHARS_MAX);
    setOwn(addresses, node, checkString(addr, `membership.addresses[${JSON.stringify(node)}]`, MEMBER_ADDRESS_CHARS_MAX));
  }
  const proofsRaw = v['proofs'];
  if (proofsRaw === undefined) return { voters, learners, addresses };
  if (!Array.isArray(proofsRaw)) fail('membership.proofs must be an array');
  if (proofsRaw.length > MEMBERSHIP_PROOFS_MAX) fail(`membership.proofs has more than ${MEMBERSHIP_PROOFS_MAX} entries`);
  const proofs = proofsRaw.map((p, i) => checkString(p, `membership.proofs[${i}]`, MEMBERSHIP_PROOF_CHARS_MAX));
  return proofs.length === 0 ? { voters, learners, addresses } : { voters, learners, addresses, proofs };
}

/**
 * validateArchiveMeta checks a parsed meta.json against the schema: exactly
 * the fields of ArchiveMeta, formatVersion 1, counts that are whole numbers,
 * a safe id, an ISO timestamp, a well-formed membership, and stateKeys no more
 * than stateBytes allows (8 bytes per record at least). Throws ArchiveError
 * `bad-meta` naming the field.
 */
export function validateArchiveMeta(v: unknown): ArchiveMeta {
  if (!isRecord(v)) fail('must be a JSON object');
  const unknown = Object.keys(v).filter((k) => !(META_KEYS as readonly string[]).includes(k));
  if (unknown.length > 0) fail(`unknown field(s) ${unknown.join(', ')}`);
  const missing = META_KEYS.filter((k) => !(k in v));
  if (missing.length > 0) fail(`missing field(s) ${missing.join(', ')}`);
  if (v['formatVersion'] !== ARCHIVE_FORMAT_VERSION) {
    fail(`formatVersion ${JSON.stringify(v['formatVersion'])} is not supported (this build reads ${ARCHIVE_FORMAT_VERSION})`);
  }
  const id = checkString(v['id'], 'id', ID_CHARS_MAX);
  if (!SNAPSHOT_ID_PATTERN.test(id)) fail(`id ${JSON.stringify(id)} is not a safe name ([A-Za-z0-9._-], not starting with '.' or '-')`);
  const index = checkCount(v, 'index');
  const term = checkCount(v, 'term');
  const stateBytes = checkCount(v, 'stateBytes');
  const stateKeys = checkCount(v, 'stateKeys');
  if (stateKeys * 8 > stateBytes) fail(`stateKeys ${stateKeys} cannot fit in stateBytes ${stateBytes}`);
  const createdAt = checkString(v['createdAt'], 'createdAt', 32);
  if (!isIsoTimestamp(createdAt)) fail(`createdAt ${JSON.stringify(createdAt)} is not an ISO-8601 UTC timestamp`);
  const snapcoordVersion = checkString(v['snapcoordVersion'], 'snapcoordVersion', VERSION_CHARS_MAX);
  const membership = checkMembership(v['membership']);
  return { formatVersion: 1, id, index, term, membership, stateBytes, stateKeys, createdAt, snapcoordVersion };
}

/** parseArchiveMeta decodes and validates meta.json bytes (ArchiveError `bad-meta`). */
export function parseArchiveMeta(bytes: Uint8Array): ArchiveMeta {
  let parsed: unknown;
  try {
    parsed = JSON.parse(UTF8_STRICT.decode(bytes));
  } catch (err) {
    throw new ArchiveError('bad-meta', `meta.json: not valid UTF-8 JSON (${(err as Error).message})`);
  }
  return validateArchiveMeta(parsed);
}

/** serializeArchiveMeta: meta.json bytes, fields in a fixed order, two-space indent, trailing newline. */
export function serializeArchiveMeta(meta: ArchiveMeta): Buffer {
  const ordered = {
    formatVersion: meta.formatVersion,
    id: meta.id,
    index: meta.index,
    term: meta.term,
    membership: {
      voters: [...meta.membership.voters],
      learners: [...meta.membership.learners],
      addresses: { ...meta.membership.addresses },
    },
    stateBytes: meta.stateBytes,
    stateKeys: meta.stateKeys,
    createdAt: meta.createdAt,
    snapcoordVersion: meta.snapcoordVersion,
  };
  return Buffer.from(`${JSON.stringify(ordered, null, 2)}\n`, 'utf8');
}

/** formatSums: SHA256SUMS bytes in sha256sum's format, meta.json then state.bin. */
export function formatSums(metaSha256: string, stateSha256: string): Buffer {
  return Buffer.from(`${metaSha256}  ${META_NAME}\n${stateSha256}  ${STATE_NAME}\n`, 'ascii');
}

/**
 * parseSums reads SHA256SUMS: one "<64 hex>  <name>\n" (or " *<name>") line per
 * member; meta.json and state.bin must both appear, once. Throws ArchiveError
 * `bad-sums` (malformed, unknown or repeated name) or `missing-hash`.
 */
export function parseSums(bytes: Uint8Array): { meta: string; state: string } {
  const text = Buffer.from(bytes).toString('latin1');
  if (!text.endsWith('\n')) throw new ArchiveError('bad-sums', 'SHA256SUMS does not end with a newline');
  const found = new Map<string, string>();
  for (const [i, line] of text.slice(0, -1).split('\n').entries()) {
    const m = /^([0-9a-fA-F]{64}) [ *](.+)$/.exec(line);
    if (m === null) throw new ArchiveError('bad-sums', `SHA256SUMS line ${i + 1} is malformed: ${JSON.stringify(line.slice(0, 100))}`);
    const name = m[2]!;
    if (name !== META_NAME && name !== STATE_NAME) {
      throw new ArchiveError('bad-sums', `SHA256SUMS line ${i + 1} names ${JSON.stringify(name.slice(0, 100))}, which is not a member`);
    }
    if (found.has(name)) throw new ArchiveError('bad-sums', `SHA256SUMS lists ${name} twice`);
    found.set(name, m[1]!.toLowerCase());
  }
  const meta = found.get(META_NAME);
  const state = found.get(STATE_NAME);
  if (meta === undefined) throw new ArchiveError('missing-hash', `SHA256SUMS has no line for ${META_NAME}`);
  if (state === undefined) throw new ArchiveError('missing-hash', `SHA256SUMS has no line for ${STATE_NAME}`);
  return { meta, state };
}
