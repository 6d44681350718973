/**
 * Conversions between the Raft core's messages (src/raft/types.ts) and their
 * protobuf form (proto/snapcoord/v1/raft.proto, generated into src/gen).
 *
 * Indexes, terms and sizes are JavaScript numbers in the core and uint64
 * (bigint in the generated code) on the wire. Encoding refuses a number that
 * is not a non-negative safe integer; decoding refuses a value above 2^53 - 1,
 * an unknown enum, a missing required field or a sender/receiver that is not
 * named. Both throw CodecError. Entry data is never copied on decode: it is a
 * view of the received buffer. Every entry carries a CRC-32 of its index,
 * term, type and data; decoding refuses an entry whose checksum does not match
 * (damaged in transit), so a bad append is rejected whole and sent again.
 * Every AppendEntries request (heartbeats too) also carries a CRC-32 of its
 * header (sender, receiver, term, prev index/term, commit, read round, and
 * the list of entry checksums): a damaged index, term or commit, or a lost
 * entry, is refused the same way.
 */
import { crc32 } from 'node:zlib';

import { BinaryReader, BinaryWriter } from '@bufbuild/protobuf/wire';
import {
  APPEND_ENTRIES_MAX,
  READ_CONTEXT_CHARS_MAX,
  type AppendRequest,
  type AppendResponse,
  type Entry,
  type EntryType,
  type Heartbeat,
  type HeartbeatResponse,
  type Membership,
  type ReadIndexRequest,
  type ReadIndexResponse,
  type SnapshotMeta,
  type SnapshotRequest,
  type SnapshotResponse,
  type TimeoutNow,
  type VoteRequest,
  type VoteResponse,
} from '../raft/types.js';
import * as pb from '../gen/snapcoord/v1/raft.js';
import { FORWARD_PROPOSALS_MAX, type ForwardProposalsParams, type ForwardedOutcome, type ForwardedProposals, type MembershipAnswer, type MembershipQuery, type StageArchiveParams } from './transport.js';
import { MEMBERSHIP_IDS_MAX, MEMBERSHIP_PROOF_CHARS_MAX, MEMBERSHIP_PROOFS_MAX, NODE_ID_CHARS_MAX, membershipOverLimits, wellFormedMembership } from '../raft/membership.js';

/** CodecError: a value cannot be represented on the wire, or a received message is malformed. */
export class CodecError extends Error {
  override readonly name = 'CodecError';
}

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** toU64 converts a core number to a wire uint64. Throws CodecError unless n is a safe integer >= 0. */
export function toU64(n: number, field: string): bigint {
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0) {
    throw new CodecError(`${field}: ${String(n)} is not a non-negative safe integer`);
  }
  return BigInt(n);
}

/** fromU64 converts a wire uint64 to a core number. Throws CodecError above Number.MAX_SAFE_INTEGER. */
export function fromU64(v: bigint, field: string): number {
  if (typeof v !== 'bigint' || v < 0n || v > MAX_SAFE) {
    throw new CodecError(`${field}: ${String(v)} is out of range (0 .. 2^53-1)`);
  }
  return Number(v);
}

/** nodeId: a node id, checked: non-empty, at most NODE_ID_CHARS_MAX characters (CodecError). */
function nodeId(id: string, field: string): string {
  if (typeof id !== 'string' || id === '') throw new CodecError(`${field}: a node id is required`);
  if (id.length > NODE_ID_CHARS_MAX) throw new CodecError(`${field}: a node id of ${id.length} characters, more than NODE_ID_CHARS_MAX (${NODE_ID_CHARS_MAX})`);
  return id;
}

/** readContext: a ReadIndex context of at most READ_CONTEXT_CHARS_MAX characters (CodecError). */
function readContext(context: string): string {
  if (context.length > READ_CONTEXT_CHARS_MAX) throw new CodecError(`context: ${context.length} characters, more than READ_CONTEXT_CHARS_MAX (${READ_CONTEXT_CHARS_MAX})`);
  return context;
}

interface WireHeader {
  from: string;
  to: string;
  term: bigint;
}

interface CoreHeader {
  readonly from: string;
  readonly to: string;
  readonly term: number;
}

function headerToProto(m: CoreHeader): WireHeader {
  return { from: nodeId(m.from, 'from'), to: nodeId(m.to, 'to'), term: toU64(m.term, 'term') };
}

function headerFromProto(p: WireHeader): CoreHeader {
  return { from: nodeId(p.from, 'from'), to: nodeId(p.to, 'to'), term: fromU64(p.term, 'term') };
}

// ---------------------------------------------------------------- shared parts

/** entryTypeToProto maps the core's EntryType to the wire enum. */
export function entryTypeToProto(t: EntryType): pb.EntryType {
  switch (t) {
    case 'normal':
      return pb.EntryType.ENTRY_TYPE_NORMAL;
    case 'conf':
      return pb.EntryType.ENTRY_TYPE_CONF;
    default:
      throw new CodecError(`entry type: unknown ${String(t)}`);
  }
}

/** entryTypeFromProto maps the wire enum to the core's EntryType; UNSPECIFIED and unknown values throw. */
export function entryTypeFromProto(t: pb.EntryType): EntryType {
  switch (t) {
    case pb.EntryType.ENTRY_TYPE_NORMAL:
      return 'normal';
    case pb.EntryType.ENTRY_TYPE_CONF:
      return 'conf';
    default:
      throw new CodecError(`entry type: unknown or unspecified value ${String(t)}`);
  }
}

/**
 * PROTO_ENTRIES_CACHED: the wire forms entryToProto keeps, of the entry
 * objects it encoded last. Kept for as long as their entry lived (the log
 * since the last snapshot), they were ~145 bytes of a leader's heap a write
 * (the BigInts of index and term, the object), up to 50,000 entries of them;
 * the followers are sent an entry within moments of its proposal, and one
 * catching up from further back has its entries encoded again.
 */
export const PROTO_ENTRIES_CACHED = 4096;

/**
 * protoEntries: each log entry's wire form (with its CRC-32), made once per
 * entry object while it is among the PROTO_ENTRIES_CACHED encoded last
 * (protoEntriesRing, oldest out first): the leader sends the same entries to
 * every follower, and again on a retry, without recomputing their checksums.
 * Entries are immutable.
 */
const protoEntries = new WeakMap<Entry, pb.Entry>();
const protoEntriesRing: (Entry | undefined)[] = new Array<Entry | undefined>(PROTO_ENTRIES_CACHED).fill(undefined);
let protoEntriesNext = 0;

/** entryToProto: the entry's wire form, with the CRC-32 of its index, term, type and data (cached per entry object, see protoEntries). */
export function entryToProto(e: Entry): pb.Entry {
  let p = protoEntries.get(e);
  if (p === undefined) {
    p = encodeEntryProto(e);
    const oldest = protoEntriesRing[protoEntriesNext];
    if (oldest !== undefined) protoEntries.delete(oldest);
    protoEntriesRing[protoEntriesNext] = e;
    protoEntriesNext = (protoEntriesNext + 1) % PROTO_ENTRIES_CACHED;
    protoEntries.set(e, p);
  }
  return p;
}

function encodeEntryProto(e: Entry): pb.Entry {
  if (!(e.data instanceof Uint8Array)) throw new CodecError(`entry ${String(e.index)}: data must be a Uint8Array`);
  const index = toU64(e.index, 'entry.index');
  const term = toU64(e.term, 'entry.term');
  const type = entryTypeToProto(e.type);
  return { index, term, type, data: e.data, crc32: entryChecksum(index, term, type, e.data) };
}

/** entryHeader: scratch space for the checksummed header (index, term, type), reused by every call. */
const entryHeader = new DataView(new ArrayBuffer(17));

