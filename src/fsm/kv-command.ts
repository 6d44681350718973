/**
 * KV commands: what a `normal` Raft entry carries for the replicated
 * key-value store, and their compact binary encoding (keys and values are
 * bytes; no JSON anywhere).
 *
 * Wire format (all integers big-endian):
 *
 *   put     = 0x01 keyLen:u16 key valueLen:u32 value
 *   delete  = 0x02 keyLen:u16 key
 *   batch   = 0x03 count:u32 (put | delete){count}      -- no nested batches
 *   session = 0x04 idLen:u8 clientId seq:u64 (put | delete | batch | txn)
 *   putPrev = 0x05 keyLen:u16 key valueLen:u32 value    -- a put whose result carries the pair it replaced
 *   delPrev = 0x06 keyLen:u16 key                       -- a delete whose result carries the pair it removed
 *   get     = 0x07 keyLen:u16 key                       -- only inside a txn
 *   txn     = 0x08 n:u16 compare{n} s:u16 txnOp{s} f:u16 txnOp{f}
 *   compare = target:u8 (1 value, 2 version, 3 create, 4 mod) result:u8 (1 =, 2 !=, 3 >, 4 <)
 *             keyLen:u16 key (valueLen:u32 value | operand:u64)
 *   txnOp   = put | delete | putPrev | delPrev | get
 *
 * A txn (etcd's Txn) runs its success ops when every compare holds, else its
 * failure ops, all in its one entry; limits TXN_COMPARES_MAX and TXN_OPS_MAX.
 *
 * `session` wraps a command with the client's request id (sessions.ts): the
 * state machine applies it at most once. A command is the whole byte string:
 * trailing bytes are an error. Empty entry data is not a command (the state
 * machine treats it as a no-op). Keys under RESERVED_KEY_PREFIX belong to the
 * store itself: no command may carry one (`reservedKey`).
 */
import { checkSessionStamp, isReservedKey, SessionFormatError, type SessionStamp } from './sessions.js';
import { readU32At } from './u64.js';


/** KEY_BYTES_MAX: the longest key, in bytes (4 KiB). */
export const KEY_BYTES_MAX = 4 * 1024;
/** VALUE_BYTES_MAX: the longest value, in bytes (1 MiB). */
export const VALUE_BYTES_MAX = 1024 * 1024;
/** BATCH_OPS_MAX: the most operations one batch command may carry. */
export const BATCH_OPS_MAX = 10_000;
/** COMMAND_BYTES_MAX: the largest encoded command, in bytes (4 MiB, the gRPC default message cap). */
export const COMMAND_BYTES_MAX = 4 * 1024 * 1024;
/** TXN_COMPARES_MAX: the most compares one transaction may carry. */
export const TXN_COMPARES_MAX = 128;
/** TXN_OPS_MAX: the most ops one branch (success or failure) of a transaction may carry. */
export const TXN_OPS_MAX = 128;

const OP_PUT = 0x01;
const OP_DELETE = 0x02;
const OP_BATCH = 0x03;
const OP_SESSION = 0x04;
const OP_PUT_PREV = 0x05;
const OP_DELETE_PREV = 0x06;
const OP_GET = 0x07;
const OP_TXN = 0x08;
const TARGET_CODES = { value: 1, version: 2, create: 3, mod: 4 } as const;
const RESULT_CODES = { equal: 1, notEqual: 2, greater: 3, less: 4 } as const;
const TARGETS = ['value', 'version', 'create', 'mod'] as const;
const RESULTS = ['equal', 'notEqual', 'greater', 'less'] as const;

/** KvPut stores `value` under `key`; with `prevKv` its result carries the pair it replaced (ignored inside a batch). */
export interface KvPut {
  readonly op: 'put';
  readonly key: Uint8Array;
  readonly value: Uint8Array;
  readonly prevKv?: boolean;
}

/** KvDelete removes `key` (deleting a missing key is not an error); with `prevKv` its result carries the pair it removed (ignored inside a batch). */
export interface KvDelete {
  readonly op: 'delete';
  readonly key: Uint8Array;
  readonly prevKv?: boolean;
}

/** KvGet reads `key` inside a transaction (as the ops before it left it). */
export interface KvGet {
  readonly op: 'get';
  readonly key: Uint8Array;
}

/** KvTxnOp is one op of a transaction branch. */
export type KvTxnOp = KvPut | KvDelete | KvGet;

