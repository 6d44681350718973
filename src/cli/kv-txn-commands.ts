/**
 * `kv cas` and `kv txn`: compare-and-swap and transactions (KVService.Txn).
 *
 *   snapcoord kv cas KEY EXPECTED NEW      swap KEY from EXPECTED to NEW
 *   snapcoord kv cas --absent KEY NEW      create KEY as NEW only if it is absent
 *   snapcoord kv txn [FILE]                run the transaction in FILE (JSON; stdin when absent or "-")
 *
 * Both exit 0 when the compares held (the swap was made, the success branch
 * ran) and 1 when they did not; `kv cas` then prints the key's current value
 * on stdout (nothing when absent) and why on stderr. Both carry a request id
 * and retry with it (--retries), so a retried swap is never applied twice.
 * A bad argument or a malformed transaction file exits 2.
 *
 * The JSON of `kv txn` (strings are UTF-8 keys and values):
 *
 *   { "compare": [ { "key": "k", "target": "value", "result": "equal", "value": "a" },
 *                  { "key": "k", "target": "version" | "create" | "mod", "result": "equal" | "notEqual" | "greater" | "less",
 *                    "version" | "createRevision" | "modRevision": 3 } ],
 *     "success": [ { "op": "put", "key": "k", "value": "b", "prevKv": true }, { "op": "get", "key": "k" },
 *                  { "op": "delete", "key": "k", "prevKv": false } ],
 *     "failure": [ ... ] }
 *
 * and it prints { succeeded, revision, replayed, responses: [...] } as JSON.
 */
import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { KvClient } from '../client/kv-client.js';
import type { RetryOptions } from '../client/retry-write.js';
import {
  CompareResult,
  CompareTarget,
  TxnOpType,
  type Compare,
  type KeyValue,
  type TxnOp,
  type TxnOpResponse,
  type TxnRequest,
  type TxnResponse,
} from '../gen/snapcoord/v1/kv.js';
import { CliError, EXIT_CONFIG } from './cli-error.js';
import { cliDial, clientOptions, jsonOut, withClient, type ClientOpts } from './client-options.js';

const enc = new TextEncoder();
const dec = new TextDecoder();
const EMPTY = new Uint8Array(0);

/** TXN_FILE_BYTES_MAX: the largest transaction file `kv txn` reads (4 MiB, a command's own cap). */
export const TXN_FILE_BYTES_MAX = 4 * 1024 * 1024;

const TARGETS: Record<string, CompareTarget> = {
  value: CompareTarget.COMPARE_TARGET_VALUE,
  version: CompareTarget.COMPARE_TARGET_VERSION,
  create: CompareTarget.COMPARE_TARGET_CREATE,
  mod: CompareTarget.COMPARE_TARGET_MOD,
};
const RESULTS: Record<string, CompareResult> = {
  equal: CompareResult.COMPARE_RESULT_EQUAL,
  notEqual: CompareResult.COMPARE_RESULT_NOT_EQUAL,
  greater: CompareResult.COMPARE_RESULT_GREATER,
  less: CompareResult.COMPARE_RESULT_LESS,
  '=': CompareResult.COMPARE_RESULT_EQUAL,
  '!=': CompareResult.COMPARE_RESULT_NOT_EQUAL,
  '>': CompareResult.COMPARE_RESULT_GREATER,
  '<': CompareResult.COMPARE_RESULT_LESS,
};

/** casCompareOf: the compare of a swap from `expected`: KEY's value equals it, or (null) KEY is absent (version 0). */
export function casCompareOf(key: Uint8Array, expected: string | null): Compare {
  const zero = { value: EMPTY, version: 0n, createRevision: 0n, modRevision: 0n };
  return expected === null
    ? { ...zero, key, target: CompareTarget.COMPARE_TARGET_VERSION, result: CompareResult.COMPARE_RESULT_EQUAL }
    : { ...zero, key, target: CompareTarget.COMPARE_TARGET_VALUE, result: CompareResult.COMPARE_RESULT_EQUAL, value: enc.encode(expected) };
}