/** entryChecksum: the CRC-32 of an entry's index and term (big-endian uint64), type byte and data. */
export function entryChecksum(index: bigint, term: bigint, type: pb.EntryType, data: Uint8Array): number {
  entryHeader.setBigUint64(0, index);
  entryHeader.setBigUint64(8, term);
  entryHeader.setUint8(16, type & 0xff);
  const header = crc32(new Uint8Array(entryHeader.buffer));
  // Empty data adds nothing. (zlib.crc32 answers 0, not the running value, for an empty view
  // whose memory pointer is null, as some empty buffers from native code have.)
  return data.byteLength === 0 ? header : crc32(data, header);
}

/** entryFromProto decodes an entry; `data` is a view of the received bytes (no copy). */
export function entryFromProto(p: pb.Entry): Entry {
  const d = p.data;
  const sum = entryChecksum(p.index, p.term, p.type, d);
  if (sum !== p.crc32) {
    throw new CodecError(`entry ${p.index}: checksum ${p.crc32.toString(16)} does not match its content (${sum.toString(16)}): damaged in transit`);
  }
  return {
    index: fromU64(p.index, 'entry.index'),
    term: fromU64(p.term, 'entry.term'),
    type: entryTypeFromProto(p.type),
    // A plain Uint8Array view over the same memory (the decoder may hand a Buffer).
    data: new Uint8Array(d.buffer, d.byteOffset, d.byteLength),
  };
}

export function membershipToProto(m: Membership): pb.Membership {
  const addresses: Record<string, string> = {};
  for (const [id, addr] of Object.entries(m.addresses)) addresses[nodeId(id, 'membership.addresses key')] = addr;
  return {
    voters: m.voters.map((id) => nodeId(id, 'membership.voters')),
    learners: m.learners.map((id) => nodeId(id, 'membership.learners')),
    addresses,
    proofs: [...(m.proofs ?? [])],
  };
}

/** membershipFromProto decodes a membership; one beyond the limits every membership keeps (membershipOverLimits) is refused before it is copied (CodecError). */
export function membershipFromProto(p: pb.Membership | undefined): Membership {
  if (p === undefined) throw new CodecError('membership: required');
  const over = membershipOverLimits(p);
  if (over !== null) throw new CodecError(over);
  const addresses: Record<string, string> = {};
  for (const [id, addr] of Object.entries(p.addresses)) {
    if (typeof addr !== 'string') throw new CodecError(`membership.addresses[${id}]: not a string`);
    addresses[nodeId(id, 'membership.addresses key')] = addr;
  }
  const m = {
    voters: p.voters.map((id) => nodeId(id, 'membership.voters')),
    learners: p.learners.map((id) => nodeId(id, 'membership.learners')),
    addresses,
  };
  return p.proofs.length === 0 ? m : { ...m, proofs: [...p.proofs] };
}

export function snapshotMetaToProto(s: SnapshotMeta): pb.SnapshotMeta {
  return {
    index: toU64(s.index, 'snapshot.index'),
    term: toU64(s.term, 'snapshot.term'),
    membership: membershipToProto(s.membership),
    sizeBytes: toU64(s.sizeBytes, 'snapshot.sizeBytes'),
    digest: s.digest,
  };
}

export function snapshotMetaFromProto(p: pb.SnapshotMeta | undefined): SnapshotMeta {
  if (p === undefined) throw new CodecError('snapshot: required');
  if (!/^([0-9a-f]{64})?$/.test(p.digest)) throw new CodecError('snapshot.digest: not a hex SHA-256');
  return {
    index: fromU64(p.index, 'snapshot.index'),
    term: fromU64(p.term, 'snapshot.term'),
    membership: membershipFromProto(p.membership),
    sizeBytes: fromU64(p.sizeBytes, 'snapshot.sizeBytes'),
    digest: p.digest,
  };
}

// ---------------------------------------------------------------- RequestVote

export function voteRequestToProto(m: VoteRequest): pb.RequestVoteRequest {
  return {
    ...headerToProto(m),
    preVote: m.preVote,
    lastLogIndex: toU64(m.lastLogIndex, 'lastLogIndex'),
    lastLogTerm: toU64(m.lastLogTerm, 'lastLogTerm'),
    transfer: m.transfer,
  };
}

export function voteRequestFromProto(p: pb.RequestVoteRequest): VoteRequest {
  refuseUndecoded(p);
  return {
    type: 'vote',
    ...headerFromProto(p),
    preVote: p.preVote,
    lastLogIndex: fromU64(p.lastLogIndex, 'lastLogIndex'),
    lastLogTerm: fromU64(p.lastLogTerm, 'lastLogTerm'),
    transfer: p.transfer,
  };
}

/** voteResponseToProto encodes a reply, or "no reply" (has_reply false) for null. */
export function voteResponseToProto(m: VoteResponse | null): pb.RequestVoteResponse {
  if (m === null) return pb.RequestVoteResponse.fromPartial({});
  return { ...headerToProto(m), preVote: m.preVote, granted: m.granted, hasReply: true };
}

/** voteResponseFromProto decodes a reply; null when the response carries none. */
export function voteResponseFromProto(p: pb.RequestVoteResponse): VoteResponse | null {
  if (!p.hasReply) return null;
  return { type: 'voteResp', ...headerFromProto(p), preVote: p.preVote, granted: p.granted };
}

// ---------------------------------------------------------------- AppendEntries (stream)

export function appendRequestToProto(m: AppendRequest | Heartbeat): pb.AppendEntriesRequest {
  let req: Omit<pb.AppendEntriesRequest, 'headerCrc32'>;
  if (m.type === 'heartbeat') {
    req = {
      ...headerToProto(m),
      heartbeat: true,
      prevLogIndex: 0n,
      prevLogTerm: 0n,
      entries: [],
      commit: toU64(m.commit, 'commit'),
      readSeq: toU64(m.readSeq, 'readSeq'),
      installFloor: toU64(m.installFloor ?? 0, 'installFloor'),
      snapshotIndex: toU64(m.snapshotIndex ?? 0, 'snapshotIndex'),
      base: undefined,
    };
  } else {
    req = {
      ...headerToProto(m),
      heartbeat: false,
      prevLogIndex: toU64(m.prevLogIndex, 'prevLogIndex'),
      prevLogTerm: toU64(m.prevLogTerm, 'prevLogTerm'),
      entries: m.entries.map((e) => entryToProto(e)),
      commit: toU64(m.commit, 'commit'),
      readSeq: 0n,
      installFloor: 0n,
      snapshotIndex: 0n,
      base: m.base !== undefined ? membershipToProto(m.base) : undefined,
    };
  }
  return { ...req, headerCrc32: appendHeaderChecksum(req) };
}

const textEncoder = new TextEncoder();

/**
 * appendHeaderChecksum: the CRC-32 of an AppendEntries request's header, as
 * raft.proto documents header_crc32: from and to (u32be length + UTF-8),
 * term, heartbeat byte, prev_log_index, prev_log_term, commit, read_seq,
 * install_floor, snapshot_index (u64be), the entry count (u32be), each entry's crc32 (u32be)
 * and, when the request carries a base membership, baseChecksum of it (u32be). `moreEntryCrcs`: the
 * crc32 of entries after `p.entries` that were not decoded (decodeAppendRequest).
 */
