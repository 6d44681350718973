/**
 * The wire form of an ApplyResult: a leader answers a follower's forwarded
 * write (RaftService.Propose) with what its apply made of it, and the
 * follower answers its client with that. JSON, byte strings as
 * `{"$b": base64}`; opaque to the transport.
 */
import { TXN_ANSWER_BYTES_MAX, type ApplyResult, type TxnOpResult } from './types.js';

/** txnAnswerBytes: the key and value bytes the answer of a transaction's `responses` carries. */
export function txnAnswerBytes(responses: readonly TxnOpResult[]): number {
  let n = 0;
  for (const r of responses) {
    const kv = r.op === 'get' ? r.kv : r.prev;
    if (kv !== null && kv !== undefined) n += kv.key.length + kv.value.length;
  }
  return n;
}

/**
 * encodeApplyResult: the bytes of `r` (decodeApplyResult reads them back
 * equal), except that a transaction's responses holding more than
 * TXN_ANSWER_BYTES_MAX bytes are left out, `answerBytes` telling their size.
 */
export function encodeApplyResult(r: ApplyResult): Uint8Array {
  if (r.ok && r.responses !== undefined) {
    const bytes = txnAnswerBytes(r.responses);
    if (bytes > TXN_ANSWER_BYTES_MAX) {
      const { responses: _left, ...rest } = r;
      r = { ...rest, answerBytes: bytes };
    }
  }
  // The holder's own property, not `v`: JSON.stringify hands a replacer a Buffer's toJSON() form.
  return Buffer.from(
    JSON.stringify(r, function (this: Record<string, unknown>, k: string, v: unknown) {
      const own = this[k];
      return own instanceof Uint8Array ? { $b: Buffer.from(own.buffer, own.byteOffset, own.byteLength).toString('base64') } : v;
    }),
  );
}

/** decodeApplyResult reads what encodeApplyResult wrote. Throws an Error for bytes that are not an ApplyResult. */
export function decodeApplyResult(bytes: Uint8Array): ApplyResult {
  const r: unknown = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'), (_k, v: unknown) =>
    v !== null && typeof v === 'object' && typeof (v as { $b?: unknown }).$b === 'string' ? new Uint8Array(Buffer.from((v as { $b: string }).$b, 'base64')) : v,
  );
  const o = r as Partial<Record<string, unknown>> | null;
  if (o === null || typeof o !== 'object' || typeof o.index !== 'number' || typeof o.ok !== 'boolean') {
    throw new Error('not an encoded apply result');
  }
  if (!o.ok && (typeof o.code !== 'string' || typeof o.error !== 'string')) throw new Error('an encoded failed apply result without code or error');
  return r as ApplyResult;
}