function bad(message: string): CliError {
  return new CliError(`txn: ${message}`, EXIT_CONFIG);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function str(o: Record<string, unknown>, field: string, where: string, required = true): string {
  const v = o[field];
  if (v === undefined && !required) return '';
  if (typeof v !== 'string') throw bad(`${where}.${field} must be a string`);
  return v;
}

function uint(o: Record<string, unknown>, field: string, where: string): bigint {
  const v = o[field];
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw bad(`${where}.${field} must be a whole number 0..2^53-1`);
  return BigInt(v);
}

function compareOf(c: unknown, where: string): Compare {
  if (!isObject(c)) throw bad(`${where} must be an object`);
  const key = enc.encode(str(c, 'key', where));
  const target = TARGETS[str(c, 'target', where)];
  if (target === undefined) throw bad(`${where}.target must be one of ${Object.keys(TARGETS).join(', ')}`);
  const result = RESULTS[str(c, 'result', where)];
  if (result === undefined) throw bad(`${where}.result must be one of ${Object.keys(RESULTS).join(', ')}`);
  return {
    key,
    target,
    result,
    value: target === CompareTarget.COMPARE_TARGET_VALUE ? enc.encode(str(c, 'value', where)) : EMPTY,
    version: target === CompareTarget.COMPARE_TARGET_VERSION ? uint(c, 'version', where) : 0n,
    createRevision: target === CompareTarget.COMPARE_TARGET_CREATE ? uint(c, 'createRevision', where) : 0n,
    modRevision: target === CompareTarget.COMPARE_TARGET_MOD ? uint(c, 'modRevision', where) : 0n,
  };
}

function opOf(o: unknown, where: string): TxnOp {
  if (!isObject(o)) throw bad(`${where} must be an object`);
  const key = enc.encode(str(o, 'key', where));
  const prevKv = o['prevKv'] === true;
  switch (o['op']) {
    case 'get':
      return { type: TxnOpType.TXN_OP_TYPE_GET, key, value: EMPTY, prevKv: false };
    case 'put':
      return { type: TxnOpType.TXN_OP_TYPE_PUT, key, value: enc.encode(str(o, 'value', where)), prevKv };
    case 'delete':
      return { type: TxnOpType.TXN_OP_TYPE_DELETE, key, value: EMPTY, prevKv };
    default:
      throw bad(`${where}.op must be get, put or delete`);
  }
}

function listOf(o: Record<string, unknown>, field: string): unknown[] {
  const v = o[field];
  if (v === undefined) return [];
  if (!Array.isArray(v)) throw bad(`${field} must be an array`);
  return v;
}

/**
 * parseTxn turns the JSON text of `kv txn` (see the file's doc) into a
 * TxnRequest without ids. The server checks the limits (128 compares, 128
 * ops per branch). Errors: CliError (exit 2) naming the bad field.
 */
export function parseTxn(text: string): Omit<TxnRequest, 'clientId' | 'requestId'> {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw bad(`not JSON: ${(err as Error).message}`);
  }
  if (!isObject(doc)) throw bad('the transaction must be a JSON object with compare, success and failure arrays');
  for (const k of Object.keys(doc)) if (!['compare', 'success', 'failure'].includes(k)) throw bad(`unknown field ${JSON.stringify(k)}`);
  return {
    compare: listOf(doc, 'compare').map((c, i) => compareOf(c, `compare[${i}]`)),
    success: listOf(doc, 'success').map((o, i) => opOf(o, `success[${i}]`)),
    failure: listOf(doc, 'failure').map((o, i) => opOf(o, `failure[${i}]`)),
  };
}

function kvJson(kv: KeyValue | undefined): object | null {
  if (kv === undefined) return null;
  return {
    key: dec.decode(kv.key),
    value: dec.decode(kv.value),
    createRevision: Number(kv.createRevision),
    modRevision: Number(kv.modRevision),
    version: Number(kv.version),
  };
}

function responseJson(r: TxnOpResponse): object {
  switch (r.type) {
    case TxnOpType.TXN_OP_TYPE_GET:
      return { op: 'get', found: r.found, kv: kvJson(r.kv) };
    case TxnOpType.TXN_OP_TYPE_PUT:
      return { op: 'put', prevKv: kvJson(r.prevKv) };
    default:
      return { op: 'delete', deleted: Number(r.deleted), prevKv: kvJson(r.prevKv) };
  }
}

/** txnJson: a TxnResponse as the JSON `kv txn` prints. */
export function txnJson(res: TxnResponse): object {
  return { succeeded: res.succeeded, revision: Number(res.header?.revision ?? 0n), replayed: res.replayed, responses: res.responses.map(responseJson) };
}