export function appendHeaderChecksum(p: Omit<pb.AppendEntriesRequest, 'headerCrc32'>, moreEntryCrcs: readonly number[] = []): number {
  const from = textEncoder.encode(p.from);
  const to = textEncoder.encode(p.to);
  const baseBytes = p.base !== undefined ? 4 : 0;
  const count = p.entries.length + moreEntryCrcs.length;
  const buf = new DataView(new ArrayBuffer(4 + from.length + 4 + to.length + 8 + 1 + 8 * 6 + 4 + 4 * count + baseBytes));
  const bytes = new Uint8Array(buf.buffer);
  let at = 0;
  for (const s of [from, to]) {
    buf.setUint32(at, s.length);
    bytes.set(s, at + 4);
    at += 4 + s.length;
  }
  buf.setBigUint64(at, BigInt.asUintN(64, p.term));
  buf.setUint8(at + 8, p.heartbeat ? 1 : 0);
  at += 9;
  for (const v of [p.prevLogIndex, p.prevLogTerm, p.commit, p.readSeq, p.installFloor, p.snapshotIndex]) {
    buf.setBigUint64(at, BigInt.asUintN(64, v));
    at += 8;
  }
  buf.setUint32(at, count);
  at += 4;
  for (const e of p.entries) {
    buf.setUint32(at, e.crc32 >>> 0);
    at += 4;
  }
  for (const crc of moreEntryCrcs) {
    buf.setUint32(at, crc >>> 0);
    at += 4;
  }
  if (p.base !== undefined) buf.setUint32(at, baseChecksum(p.base));
  return crc32(bytes);
}

/**
 * baseChecksum: the CRC-32 of a membership as raft.proto documents for an
 * append's base: voters, learners (u32be count, then each id as u32be length +
 * UTF-8) and the addresses sorted by id (a count, then id and address alike).
 */
function baseChecksum(m: pb.Membership): number {
  const parts: Uint8Array[] = [];
  const count = (n: number): void => {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, n);
    parts.push(b);
  };
  const text = (s: string): void => {
    const t = textEncoder.encode(s);
    count(t.length);
    parts.push(t);
  };
  for (const ids of [m.voters, m.learners]) {
    count(ids.length);
    for (const id of ids) text(id);
  }
  const addresses = Object.entries(m.addresses).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  count(addresses.length);
  for (const [id, addr] of addresses) {
    text(id);
    text(addr);
  }
  return crc32(Buffer.concat(parts));
}

/**
 * appendRequestFromProto decodes an append or (heartbeat flag) a heartbeat.
 * It carries at most APPEND_ENTRIES_MAX decoded entries (CodecError, refused
 * before any of them is looked at; decodeAppendRequest refuses more than
 * APPEND_ENTRIES_READ_MAX in all and decodes only the first
 * APPEND_ENTRIES_MAX), the header checksum must match (CodecError: damaged
 * in transit), every entry's too, and the entries must follow prev_log_index
 * contiguously.
 */
export function appendRequestFromProto(p: pb.AppendEntriesRequest): AppendRequest | Heartbeat {
  // Before any work per entry: a leader never sends more (RaftNode's sendAppend; an older one 16 times that at most).
  const refused = (p as DecodedAppend)[UNDECODED];
  if (refused !== undefined) throw new CodecError(refused);
  if (p.entries.length > APPEND_ENTRIES_MAX) {
    throw new CodecError(`append: ${p.entries.length} entries decoded, more than APPEND_ENTRIES_MAX (${APPEND_ENTRIES_MAX}) in one append`);
  }
  // Entries past the first APPEND_ENTRIES_MAX of an older leader's append: checked by the header, not decoded.
  const more = (p as DecodedAppend)[MORE_ENTRY_CRCS] ?? [];
  const sum = appendHeaderChecksum(p, more);
  if (sum !== p.headerCrc32) {
    throw new CodecError(
      `append from ${JSON.stringify(p.from.slice(0, 64))}: header checksum ${p.headerCrc32.toString(16)} does not match its content (${sum.toString(16)}): damaged in transit`,
    );
  }
  const header = headerFromProto(p);
  if (p.heartbeat) {
    if (p.entries.length > 0 || more.length > 0) throw new CodecError('heartbeat: carries entries');
    const installFloor = fromU64(p.installFloor, 'installFloor');
    const snapshotIndex = fromU64(p.snapshotIndex, 'snapshotIndex');
    return {
      type: 'heartbeat',
      ...header,
      commit: fromU64(p.commit, 'commit'),
      readSeq: fromU64(p.readSeq, 'readSeq'),
      ...(installFloor > 0 ? { installFloor } : {}),
      ...(snapshotIndex > 0 ? { snapshotIndex } : {}),
    };
  }
  const prevLogIndex = fromU64(p.prevLogIndex, 'prevLogIndex');
  const entries = p.entries.map(entryFromProto);
  entries.forEach((e, i) => {
    if (e.index !== prevLogIndex + 1 + i) {
      throw new CodecError(`append: entry ${i} has index ${e.index}, want ${prevLogIndex + 1 + i} (not contiguous)`);
    }
  });
  if (p.base !== undefined && prevLogIndex !== 0) throw new CodecError(`append: a base membership with prev_log_index ${prevLogIndex} (only with 0)`);
  return {
    type: 'append',
    ...header,
    prevLogIndex,
    prevLogTerm: fromU64(p.prevLogTerm, 'prevLogTerm'),
    entries,
    commit: fromU64(p.commit, 'commit'),
    ...(p.base !== undefined ? { base: membershipFromProto(p.base) } : {}),
  };
}

/**
 * APPEND_ENTRIES_READ_MAX: the most entries an append the peer server takes may carry: 16 x
 * APPEND_ENTRIES_MAX (131,072). A leader of this build sends at most APPEND_ENTRIES_MAX; one of a
 * build before that limit (a rolling upgrade) sliced only by maxAppendBytes (1 MiB of entry data by
 * default: tens of thousands of small writes), and a follower catching up behind it would refuse
 * the same append forever. Of such an append only the first APPEND_ENTRIES_MAX entries are decoded
 * and stepped, as if the leader had sent those alone (a prefix of an append is an append: the
 * follower answers the prefix's last index, commits no further, and the leader goes on from there);
 * the others are read for their crc32 only, which the header checksum covers.
 */
export const APPEND_ENTRIES_READ_MAX = 16 * APPEND_ENTRIES_MAX;

/**
 * UNDECODED: set on a request the peer server's decoder did not decode (decodeAppendRequest,
 * decodeInstallSnapshotRequest: no fields), the reason it was refused, for the *FromProto
 * function to throw (a deserializer's throw reaches the peer as a bare INTERNAL).
 */
const UNDECODED = Symbol('snapcoord.peer.undecoded');
/** MORE_ENTRY_CRCS: set on a request decodeAppendRequest decoded in part: the crc32 of each entry after its first APPEND_ENTRIES_MAX. */
const MORE_ENTRY_CRCS = Symbol('snapcoord.append.moreEntryCrcs');
type DecodedAppend = pb.AppendEntriesRequest & { [UNDECODED]?: string; [MORE_ENTRY_CRCS]?: readonly number[] };
type DecodedInstall = pb.InstallSnapshotRequest & { [UNDECODED]?: string };

/** undecoded: an empty request of `type` marked UNDECODED with `why`. */
function undecoded<T extends object>(type: { fromPartial(o: object): T }, why: string): T & { [UNDECODED]?: string } {
  const request: T & { [UNDECODED]?: string } = type.fromPartial({});
  request[UNDECODED] = why;
  return request;
}

/** MEMBERSHIP_VOTERS_TAG, MEMBERSHIP_LEARNERS_TAG, MEMBERSHIP_ADDRESSES_TAG: Membership's fields 1-3 (length-delimited). */
const MEMBERSHIP_VOTERS_TAG = (1 << 3) | 2;
const MEMBERSHIP_LEARNERS_TAG = (2 << 3) | 2;
const MEMBERSHIP_ADDRESSES_TAG = (3 << 3) | 2;
/** MEMBERSHIP_PROOFS_TAG: Membership's field 4 (length-delimited strings). */
const MEMBERSHIP_PROOFS_TAG = (4 << 3) | 2;