/** CompareTarget: what of a key a compare looks at (etcd's VALUE, VERSION, CREATE, MOD). */
export type CompareTarget = (typeof TARGETS)[number];
/** CompareResult: the relation the key's target must stand in to the operand. */
export type CompareResult = (typeof RESULTS)[number];

/**
 * KvCompare holds when `key`'s target stands in relation `result` to the
 * operand: `value` (bytes, compared bytewise) for target `value`, `operand`
 * (a non-negative safe integer) for the others.
 */
export type KvCompare =
  | { readonly key: Uint8Array; readonly target: 'value'; readonly result: CompareResult; readonly value: Uint8Array }
  | {
      readonly key: Uint8Array;
      readonly target: 'version' | 'create' | 'mod';
      readonly result: CompareResult;
      readonly operand: number;
    };

/** KvTxn runs `success` when every compare holds (an empty list holds), else `failure`, atomically in one entry. */
export interface KvTxn {
  readonly op: 'txn';
  readonly compares: readonly KvCompare[];
  readonly success: readonly KvTxnOp[];
  readonly failure: readonly KvTxnOp[];
}

/** KvBatch applies its operations in order, all in one entry (atomically). */
export interface KvBatch {
  readonly op: 'batch';
  readonly ops: readonly (KvPut | KvDelete)[];
}

/** KvSessionFields: a command may carry the request id of the client that sent it (applied at most once). */
export interface KvSessionFields {
  readonly session?: SessionStamp;
}

export type KvCommand = (KvPut | KvDelete | KvBatch | KvTxn) & KvSessionFields;

export type KvCommandErrorCode =
  | 'truncated'
  | 'trailingBytes'
  | 'unknownOp'
  | 'emptyKey'
  | 'keyTooLong'
  | 'valueTooLong'
  | 'tooManyOps'
  | 'tooLarge'
  | 'reservedKey'
  | 'badSession'
  | 'badCompare';

/**
 * KvCommandError reports a command that cannot be encoded (the caller's
 * input breaks a limit: map it to INVALID_ARGUMENT) or decoded (malformed
 * bytes). `code` is stable; `message` says what and where.
 */
export class KvCommandError extends Error {
  override readonly name = 'KvCommandError';
  readonly code: KvCommandErrorCode;

  constructor(code: KvCommandErrorCode, message: string) {
    super(message);
    this.code = code;
  }
}

function checkKey(key: Uint8Array): void {
  if (key.length === 0) throw new KvCommandError('emptyKey', 'kv command: key is empty');
  if (key.length > KEY_BYTES_MAX) {
    throw new KvCommandError('keyTooLong', `kv command: key is ${key.length} bytes, more than ${KEY_BYTES_MAX}`);
  }
  checkNotReserved(key);
}

function checkNotReserved(key: Uint8Array): void {
  if (isReservedKey(key)) {
    throw new KvCommandError('reservedKey', 'kv command: keys starting with "\\x00snapcoord/" are reserved for the store');
  }
}

function checkSession(session: SessionStamp): void {
  try {
    checkSessionStamp(session);
  } catch (err) {
    if (err instanceof SessionFormatError) throw new KvCommandError('badSession', `kv command: ${err.message}`);
    throw err;
  }
}

function checkValue(value: Uint8Array): void {
  if (value.length > VALUE_BYTES_MAX) {
    throw new KvCommandError(
      'valueTooLong',
      `kv command: value is ${value.length} bytes, more than ${VALUE_BYTES_MAX}`,
    );
  }
}

function opBytes(op: KvTxnOp): number {
  return op.op === 'put' ? 1 + 2 + op.key.length + 4 + op.value.length : 1 + 2 + op.key.length;
}

function checkOp(op: KvTxnOp, allowGet: boolean): void {
  if (op.op !== 'put' && op.op !== 'delete' && !(allowGet && op.op === 'get')) {
    throw new KvCommandError('unknownOp', `kv command: cannot encode op ${String((op as { op: unknown }).op)}${allowGet ? '' : ' here'}`);
  }
  checkKey(op.key);
  if (op.op === 'put') checkValue(op.value);
}

function checkCompare(c: KvCompare): number {
  if (!TARGETS.includes(c.target) || !RESULTS.includes(c.result)) {
    throw new KvCommandError('badCompare', `kv command: compare target ${String(c.target)} / result ${String(c.result)} is unknown`);
  }
  checkKey(c.key);
  if (c.target === 'value') {
    checkValue(c.value);
    return 2 + 2 + c.key.length + 4 + c.value.length;
  }
  if (!Number.isSafeInteger(c.operand) || c.operand < 0) {
    throw new KvCommandError('badCompare', `kv command: compare operand must be 0..2^53-1, got ${String(c.operand)}`);
  }
  return 2 + 2 + c.key.length + 8;
}