async function readInput(file: string | undefined): Promise<string> {
  if (file !== undefined && file !== '-') {
    const buf = await readFile(file).catch((err: Error) => {
      throw new CliError(`txn: cannot read ${file}: ${err.message}`, EXIT_CONFIG);
    });
    if (buf.length > TXN_FILE_BYTES_MAX) throw bad(`${file} is ${buf.length} bytes, more than ${TXN_FILE_BYTES_MAX}`);
    return buf.toString('utf8');
  }
  const chunks: Buffer[] = [];
  let bytes = 0;
  for await (const chunk of process.stdin) {
    const b = chunk as Buffer;
    bytes += b.length;
    if (bytes > TXN_FILE_BYTES_MAX) throw bad(`stdin holds more than ${TXN_FILE_BYTES_MAX} bytes`);
    chunks.push(b);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * addKvTxnCommands adds `cas` and `txn` to the `kv` command; `retry` makes
 * the RetryOptions of --retries (as for put and del).
 */
export function addKvTxnCommands(kv: Command, retry: (opts: { retries?: string }) => RetryOptions, retriesDefault: number): void {
  const kvClient = (endpoint: string): KvClient => new KvClient(endpoint, cliDial());

  clientOptions(
    kv
      .command('cas')
      .argument('<key>')
      .argument('<expected-or-new>', 'EXPECTED (the value KEY must hold), or NEW with --absent')
      .argument('[new]', 'NEW: the value to set')
      .option('--absent', 'swap only if KEY does not exist (then give KEY NEW)')
      .option('--retries <n>', `retries with the same request id, as for put (default ${retriesDefault})`)
      .description('compare-and-swap: set KEY to NEW only if it holds EXPECTED (exit 0); else print its current value and exit 1'),
  ).action(async (key: string, second: string, third: string | undefined, opts: ClientOpts & { retries?: string; absent?: boolean }) => {
    const absent = opts.absent === true;
    if (absent && third !== undefined) throw new CliError('cas: with --absent give KEY NEW (no EXPECTED)', EXIT_CONFIG);
    if (!absent && third === undefined) throw new CliError('cas: give KEY EXPECTED NEW (or --absent KEY NEW to create it)', EXIT_CONFIG);
    const expected = absent ? null : second;
    const next = absent ? second : (third as string);
    const k = enc.encode(key);
    const r = retry(opts);
    const res = await withClient(opts, kvClient, (c, deadlineMs) =>
      c.txnIdempotent(
        {
          compare: [casCompareOf(k, expected)],
          success: [{ type: TxnOpType.TXN_OP_TYPE_PUT, key: k, value: enc.encode(next), prevKv: false }],
          failure: [{ type: TxnOpType.TXN_OP_TYPE_GET, key: k, value: EMPTY, prevKv: false }],
        },
        { deadlineMs, ...r },
      ),
    );
    const revision = res.header?.revision ?? 0n;
    if (res.succeeded) {
      process.stdout.write(`OK (revision ${revision})\n`);
      return;
    }
    const found = res.responses[0];
    if (res.replayed) {
      process.stderr.write(`snapcoord: compare failed (a retry: the first attempt's compare failed at revision ${revision})\n`);
    } else if (found?.found === true && found.kv !== undefined) {
      process.stdout.write(`${dec.decode(found.kv.value)}\n`);
      process.stderr.write(`snapcoord: compare failed: ${JSON.stringify(key)} holds another value (mod revision ${found.kv.modRevision}, version ${found.kv.version})\n`);
    } else {
      process.stderr.write(`snapcoord: compare failed: ${JSON.stringify(key)} is absent\n`);
    }
    process.exitCode = 1;
  });

  clientOptions(
    kv
      .command('txn')
      .argument('[file]', 'the transaction as JSON (default or "-": stdin)')
      .option('--retries <n>', `retries with the same request id, as for put (default ${retriesDefault})`)
      .description('run a transaction (compares, then the success or the failure ops) and print its result as JSON; exit 1 when the compares failed'),
  ).action(async (file: string | undefined, opts: ClientOpts & { retries?: string }) => {
    const req = parseTxn(await readInput(file));
    const r = retry(opts);
    const res = await withClient(opts, kvClient, (c, deadlineMs) => c.txnIdempotent(req, { deadlineMs, ...r }));
    jsonOut(txnJson(res));
    if (!res.succeeded) process.exitCode = 1;
  });
}