/**
 * membershipBytesOverLimits: why a Membership's bytes hold more voters, learners or addresses
 * entries than membershipOverLimits allows, counted before anything is decoded (one id string per
 * 2 bytes of a 64 MiB message, ~20 times its size in heap), as its generated decoder reads them
 * (a tag 0 or an end-group tag ends it); null when within.
 */
function membershipBytesOverLimits(bytes: Uint8Array): string | null {
  const reader = new BinaryReader(bytes);
  let voters = 0;
  let learners = 0;
  let addresses = 0;
  let proofs = 0;
  let others = 0;
  while (reader.pos < reader.len) {
    const tag = reader.uint32();
    if ((tag & 7) === 4 || tag === 0) break;
    refuseGroup(tag);
    if (tag === MEMBERSHIP_VOTERS_TAG) {
      if (++voters > MEMBERSHIP_IDS_MAX) return `membership.voters: more than MEMBERSHIP_IDS_MAX (${MEMBERSHIP_IDS_MAX}) ids`;
    } else if (tag === MEMBERSHIP_LEARNERS_TAG) {
      if (++learners > MEMBERSHIP_IDS_MAX) return `membership.learners: more than MEMBERSHIP_IDS_MAX (${MEMBERSHIP_IDS_MAX}) ids`;
    } else if (tag === MEMBERSHIP_ADDRESSES_TAG) {
      if (++addresses > 2 * MEMBERSHIP_IDS_MAX) return `membership.addresses: more than 2 * MEMBERSHIP_IDS_MAX (${2 * MEMBERSHIP_IDS_MAX}) entries`;
      // A map entry is a message of its own (key 1, value 2).
      if (fieldsOver(reader.bytes(), NESTED_FIELDS_MAX)) return `membership.addresses: an entry of more than NESTED_FIELDS_MAX (${NESTED_FIELDS_MAX}) fields`;
      continue;
    } else if (tag === MEMBERSHIP_PROOFS_TAG) {
      if (++proofs > MEMBERSHIP_PROOFS_MAX) return `membership.proofs: more than MEMBERSHIP_PROOFS_MAX (${MEMBERSHIP_PROOFS_MAX}) proofs`;
      // Characters are at most as many as UTF-8 bytes: a proof of more bytes than 4 per allowed character is over for sure.
      if (reader.bytes().length > 4 * MEMBERSHIP_PROOF_CHARS_MAX) return `membership.proofs: a proof of more than MEMBERSHIP_PROOF_CHARS_MAX (${MEMBERSHIP_PROOF_CHARS_MAX}) characters`;
      continue;
    } else if (++others > OTHER_FIELDS_MAX) {
      return `membership: more than OTHER_FIELDS_MAX (${OTHER_FIELDS_MAX}) fields besides its ids`;
    }
    reader.skip(tag & 7);
  }
  return null;
}

/**
 * NESTED_FIELDS_MAX: the most fields the peer server's decoders read in one small nested message (an
 * Entry: 5 fields; a map entry: 2), each skipped one by one as the generated decoder does.
 */
export const NESTED_FIELDS_MAX = 16;

/**
 * refuseGroup throws for a group (wire type 3), which no member sends, wherever fields are counted, nested ones too:
 * a group counts as one field, but skipping it walks every field inside it (a 40 MiB group of 21 million 2-byte
 * fields inside one entry took decodeAppendRequest 3.8 s, inside an InstallSnapshot's membership 11.6 s, load ~21).
 */
function refuseGroup(tag: number): void {
  if ((tag & 7) === 3) throw new Error(`a group (field ${tag >>> 3}): no member sends one`);
}

/** fieldsOver: `bytes` (a message) hold more than `max` top-level fields, counted as its generated decoder reads them (a group throws: refuseGroup). */
function fieldsOver(bytes: Uint8Array, max: number): boolean {
  const reader = new BinaryReader(bytes);
  for (let n = 0; reader.pos < reader.len; n++) {
    if (n === max) return true;
    const tag = reader.uint32();
    if ((tag & 7) === 4 || tag === 0) break;
    refuseGroup(tag);
    reader.skip(tag & 7);
  }
  return false;
}

/**
 * OTHER_FIELDS_MAX: the most fields the peer server's decoders read in one message (or nested
 * meta) besides its repeated ones (entries, proposals, a membership's ids, each bounded by its own
 * limit). Honest messages have one of each of their dozen fields; a member's 40 MiB of unknown
 * 2-byte fields took 0.6-0.8 s to skip through (load ~9) before this bound.
 */
export const OTHER_FIELDS_MAX = 256;

/**
 * splitFields walks the top-level fields of a message's bytes as its generated decoder does (tags
 * read as 32-bit; a tag 0 or an end-group tag ends it; a group is refused: no member sends one).
 * Each field whose tag is in `taken` is read by `take` from the reader (its value, whole; it answers
 * why the message is refused, or null to go on); of the others, at most OTHER_FIELDS_MAX, those with a field
 * number up to `fieldMax` are kept, the last of each tag (the generated decoders keep the last of a
 * field that is not repeated, and drop unknown ones), re-encoded for the generated decoder. Returns
 * those bytes, or `{ refused }`.
 */
function splitFields(
  bytes: Uint8Array,
  fieldMax: number,
  taken: ReadonlySet<number>,
  take: (tag: number, reader: BinaryReader) => string | null,
): Uint8Array | { readonly refused: string } {
  const reader = new BinaryReader(bytes);
  const fields = new Map<number, Uint8Array>();
  let others = 0;
  while (reader.pos < reader.len) {
    const tag = reader.uint32();
    if (taken.has(tag)) {
      const refused = take(tag, reader);
      if (refused !== null) return { refused };
      continue;
    }
    if ((tag & 7) === 4 || tag === 0) break;
    refuseGroup(tag);
    if (++others > OTHER_FIELDS_MAX) return { refused: `more than OTHER_FIELDS_MAX (${OTHER_FIELDS_MAX}) fields besides the repeated ones` };
    const value = reader.skip(tag & 7);
    if (tag >>> 3 <= fieldMax) fields.set(tag, value);
  }
  const out = new BinaryWriter();
  for (const [tag, value] of fields) out.uint32(tag).raw(value);
  return out.finish();
}

/** ENTRY_TAG: the tag of AppendEntriesRequest.entries (field 7, length-delimited), as the generated decoder matches it. */
const ENTRY_TAG = (7 << 3) | 2;
/** APPEND_FIELD_MAX: AppendEntriesRequest's highest field number (base, 13); the generated decoder skips any above. */
const APPEND_FIELD_MAX = 13;
/** ENTRY_*_TAG: the tags of Entry's fields as its generated decoder matches them (index, term: varint; type: varint; data: bytes; crc32: fixed32). */
const ENTRY_INDEX_TAG = (1 << 3) | 0;
const ENTRY_TERM_TAG = (2 << 3) | 0;
const ENTRY_TYPE_TAG = (3 << 3) | 0;
const ENTRY_DATA_TAG = (4 << 3) | 2;
const ENTRY_CRC_TAG = (5 << 3) | 5;

/**
 * readEntry reads the Entry of `length` bytes at `reader`'s position in place, as Entry.decode
 * reads one (the last of each field; a tag 0 or an end-group tag ends its fields), and leaves the
 * reader at the entry's end whatever it held (the generated decoder went on from where the entry's
 * fields ended: what followed inside its length was read as the request's own fields). Null when it
 * holds more than NESTED_FIELDS_MAX fields. Throws as the generated decoder does on bytes that are
 * not well formed, and for a field that runs past the entry's length.
 */