function checkTxnCounts(compares: number, success: number, failure: number): void {
  if (compares > TXN_COMPARES_MAX) {
    throw new KvCommandError('tooManyOps', `kv command: transaction of ${compares} compares, more than ${TXN_COMPARES_MAX}`);
  }
  for (const [n, branch] of [[success, 'success'], [failure, 'failure']] as const) {
    if (n > TXN_OPS_MAX) throw new KvCommandError('tooManyOps', `kv command: transaction ${branch} branch of ${n} ops, more than ${TXN_OPS_MAX}`);
  }
}

function opCode(op: KvTxnOp, inBatch: boolean): number {
  if (op.op === 'get') return OP_GET;
  if (op.op === 'put') return op.prevKv === true && !inBatch ? OP_PUT_PREV : OP_PUT;
  return op.prevKv === true && !inBatch ? OP_DELETE_PREV : OP_DELETE;
}

/** Writer fills a command's bytes. */
class Writer {
  readonly out: Uint8Array;
  readonly view: DataView;
  at = 0;

  constructor(sizeBytes: number) {
    this.out = new Uint8Array(sizeBytes);
    this.view = new DataView(this.out.buffer);
  }

  u8(v: number): void {
    this.out[this.at++] = v;
  }

  u16(v: number): void {
    this.view.setUint16(this.at, v);
    this.at += 2;
  }

  u32(v: number): void {
    this.view.setUint32(this.at, v);
    this.at += 4;
  }

  u64(v: number): void {
    this.view.setUint32(this.at, Math.floor(v / 2 ** 32));
    this.view.setUint32(this.at + 4, v % 2 ** 32);
    this.at += 8;
  }

  bytes(b: Uint8Array): void {
    this.out.set(b, this.at);
    this.at += b.length;
  }

  op(op: KvTxnOp, inBatch: boolean): void {
    this.u8(opCode(op, inBatch));
    this.u16(op.key.length);
    this.bytes(op.key);
    if (op.op === 'put') {
      this.u32(op.value.length);
      this.bytes(op.value);
    }
  }
}

function encodeTxn(command: KvTxn, session: SessionStamp | undefined): Uint8Array {
  checkTxnCounts(command.compares.length, command.success.length, command.failure.length);
  let sizeBytes = (session === undefined ? 0 : 1 + 1 + session.clientId.length + 8) + 1 + 2 * 3;
  for (const c of command.compares) sizeBytes += checkCompare(c);
  for (const op of [...command.success, ...command.failure]) {
    checkOp(op, true);
    sizeBytes += opBytes(op);
  }
  if (sizeBytes > COMMAND_BYTES_MAX) {
    throw new KvCommandError('tooLarge', `kv command: ${sizeBytes} bytes encoded, more than ${COMMAND_BYTES_MAX}`);
  }
  const w = new Writer(sizeBytes);
  if (session !== undefined) {
    w.u8(OP_SESSION);
    w.u8(session.clientId.length);
    w.bytes(Buffer.from(session.clientId, 'latin1'));
    w.u64(session.seq);
  }
  w.u8(OP_TXN);
  w.u16(command.compares.length);
  for (const c of command.compares) {
    w.u8(TARGET_CODES[c.target]);
    w.u8(RESULT_CODES[c.result]);
    w.u16(c.key.length);
    w.bytes(c.key);
    if (c.target === 'value') {
      w.u32(c.value.length);
      w.bytes(c.value);
    } else {
      w.u64(c.operand);
    }
  }
  for (const branch of [command.success, command.failure]) {
    w.u16(branch.length);
    for (const op of branch) w.op(op, false);
  }
  return w.out;
}

/**
 * encodeCommand returns the bytes of `command`.
 * Errors: KvCommandError `emptyKey`, `keyTooLong`, `valueTooLong`,
 * `reservedKey`, `badSession` (see sessionStampProblem), `tooManyOps`
 * (batch of more than BATCH_OPS_MAX, transaction beyond TXN_COMPARES_MAX
 * or TXN_OPS_MAX), `badCompare` (unknown target or result, operand not
 * 0..2^53-1), `tooLarge` (more than COMMAND_BYTES_MAX encoded), `unknownOp`
 * (nested batch, a get outside a transaction, or unknown op).
 */
