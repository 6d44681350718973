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
 *   session = 0x04 idLen:u8 clientId seq:u64 (put | delete | batch)
 *
 * `session` wraps a command with the client's request id (sessions.ts): the
 * state machine applies it at most once. A command is the whole byte string:
 * trailing bytes are an error. Empty entry data is not a command (the state
 * machine treats it as a no-op). Keys under RESERVED_KEY_PREFIX belong to the
 * store itself: no command may carry one (`reservedKey`).
 */
import { checkSessionStamp, isReservedKey, SessionFormatError, type SessionStamp } from './sessions.js';


/** KEY_BYTES_MAX: the longest key, in bytes (4 KiB). */
export const KEY_BYTES_MAX = 4 * 1024;
/** VALUE_BYTES_MAX: the longest value, in bytes (1 MiB). */
export const VALUE_BYTES_MAX = 1024 * 1024;
/** BATCH_OPS_MAX: the most operations one batch command may carry. */
export const BATCH_OPS_MAX = 10_000;
/** COMMAND_BYTES_MAX: the largest encoded command, in bytes (4 MiB, the gRPC default message cap). */
export const COMMAND_BYTES_MAX = 4 * 1024 * 1024;

const OP_PUT = 0x01;
const OP_DELETE = 0x02;
const OP_BATCH = 0x03;
const OP_SESSION = 0x04;

/** KvPut stores `value` under `key`. */
export interface KvPut {
  readonly op: 'put';
  readonly key: Uint8Array;
  readonly value: Uint8Array;
}

/** KvDelete removes `key` (deleting a missing key is not an error). */
export interface KvDelete {
  readonly op: 'delete';
  readonly key: Uint8Array;
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

export type KvCommand = (KvPut | KvDelete | KvBatch) & KvSessionFields;

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
  | 'badSession';

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

function opBytes(op: KvPut | KvDelete): number {
  return op.op === 'put' ? 1 + 2 + op.key.length + 4 + op.value.length : 1 + 2 + op.key.length;
}

/**
 * encodeCommand returns the bytes of `command`.
 * Errors: KvCommandError `emptyKey`, `keyTooLong`, `valueTooLong`,
 * `reservedKey`, `badSession` (see sessionStampProblem), `tooManyOps`
 * (batch of more than BATCH_OPS_MAX), `tooLarge` (more than
 * COMMAND_BYTES_MAX encoded), `unknownOp` (nested batch or unknown op).
 */
export function encodeCommand(command: KvCommand): Uint8Array {
  const ops = command.op === 'batch' ? command.ops : [command];
  if (command.op === 'batch' && ops.length > BATCH_OPS_MAX) {
    throw new KvCommandError('tooManyOps', `kv command: batch of ${ops.length} ops, more than ${BATCH_OPS_MAX}`);
  }
  const session = command.session;
  if (session !== undefined) checkSession(session);
  const sessionBytes = session === undefined ? 0 : 1 + 1 + session.clientId.length + 8;
  let sizeBytes = sessionBytes + (command.op === 'batch' ? 5 : 0);
  for (const op of ops) {
    if (op.op !== 'put' && op.op !== 'delete') {
      throw new KvCommandError('unknownOp', `kv command: cannot encode op ${String((op as { op: unknown }).op)}`);
    }
    checkKey(op.key);
    if (op.op === 'put') checkValue(op.value);
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
    out[at] = op.op === 'put' ? OP_PUT : OP_DELETE;
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
  readonly #view: DataView;
  at = 0;

  constructor(bytes: Uint8Array) {
    this.#bytes = bytes;
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
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
    return this.#view.getUint8(this.at++);
  }

  u16(what: string): number {
    this.#need(2, what);
    const v = this.#view.getUint16(this.at);
    this.at += 2;
    return v;
  }

  u32(what: string): number {
    this.#need(4, what);
    const v = this.#view.getUint32(this.at);
    this.at += 4;
    return v;
  }

  bytes(n: number, what: string): Uint8Array {
    this.#need(n, what);
    const v = this.#bytes.subarray(this.at, this.at + n);
    this.at += n;
    return v;
  }
}

function readOp(r: Reader, op: number): KvPut | KvDelete {
  const keyBytes = r.u16('key length');
  if (keyBytes === 0) throw new KvCommandError('emptyKey', 'kv command: key is empty');
  if (keyBytes > KEY_BYTES_MAX) {
    throw new KvCommandError('keyTooLong', `kv command: key is ${keyBytes} bytes, more than ${KEY_BYTES_MAX}`);
  }
  const key = r.bytes(keyBytes, 'key');
  checkNotReserved(key);
  if (op === OP_DELETE) return { op: 'delete', key };
  const valueBytes = r.u32('value length');
  if (valueBytes > VALUE_BYTES_MAX) {
    throw new KvCommandError(
      'valueTooLong',
      `kv command: value is ${valueBytes} bytes, more than ${VALUE_BYTES_MAX}`,
    );
  }
  return { op: 'put', key, value: r.bytes(valueBytes, 'value') };
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
 * `badSession`, `tooManyOps`, `tooLarge`.
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
  if (op === OP_PUT || op === OP_DELETE) {
    command = readOp(r, op);
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
      ops.push(readOp(r, sub));
    }
    command = { op: 'batch', ops };
  } else {
    throw unknownOp(op, 0);
  }
  if (r.remaining !== 0) {
    throw new KvCommandError('trailingBytes', `kv command: ${r.remaining} bytes after the end of the command`);
  }
  return session === undefined ? command : { ...command, session };
}