function readEntry(reader: BinaryReader, length: number): pb.Entry | null {
  const end = reader.pos + length;
  if (end > reader.len) throw new RangeError('premature EOF');
  const entry: pb.Entry = { index: 0n, term: 0n, type: 0, data: new Uint8Array(0), crc32: 0 };
  for (let fields = 0; reader.pos < end; fields++) {
    if (fields === NESTED_FIELDS_MAX) return null;
    const tag = reader.uint32();
    if (tag === ENTRY_INDEX_TAG) entry.index = reader.uint64() as bigint;
    else if (tag === ENTRY_TERM_TAG) entry.term = reader.uint64() as bigint;
    else if (tag === ENTRY_TYPE_TAG) entry.type = reader.int32() as pb.EntryType;
    else if (tag === ENTRY_DATA_TAG) entry.data = reader.bytes();
    else if (tag === ENTRY_CRC_TAG) entry.crc32 = reader.fixed32();
    else if ((tag & 7) === 4 || tag === 0) break;
    else {
      refuseGroup(tag);
      reader.skip(tag & 7);
    }
  }
  if (reader.pos > end) throw new RangeError('an entry\'s field runs past its length');
  reader.pos = end;
  return entry;
}

/**
 * decodeAppendRequest: the AppendEntries request deserializer of the peer
 * server (RAFT_SERVICE_DEFINITION). It never decodes more than
 * APPEND_ENTRIES_MAX entries: a 50 MiB message of 3.5 million empty entries
 * took 3.3 s and 1 GiB of heap to decode. It walks the top-level fields with
 * the generated code's own reader (tags and lengths read as it reads them,
 * 32-bit: a count of its own read a tag or length with higher bits set
 * otherwise), takes each entry's bytes by its length and decodes each entry
 * within them only (the generated decoder lets an entry end early, at a tag 0,
 * and reads what follows inside its length as the request's own fields). Of
 * the other fields only the last of each tag is decoded, by the generated
 * decoder (which keeps the last of a field that is not repeated); fields it
 * does not know are dropped, as it drops them. Entries past the first
 * APPEND_ENTRIES_MAX (an older leader's append) are read for their crc32 only
 * (noted on the request for the header check; see APPEND_ENTRIES_READ_MAX).
 * A request with more than APPEND_ENTRIES_READ_MAX entries comes back
 * undecoded (no fields, its count noted) for appendRequestFromProto to refuse
 * naming the limit; grpc-js would answer a deserializer's throw with
 * a bare INTERNAL "Error deserializing request". Bytes that are not well formed
 * throw, as the generated decoder's do, and so does a group (wire type 3),
 * which no member sends.
 */
export function decodeAppendRequest(bytes: Uint8Array): pb.AppendEntriesRequest {
  const entries: pb.Entry[] = [];
  const moreCrcs: number[] = [];
  const taken: { base?: Uint8Array } = {};
  const others = splitFields(bytes, APPEND_FIELD_MAX, APPEND_TAKEN_TAGS, (tag, reader) => {
    if (tag === APPEND_BASE_TAG) {
      taken.base = reader.bytes();
      return null;
    }
    if (entries.length + moreCrcs.length === APPEND_ENTRIES_READ_MAX) return `more than APPEND_ENTRIES_READ_MAX (${APPEND_ENTRIES_READ_MAX}) entries in one append`;
    const entry = readEntry(reader, reader.uint32());
    if (entry === null) return `an entry of more than NESTED_FIELDS_MAX (${NESTED_FIELDS_MAX}) fields`;
    if (entries.length < APPEND_ENTRIES_MAX) entries.push(entry);
    else moreCrcs.push(entry.crc32);
    return null;
  });
  if (!(others instanceof Uint8Array)) return undecoded(pb.AppendEntriesRequest, `append: ${others.refused}`);
  const base = taken.base;
  const baseOver = base === undefined ? null : membershipBytesOverLimits(base);
  if (baseOver !== null) return undecoded(pb.AppendEntriesRequest, `append base: ${baseOver}`);
  const request = pb.AppendEntriesRequest.decode(others);
  if (base !== undefined) request.base = pb.Membership.decode(base);
  request.entries = entries;
  if (moreCrcs.length > 0) (request as DecodedAppend)[MORE_ENTRY_CRCS] = moreCrcs;
  return request;
}

/** INSTALL_FIELD_MAX, SNAPSHOT_META_FIELD_MAX: the highest field numbers of InstallSnapshotRequest (snapshot, 4) and SnapshotMeta (digest, 5). */
const INSTALL_FIELD_MAX = 4;
const SNAPSHOT_META_FIELD_MAX = 5;
/** INSTALL_SNAPSHOT_TAG: InstallSnapshotRequest.snapshot (field 4); SNAPSHOT_MEMBERSHIP_TAG: SnapshotMeta.membership (field 3). */
const INSTALL_SNAPSHOT_TAG = (4 << 3) | 2;
const SNAPSHOT_MEMBERSHIP_TAG = (3 << 3) | 2;

/**
 * decodeInstallSnapshotRequest: the InstallSnapshot request deserializer of the peer server
 * (RAFT_SERVICE_DEFINITION): the meta's membership is counted before it is decoded
 * (membershipBytesOverLimits; one beyond comes back undecoded for snapshotRequestFromProto to
 * refuse naming the limit), and each nested message is decoded within its own bytes (as
 * decodeAppendRequest's entries); otherwise what the generated decoder decodes.
 */
export function decodeInstallSnapshotRequest(bytes: Uint8Array): pb.InstallSnapshotRequest {
  const taken: { meta?: Uint8Array } = {};
  const others = splitFields(bytes, INSTALL_FIELD_MAX, INSTALL_TAKEN_TAGS, (_tag, reader) => {
    taken.meta = reader.bytes();
    return null;
  });
  if (!(others instanceof Uint8Array)) return undecoded(pb.InstallSnapshotRequest, `install: ${others.refused}`);
  if (taken.meta === undefined) return pb.InstallSnapshotRequest.decode(others);
  const meta = decodeSnapshotMeta(taken.meta);
  if ('refused' in meta) return undecoded(pb.InstallSnapshotRequest, meta.refused);
  const request = pb.InstallSnapshotRequest.decode(others);
  request.snapshot = meta;
  return request;
}

/**
 * decodeSnapshotMeta: a SnapshotMeta's bytes decoded, its membership counted first (membershipBytesOverLimits) and
 * decoded within its own bytes; `{ refused }` naming the limit it is over.
 */
function decodeSnapshotMeta(bytes: Uint8Array): pb.SnapshotMeta | { readonly refused: string } {
  const taken: { membership?: Uint8Array } = {};
  const others = splitFields(bytes, SNAPSHOT_META_FIELD_MAX, SNAPSHOT_META_TAKEN_TAGS, (_tag, reader) => {
    taken.membership = reader.bytes();
    return null;
  });
  if (!(others instanceof Uint8Array)) return { refused: `snapshot: ${others.refused}` };
  const membership = taken.membership;
  const over = membership === undefined ? null : membershipBytesOverLimits(membership);
  if (over !== null) return { refused: `snapshot: ${over}` };
  const meta = pb.SnapshotMeta.decode(others);
  if (membership !== undefined) meta.membership = pb.Membership.decode(membership);
  return meta;
}

/** GET_MEMBERSHIP_RESPONSE_FIELD_MAX: GetMembershipResponse's highest field number (probe_term, 8); ANSWER_MEMBERSHIP_TAG: its membership (field 3). */
const GET_MEMBERSHIP_RESPONSE_FIELD_MAX = 8;
const ANSWER_MEMBERSHIP_TAG = (3 << 3) | 2;
/** PROPOSE_RESPONSE_FIELD_MAX: ProposeResponse's highest field number (outcome, 6); PROPOSE_OUTCOME_TAG: its outcomes (field 6). */
const PROPOSE_RESPONSE_FIELD_MAX = 6;
const PROPOSE_OUTCOME_TAG = (6 << 3) | 2;