export function encodeCommand(command: KvCommand): Uint8Array {
  const session = command.session;
  if (session !== undefined) checkSession(session);
  if (command.op === 'txn') return encodeTxn(command, session);
  const ops: readonly KvTxnOp[] = command.op === 'batch' ? command.ops : [command];
  if (command.op === 'batch' && ops.length > BATCH_OPS_MAX) {
    throw new KvCommandError('tooManyOps', `kv command: batch of ${ops.length} ops, more than ${BATCH_OPS_MAX}`);
  }
  const sessionBytes = session === undefined ? 0 : 1 + 1 + session.clientId.length + 8;
  let sizeBytes = sessionBytes + (command.op === 'batch' ? 5 : 0);
  for (const op of ops) {
    checkOp(op, false);
    sizeBytes += opBytes(op);
  }
  if (sizeBytes > COMMAND_BYTES_MAX) {
    throw new KvCommandError('tooLarge', `kv command: ${sizeBytes} bytes encoded, more than ${COMMAND_BYTES_MAX}`);
  }
  const out = new Uint8Array(sizeBytes);
  const view = new DataView(out.buffer);
  let at = 0;
  if (session !== undefined) {
    out[0] = OP_SESSION;
    out[1] = session.clientId.length;
    out.set(Buffer.from(session.clientId, 'latin1'), 2);
    at = 2 + session.clientId.length;
    view.setUint32(at, Math.floor(session.seq / 2 ** 32));
    view.setUint32(at + 4, session.seq % 2 ** 32);
    at += 8;
  }
  if (command.op === 'batch') {
    out[at] = OP_BATCH;
    view.setUint32(at + 1, ops.length);
    at += 5;
  }
  for (const op of ops) {
    out[at] = opCode(op, command.op === 'batch');
    view.setUint16(at + 1, op.key.length);
    out.set(op.key, at + 3);
    at += 3 + op.key.length;
    if (op.op === 'put') {
      view.setUint32(at, op.value.length);
      out.set(op.value, at + 4);
      at += 4 + op.value.length;
    }
  }
  return out;
}

class Reader {
  readonly #bytes: Uint8Array;
  at = 0;

  constructor(bytes: Uint8Array) {
    this.#bytes = bytes; // read big-endian by hand: a DataView per command decoded was ~0.5% of a simulator seed
  }

  get remaining(): number {
    return this.#bytes.length - this.at;
  }