/**
 * decodeGetMembershipResponse: the GetMembership answer deserializer of this node's peer channels
 * (raft-client.ts RAFT_CLIENT_DEFINITION). The answering peer is a member, or a sender no member's
 * channel reaches, asked at the address its own calls advertise (vouches.ts: any CA-signed certificate);
 * its membership is counted before it is decoded (membershipBytesOverLimits), as the peer server counts
 * a request's: a 64 MiB answer of 7.6 million short address keys took 22.9 s of the main thread and
 * 950 MB of heap to decode. One over comes back undecoded, for getMembershipResponseFromProto to refuse
 * naming the limit; otherwise what the generated decoder decodes.
 */
export function decodeGetMembershipResponse(bytes: Uint8Array): pb.GetMembershipResponse {
  const taken: { membership?: Uint8Array } = {};
  const others = splitFields(bytes, GET_MEMBERSHIP_RESPONSE_FIELD_MAX, ANSWER_MEMBERSHIP_TAGS, (_tag, reader) => {
    taken.membership = reader.bytes(); // the last one counts, as the generated decoder keeps the last
    return null;
  });
  if (!(others instanceof Uint8Array)) return undecoded(pb.GetMembershipResponse, `membership answer: ${others.refused}`);
  const membership = taken.membership;
  const over = membership === undefined ? null : membershipBytesOverLimits(membership);
  if (over !== null) return undecoded(pb.GetMembershipResponse, over);
  const answer = pb.GetMembershipResponse.decode(others);
  if (membership !== undefined) answer.membership = pb.Membership.decode(membership);
  return answer;
}

/**
 * decodeProposeResponse: the Propose answer deserializer of this node's peer channels (the leader's
 * answer to a follower's forwarded writes): at most FORWARD_PROPOSALS_MAX outcomes (a Propose carries at
 * most that many), each of at most NESTED_FIELDS_MAX fields, counted before any is decoded. One over
 * comes back undecoded, for proposeResponseFromProto to refuse naming the limit.
 */
export function decodeProposeResponse(bytes: Uint8Array): pb.ProposeResponse {
  const outcomes: Uint8Array[] = [];
  const others = splitFields(bytes, PROPOSE_RESPONSE_FIELD_MAX, PROPOSE_OUTCOME_TAGS, (_tag, reader) => {
    if (outcomes.length === FORWARD_PROPOSALS_MAX) return `outcome: more than FORWARD_PROPOSALS_MAX (${FORWARD_PROPOSALS_MAX}) outcomes`;
    const outcome = reader.bytes();
    if (fieldsOver(outcome, NESTED_FIELDS_MAX)) return `outcome: an outcome of more than NESTED_FIELDS_MAX (${NESTED_FIELDS_MAX}) fields`;
    outcomes.push(outcome);
    return null;
  });
  if (!(others instanceof Uint8Array)) return undecoded(pb.ProposeResponse, others.refused);
  const answer = pb.ProposeResponse.decode(others);
  answer.outcome = outcomes.map((o) => pb.ProposeOutcome.decode(o));
  return answer;
}

/** STATE_IMAGE_FILES_MAX: the most files a state image's manifest may list (the storage's IMAGE_FILES_MAX, which transport may not import). */
export const STATE_IMAGE_FILES_MAX = 65_536;
/** IMAGE_RESPONSE_FIELD_MAX: FetchStateImageResponse's highest field number (snapshot, 5); its files (1), data (4) and snapshot (5) tags. */
const IMAGE_RESPONSE_FIELD_MAX = 5;
const IMAGE_FILES_TAG = (1 << 3) | 2;
const IMAGE_DATA_TAG = (4 << 3) | 2;
const IMAGE_SNAPSHOT_TAG = (5 << 3) | 2;

/**
 * decodeFetchStateImageResponse: the FetchStateImage message deserializer of this node's state image fetches
 * (state-image-fetcher.ts): at most STATE_IMAGE_FILES_MAX files (each of at most NESTED_FIELDS_MAX fields) and the
 * sender's snapshot's membership counted before any is decoded (a 16 MiB message of 8.4 million empty files took
 * 16 s of the main thread and 2 GB of heap), every message of the stream alike (a file list after the manifest is
 * refused only once decoded). The data is taken where it lies (no copy). One over comes back undecoded, for
 * refuseUndecoded to refuse naming the limit.
 */
export function decodeFetchStateImageResponse(bytes: Uint8Array): pb.FetchStateImageResponse {
  const files: Uint8Array[] = [];
  const taken: { data?: Uint8Array; snapshot?: Uint8Array } = {};
  const others = splitFields(bytes, IMAGE_RESPONSE_FIELD_MAX, IMAGE_TAKEN_TAGS, (tag, reader) => {
    if (tag === IMAGE_DATA_TAG) taken.data = reader.bytes();
    else if (tag === IMAGE_SNAPSHOT_TAG) taken.snapshot = reader.bytes();
    else {
      if (files.length === STATE_IMAGE_FILES_MAX) return `files: more than STATE_IMAGE_FILES_MAX (${STATE_IMAGE_FILES_MAX}) files`;
      const file = reader.bytes();
      if (fieldsOver(file, NESTED_FIELDS_MAX)) return `files: a file of more than NESTED_FIELDS_MAX (${NESTED_FIELDS_MAX}) fields`;
      files.push(file);
    }
    return null;
  });
  if (!(others instanceof Uint8Array)) return undecoded(pb.FetchStateImageResponse, `state image: ${others.refused}`);
  const snapshot = taken.snapshot === undefined ? undefined : decodeSnapshotMeta(taken.snapshot);
  if (snapshot !== undefined && 'refused' in snapshot) return undecoded(pb.FetchStateImageResponse, `state image: ${snapshot.refused}`);
  const answer = pb.FetchStateImageResponse.decode(others);
  answer.files = files.map((f) => pb.StateImageFile.decode(f));
  if (taken.data !== undefined) answer.data = taken.data;
  if (snapshot !== undefined) answer.snapshot = snapshot;
  return answer;
}

/**
 * boundedRequestDecoder: the peer server's deserializer of a request of `type` that has no repeated field (RequestVote,
 * TimeoutNow, ReadIndex, ReportSnapshot, StageArchive, GetMembership, FetchSnapshot, FetchStateImage): one of more than
 * OTHER_FIELDS_MAX fields comes back undecoded (refuseUndecoded refuses it naming the limit), as decodeAppendRequest's
 * others do. The generated decoders skipped any number of unknown fields: 64 MiB of them (which a member's gzip-compressed
 * message of ~64 KiB inflates to: grpc-js caps only the inflated size) took 5-6 s of the main thread here (load ~22).
 */
export function boundedRequestDecoder<T extends object>(type: { decode(input: Uint8Array): T; fromPartial(o: object): T }, what: string): (bytes: Buffer) => T {
  return (bytes) => (fieldsOver(bytes, OTHER_FIELDS_MAX) ? undecoded(type, `${what}: more than OTHER_FIELDS_MAX (${OTHER_FIELDS_MAX}) fields`) : type.decode(bytes));
}

/**
 * boundedAnswerDecoder: a peer channel's deserializer of an answer of `type` that has no repeated field (RequestVote,
 * AppendEntries, InstallSnapshot, ReportSnapshot, TimeoutNow, ReadIndex, StageArchive, FetchSnapshot): one of more than
 * OTHER_FIELDS_MAX fields is refused before it is decoded (a CodecError: grpc-js ends the call INTERNAL "Response message
 * parsing error: ..."). A learner's certificate answering the leader's appends with 64 MiB of unknown fields held the
 * leader's main thread 5.5 s per answer (load ~22).
 */
export function boundedAnswerDecoder<T>(type: { decode(input: Uint8Array): T }, what: string): (bytes: Buffer) => T {
  return (bytes) => {
    if (fieldsOver(bytes, OTHER_FIELDS_MAX)) throw new CodecError(`${what}: more than OTHER_FIELDS_MAX (${OTHER_FIELDS_MAX}) fields`);
    return type.decode(bytes);
  };
}

/** refuseUndecoded throws a CodecError naming the limit when `p` is a message one of these decoders left undecoded. */
export function refuseUndecoded(p: object): void {
  const refused = (p as { [UNDECODED]?: string })[UNDECODED];
  if (refused !== undefined) throw new CodecError(refused);
}

const IMAGE_TAKEN_TAGS: ReadonlySet<number> = new Set([IMAGE_FILES_TAG, IMAGE_DATA_TAG, IMAGE_SNAPSHOT_TAG]);
const ANSWER_MEMBERSHIP_TAGS: ReadonlySet<number> = new Set([ANSWER_MEMBERSHIP_TAG]);
const PROPOSE_OUTCOME_TAGS: ReadonlySet<number> = new Set([PROPOSE_OUTCOME_TAG]);

const APPEND_BASE_TAG = (13 << 3) | 2;
const APPEND_TAKEN_TAGS: ReadonlySet<number> = new Set([ENTRY_TAG, APPEND_BASE_TAG]);
const INSTALL_TAKEN_TAGS: ReadonlySet<number> = new Set([INSTALL_SNAPSHOT_TAG]);
const SNAPSHOT_META_TAKEN_TAGS: ReadonlySet<number> = new Set([SNAPSHOT_MEMBERSHIP_TAG]);

export function appendResponseToProto(m: AppendResponse | HeartbeatResponse): pb.AppendEntriesResponse {
  if (m.type === 'heartbeatResp') {
    return {
      ...headerToProto(m),
      heartbeat: true,
      reject: false,
      index: 0n,
      hintIndex: 0n,
      hintTerm: 0n,
      readSeq: toU64(m.readSeq, 'readSeq'),
      installingIndex: toU64(m.installingIndex, 'installingIndex'),
      needsSnapshot: toU64(m.needsSnapshot ?? 0, 'needsSnapshot'),
      applied: toU64(m.applied ?? 0, 'applied'),
      snapshotIndex: toU64(m.snapshotIndex ?? 0, 'snapshotIndex'),
    };
  }
  return {
    ...headerToProto(m),
    heartbeat: false,
    reject: m.reject,
    index: toU64(m.index, 'index'),
    hintIndex: toU64(m.hintIndex, 'hintIndex'),
    hintTerm: toU64(m.hintTerm, 'hintTerm'),
    readSeq: 0n,
    installingIndex: toU64(m.installingIndex ?? 0, 'installingIndex'),
    needsSnapshot: 0n,
    applied: 0n,
    snapshotIndex: 0n,
  };
}

export function appendResponseFromProto(p: pb.AppendEntriesResponse): AppendResponse | HeartbeatResponse {
  const header = headerFromProto(p);
  if (p.heartbeat) {
    const needsSnapshot = fromU64(p.needsSnapshot, 'needsSnapshot');
    const applied = fromU64(p.applied, 'applied');
    const snapshotIndex = fromU64(p.snapshotIndex, 'snapshotIndex');
    return {
      type: 'heartbeatResp',
      ...header,
      readSeq: fromU64(p.readSeq, 'readSeq'),
      installingIndex: fromU64(p.installingIndex, 'installingIndex'),
      ...(needsSnapshot > 0 ? { needsSnapshot } : {}),
      ...(applied > 0 ? { applied } : {}),
      ...(snapshotIndex > 0 ? { snapshotIndex } : {}),
    };
  }
  const installingIndex = fromU64(p.installingIndex, 'installingIndex');
  return {
    type: 'appendResp',
    ...header,
    reject: p.reject,
    index: fromU64(p.index, 'index'),
    hintIndex: fromU64(p.hintIndex, 'hintIndex'),
    hintTerm: fromU64(p.hintTerm, 'hintTerm'),
    ...(installingIndex > 0 ? { installingIndex } : {}),
  };
}

// ---------------------------------------------------------------- InstallSnapshot / ReportSnapshot

export function snapshotRequestToProto(m: SnapshotRequest): pb.InstallSnapshotRequest {
  return { ...headerToProto(m), snapshot: snapshotMetaToProto(m.snapshot) };
}

export function snapshotRequestFromProto(p: pb.InstallSnapshotRequest): SnapshotRequest {
  const refused = (p as DecodedInstall)[UNDECODED];
  if (refused !== undefined) throw new CodecError(refused);
  return { type: 'snapshot', ...headerFromProto(p), snapshot: snapshotMetaFromProto(p.snapshot) };
}

/** installResponseToProto encodes the immediate answer to InstallSnapshot, or "no reply" for null. */
export function installResponseToProto(m: SnapshotResponse | null): pb.InstallSnapshotResponse {
  if (m === null) return pb.InstallSnapshotResponse.fromPartial({});
  return { ...headerToProto(m), hasReply: true, index: toU64(m.index, 'index'), reject: m.reject };
}

export function installResponseFromProto(p: pb.InstallSnapshotResponse): SnapshotResponse | null {
  if (!p.hasReply) return null;
  return { type: 'snapshotResp', ...headerFromProto(p), index: fromU64(p.index, 'index'), reject: p.reject };
}

export function reportSnapshotToProto(m: SnapshotResponse): pb.ReportSnapshotRequest {
  return { ...headerToProto(m), index: toU64(m.index, 'index'), reject: m.reject };
}

export function reportSnapshotFromProto(p: pb.ReportSnapshotRequest): SnapshotResponse {
  refuseUndecoded(p);
  return { type: 'snapshotResp', ...headerFromProto(p), index: fromU64(p.index, 'index'), reject: p.reject };
}

// ---------------------------------------------------------------- TimeoutNow

export function timeoutNowToProto(m: TimeoutNow): pb.TimeoutNowRequest {
  return headerToProto(m);
}

export function timeoutNowFromProto(p: pb.TimeoutNowRequest): TimeoutNow {
  refuseUndecoded(p);
  return { type: 'timeoutNow', ...headerFromProto(p) };
}

// ---------------------------------------------------------------- ReadIndex

export function readIndexRequestToProto(m: ReadIndexRequest): pb.ReadIndexRequest {
  return { ...headerToProto(m), context: m.context };
}

export function readIndexRequestFromProto(p: pb.ReadIndexRequest): ReadIndexRequest {
  refuseUndecoded(p);
  return { type: 'readIndex', ...headerFromProto(p), context: readContext(p.context) };
}

export function readIndexResponseToProto(m: ReadIndexResponse | null): pb.ReadIndexResponse {
  if (m === null) return pb.ReadIndexResponse.fromPartial({});
  return { ...headerToProto(m), context: m.context, index: toU64(m.index, 'index'), reject: m.reject, hasReply: true };
}

export function readIndexResponseFromProto(p: pb.ReadIndexResponse): ReadIndexResponse | null {
  if (!p.hasReply) return null;
  return { type: 'readIndexResp', ...headerFromProto(p), context: readContext(p.context), index: fromU64(p.index, 'index'), reject: p.reject };
}

// ---------------------------------------------------------------- StageArchive

/** stageArchiveRequestToProto encodes a StageArchive request. Throws CodecError. */
export function stageArchiveRequestToProto(p: StageArchiveParams): pb.StageArchiveRequest {
  return {
    ...headerToProto(p),
    index: toU64(p.archive.index, 'index'),
    archiveTerm: toU64(p.archive.term, 'archiveTerm'),
    sizeBytes: toU64(p.archive.sizeBytes, 'sizeBytes'),
    digest: archiveDigest(p.archive.digest),
  };
}