  #need(n: number, what: string): void {
    if (this.remaining < n) {
      throw new KvCommandError(
        'truncated',
        `kv command: truncated at byte ${this.at}: ${what} needs ${n} bytes, ${this.remaining} left`,
      );
    }
  }

  u8(what: string): number {
    this.#need(1, what);
    return this.#bytes[this.at++] as number;
  }

  u16(what: string): number {
    this.#need(2, what);
    const v = ((this.#bytes[this.at] as number) << 8) | (this.#bytes[this.at + 1] as number);
    this.at += 2;
    return v;
  }

  u32(what: string): number {
    this.#need(4, what);
    const v = readU32At(this.#bytes, this.at);
    this.at += 4;
    return v;
  }

  u64(what: string): number {
    const v = this.u32(what) * 2 ** 32 + this.u32(what);
    if (!Number.isSafeInteger(v)) throw new KvCommandError('badCompare', `kv command: ${what} ${v} is above 2^53-1`);
    return v;
  }

  bytes(n: number, what: string): Uint8Array {
    this.#need(n, what);
    const v = this.#bytes.subarray(this.at, this.at + n);
    this.at += n;
    return v;
  }
}

function readKey(r: Reader): Uint8Array {
  const keyBytes = r.u16('key length');
  if (keyBytes === 0) throw new KvCommandError('emptyKey', 'kv command: key is empty');
  if (keyBytes > KEY_BYTES_MAX) {
    throw new KvCommandError('keyTooLong', `kv command: key is ${keyBytes} bytes, more than ${KEY_BYTES_MAX}`);
  }
  const key = r.bytes(keyBytes, 'key');
  checkNotReserved(key);
  return key;
}

function readValue(r: Reader): Uint8Array {
  const valueBytes = r.u32('value length');
  if (valueBytes > VALUE_BYTES_MAX) {
    throw new KvCommandError(
      'valueTooLong',
      `kv command: value is ${valueBytes} bytes, more than ${VALUE_BYTES_MAX}`,
    );
  }
  return r.bytes(valueBytes, 'value');
}

function readOp(r: Reader, op: number): KvTxnOp {
  const key = readKey(r);
  if (op === OP_GET) return { op: 'get', key };
  if (op === OP_DELETE) return { op: 'delete', key };
  if (op === OP_DELETE_PREV) return { op: 'delete', key, prevKv: true };
  const value = readValue(r);
  return op === OP_PUT_PREV ? { op: 'put', key, value, prevKv: true } : { op: 'put', key, value };
}

function readTxn(r: Reader): KvTxn {
  const compareCount = r.u16('compare count');
  if (compareCount > TXN_COMPARES_MAX) checkTxnCounts(compareCount, 0, 0);
  const compares: KvCompare[] = [];
  for (let i = 0; i < compareCount; i++) {
    const target = TARGETS[r.u8('compare target') - 1];
    const result = RESULTS[r.u8('compare result') - 1];
    if (target === undefined || result === undefined) throw new KvCommandError('badCompare', `kv command: compare ${i} has an unknown target or result`);
    const key = readKey(r);
    compares.push(target === 'value' ? { key, target, result, value: readValue(r) } : { key, target, result, operand: r.u64('compare operand') });
  }
  const branches: KvTxnOp[][] = [];
  for (const name of ['success', 'failure']) {
    const count = r.u16(`${name} count`);
    if (count > TXN_OPS_MAX) checkTxnCounts(0, count, 0);
    const ops: KvTxnOp[] = [];
    for (let i = 0; i < count; i++) {
      const at = r.at;
      const sub = r.u8(`${name} op`);
      if (sub !== OP_PUT && sub !== OP_DELETE && sub !== OP_PUT_PREV && sub !== OP_DELETE_PREV && sub !== OP_GET) throw unknownOp(sub, at);
      ops.push(readOp(r, sub));
    }
    branches.push(ops);
  }
  return { op: 'txn', compares, success: branches[0] ?? [], failure: branches[1] ?? [] };
}

function unknownOp(op: number, at: number): KvCommandError {
  return new KvCommandError('unknownOp', `kv command: unknown op 0x${op.toString(16).padStart(2, '0')} at byte ${at}`);
}

/**
 * decodeCommand parses the bytes made by encodeCommand. Keys and values of
 * the result are views into `bytes` (no copy): copy them to keep them
 * beyond the life of `bytes`.
 * Errors: KvCommandError `truncated` (including empty input), `trailingBytes`,
 * `unknownOp`, `emptyKey`, `keyTooLong`, `valueTooLong`, `reservedKey`,
 * `badSession`, `badCompare`, `tooManyOps`, `tooLarge`.
 */
export function decodeCommand(bytes: Uint8Array): KvCommand {
  if (bytes.length > COMMAND_BYTES_MAX) {
    throw new KvCommandError('tooLarge', `kv command: ${bytes.length} bytes, more than ${COMMAND_BYTES_MAX}`);
  }
  const r = new Reader(bytes);
  let op = r.u8('op');
  let session: SessionStamp | undefined;
  if (op === OP_SESSION) {
    const idBytes = r.u8('client id length');
    const clientId = Buffer.from(r.bytes(idBytes, 'client id')).toString('latin1');
    const seq = r.u32('request id') * 2 ** 32 + r.u32('request id');
    session = { clientId, seq };
    checkSession(session);
    op = r.u8('op');
  }
  let command: KvCommand;
  if (op === OP_PUT || op === OP_DELETE || op === OP_PUT_PREV || op === OP_DELETE_PREV) {
    command = readOp(r, op) as KvPut | KvDelete;
  } else if (op === OP_TXN) {
    command = readTxn(r);
  } else if (op === OP_BATCH) {
    const count = r.u32('batch count');
    if (count > BATCH_OPS_MAX) {
      throw new KvCommandError('tooManyOps', `kv command: batch of ${count} ops, more than ${BATCH_OPS_MAX}`);
    }
    const ops: (KvPut | KvDelete)[] = [];
    for (let i = 0; i < count; i++) {
      const at = r.at;
      const sub = r.u8('batch op');
      if (sub !== OP_PUT && sub !== OP_DELETE) throw unknownOp(sub, at);
      ops.push(readOp(r, sub) as KvPut | KvDelete);
    }
    command = { op: 'batch', ops };
  } else {
    throw unknownOp(op, 0);
  }
  if (r.remaining !== 0) {
    throw new KvCommandError('trailingBytes', `kv command: ${r.remaining} bytes after the end of the command`);
  }
  if (session === undefined) return command;
  // command is this call's own object: the stamp goes on it (last, as a spread would put it) without a copy.
  (command as { session?: SessionStamp }).session = session;
  return command;
}