/** stageArchiveRequestFromProto decodes a StageArchive request. Throws CodecError (a digest that is not 64 lowercase hex digits, a size of 0). */
export function stageArchiveRequestFromProto(p: pb.StageArchiveRequest): StageArchiveParams {
  refuseUndecoded(p);
  const sizeBytes = fromU64(p.sizeBytes, 'sizeBytes');
  if (sizeBytes === 0) throw new CodecError('sizeBytes: an archive is never empty');
  return {
    ...headerFromProto(p),
    archive: { index: fromU64(p.index, 'index'), term: fromU64(p.archiveTerm, 'archiveTerm'), sizeBytes, digest: archiveDigest(p.digest) },
  };
}

function archiveDigest(d: string): string {
  if (typeof d !== 'string' || !/^[0-9a-f]{64}$/.test(d)) throw new CodecError('digest: a hex SHA-256 (64 lowercase digits) is required');
  return d;
}

// ---------------------------------------------------------------- GetMembership

export function getMembershipRequestToProto(q: MembershipQuery): pb.GetMembershipRequest {
  return { from: nodeId(q.from, 'from'), to: nodeId(q.to, 'to'), probeIndex: toU64(q.probeIndex ?? 0, 'probeIndex') };
}

export function getMembershipRequestFromProto(p: pb.GetMembershipRequest): MembershipQuery {
  refuseUndecoded(p);
  const probeIndex = fromU64(p.probeIndex, 'probeIndex');
  return { from: nodeId(p.from, 'from'), to: nodeId(p.to, 'to'), ...(probeIndex > 0 ? { probeIndex } : {}) };
}

export function getMembershipResponseToProto(a: MembershipAnswer): pb.GetMembershipResponse {
  return {
    from: nodeId(a.from, 'from'),
    term: toU64(a.term, 'term'),
    membership: membershipToProto(a.membership),
    askerMatchIndex: toU64(a.askerMatchIndex ?? 0, 'askerMatchIndex'),
    askerStarted: a.askerStarted === true,
    membershipIndex: toU64(a.membershipIndex ?? 0, 'membershipIndex'),
    commitIndex: toU64(a.commitIndex ?? 0, 'commitIndex'),
    probeTerm: toU64(a.probeTerm ?? 0, 'probeTerm'),
  };
}

/** getMembershipResponseFromProto decodes an answer; one decodeGetMembershipResponse refused, a configuration with no voter, an empty id or one id twice is refused (CodecError). */
export function getMembershipResponseFromProto(p: pb.GetMembershipResponse): MembershipAnswer {
  refuseUndecoded(p);
  const membership = membershipFromProto(p.membership);
  if (!wellFormedMembership(membership)) throw new CodecError('membership: no voter, an empty id, or an id named twice');
  const askerMatchIndex = fromU64(p.askerMatchIndex, 'askerMatchIndex');
  const membershipIndex = fromU64(p.membershipIndex, 'membershipIndex');
  const commitIndex = fromU64(p.commitIndex, 'commitIndex');
  const probeTerm = fromU64(p.probeTerm, 'probeTerm');
  return {
    from: nodeId(p.from, 'from'),
    term: fromU64(p.term, 'term'),
    membership,
    ...(askerMatchIndex > 0 ? { askerMatchIndex } : {}),
    ...(p.askerStarted ? { askerStarted: true } : {}),
    ...(membershipIndex > 0 ? { membershipIndex } : {}),
    ...(commitIndex > 0 ? { commitIndex } : {}),
    ...(probeTerm > 0 ? { probeTerm } : {}),
  };
}

// ---------------------------------------------------------------- Propose

/** proposeRequestToProto encodes a Propose request. Throws CodecError. */
export function proposeRequestToProto(p: ForwardProposalsParams): pb.ProposeRequest {
  return { ...headerToProto(p), data: [...p.data] };
}

/** PROPOSE_FIELD_MAX: ProposeRequest's highest field number (data, 4); PROPOSE_DATA_TAG: its data (field 4, length-delimited). */
const PROPOSE_FIELD_MAX = 4;
const PROPOSE_DATA_TAG = (4 << 3) | 2;
const PROPOSE_TAKEN_TAGS: ReadonlySet<number> = new Set([PROPOSE_DATA_TAG]);
type DecodedPropose = pb.ProposeRequest & { [UNDECODED]?: string };

/**
 * decodeProposeRequest: the Propose request deserializer of the peer server (RAFT_SERVICE_DEFINITION):
 * the proposals are counted before any is decoded (each a view object: 2-byte proposals in a 64 MiB
 * message were ~30 million of them); more than FORWARD_PROPOSALS_MAX come back undecoded for
 * proposeRequestFromProto to refuse naming the limit. Otherwise what the generated decoder decodes.
 */
export function decodeProposeRequest(bytes: Uint8Array): pb.ProposeRequest {
  const data: Uint8Array[] = [];
  const others = splitFields(bytes, PROPOSE_FIELD_MAX, PROPOSE_TAKEN_TAGS, (_tag, reader) => {
    if (data.length === FORWARD_PROPOSALS_MAX) return `data: more than FORWARD_PROPOSALS_MAX (${FORWARD_PROPOSALS_MAX}) proposals`;
    data.push(reader.bytes());
    return null;
  });
  if (!(others instanceof Uint8Array)) return undecoded(pb.ProposeRequest, others.refused);
  const request = pb.ProposeRequest.decode(others);
  request.data = data;
  return request;
}

/** proposeRequestFromProto decodes a Propose request. Throws CodecError (no proposals, more than FORWARD_PROPOSALS_MAX). */
export function proposeRequestFromProto(p: pb.ProposeRequest): ForwardProposalsParams {
  const refused = (p as DecodedPropose)[UNDECODED];
  if (refused !== undefined) throw new CodecError(refused);
  if (p.data.length === 0) throw new CodecError('data: no proposals');
  if (p.data.length > FORWARD_PROPOSALS_MAX) throw new CodecError(`data: ${p.data.length} proposals, more than ${FORWARD_PROPOSALS_MAX}`);
  return { ...headerFromProto(p), data: p.data };
}

/** proposeResponseToProto encodes the leader's answer to Propose. Throws CodecError. */
export function proposeResponseToProto(from: string, r: ForwardedProposals): pb.ProposeResponse {
  return {
    from: nodeId(from, 'from'),
    term: toU64(r.term, 'term'),
    refusedCode: r.refused?.code ?? '',
    refusedMessage: r.refused?.message ?? '',
    outcome: r.outcomes.map((o) =>
      'result' in o ? { result: o.result, errorCode: '', errorMessage: '' } : { result: new Uint8Array(0), errorCode: o.error.code, errorMessage: o.error.message },
    ),
  };
}

/** proposeResponseFromProto decodes the leader's answer to Propose. Throws CodecError (more outcomes than `sent`, a refusal without a code, an outcome with neither result nor error). */
export function proposeResponseFromProto(p: pb.ProposeResponse, sent: number): ForwardedProposals {
  refuseUndecoded(p);
  if (p.outcome.length > sent) throw new CodecError(`outcome: ${p.outcome.length} outcomes for ${sent} proposals`);
  if (p.outcome.length < sent && p.refusedCode === '') throw new CodecError(`refused_code: ${sent - p.outcome.length} proposals neither appended nor refused`);
  const outcomes = p.outcome.map((o, i): ForwardedOutcome => {
    if (o.errorCode !== '') return { error: { code: o.errorCode, message: o.errorMessage } };
    if (o.result.length === 0) throw new CodecError(`outcome[${i}]: neither a result nor an error`);
    return { result: o.result };
  });
  const term = fromU64(p.term, 'term');
  return p.refusedCode === '' ? { term, outcomes } : { term, outcomes, refused: { code: p.refusedCode, message: p.refusedMessage } };
}
