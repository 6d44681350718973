/**
 * What every client command shares: where it connects (--endpoint, env
 * SNAPCOORD_ENDPOINT, default 127.0.0.1:7001), its per-call deadline
 * (--timeout-ms), and the one mapping from a failed gRPC call to a one-line
 * CliError (exit 1). Bad option values are CliErrors with exit code 2.
 */
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type { Command } from 'commander';
import { isLoopback, parseHostPort } from '../client/address.js';
import { dialWithCa, type ClientDial } from '../client/dial.js';
import { checkMemberId, checkTlsFiles } from '../tls/index.js';
import { CliError, EXIT_CONFIG } from './cli-error.js';
import { KEY_FILE_EMPTY, keyFileExposure, readKeyFileLine } from './key-file.js';

/** API_KEY_ENV / API_KEY_FILE_ENV / CACERT_ENV: the environment twins of --api-key, --api-key-file and --cacert. */
export const API_KEY_ENV = 'SNAPCOORD_API_KEY';
export const API_KEY_FILE_ENV = 'SNAPCOORD_API_KEY_FILE';
export const CACERT_ENV = 'SNAPCOORD_CACERT';
/** EXPECT_MEMBER_ENV: the environment twin of --expect-member. */
export const EXPECT_MEMBER_ENV = 'SNAPCOORD_EXPECT_MEMBER';
/** CLIENT_CERT_ENV / CLIENT_KEY_ENV: the environment twins of --client-cert and --client-key. */
export const CLIENT_CERT_ENV = 'SNAPCOORD_CLIENT_CERT';
export const CLIENT_KEY_ENV = 'SNAPCOORD_CLIENT_KEY';
/** LOCAL_API_KEY_FILE / LOCAL_CA_FILE: what `npm start` (snapcoord local) writes, found from the working directory. */
export const LOCAL_API_KEY_FILE = 'data/api-key';
export const LOCAL_CA_FILE = 'data/tls/ca.pem';

/** ENDPOINT_ENV / DEFAULT_ENDPOINT: where client commands connect. */
export const ENDPOINT_ENV = 'SNAPCOORD_ENDPOINT';
export const DEFAULT_ENDPOINT = '127.0.0.1:7001';
/** DEFAULT_CALL_DEADLINE_MS: the deadline of one unary call without --timeout-ms. */
export const DEFAULT_CALL_DEADLINE_MS = 10_000;

/** ClientOpts: the options clientOptions() adds, as commander hands them over. */
export interface ClientOpts {
  endpoint?: string;
  timeoutMs?: string;
  apiKey?: string;
  apiKeyFile?: string;
  cacert?: string;
  expectMember?: string;
  clientCert?: string;
  clientKey?: string;
  plaintext?: boolean;
}

/**
 * dialOf: how client commands reach the API.
 * - The key: --api-key, else the first line of --api-key-file FILE (out of
 *   /proc/*\/cmdline), else SNAPCOORD_API_KEY, else the first line of
 *   SNAPCOORD_API_KEY_FILE, else of ./data/api-key when it exists (what
 *   `npm start` made), else none. A key file others may read is warned
 *   about (`warn`, stderr by default).
 * - TLS: --plaintext turns it off; else --cacert FILE, else SNAPCOORD_CACERT
 *   (an empty value: plaintext), else ./data/tls/ca.pem when it exists (the
 *   local cluster's CA), else plaintext. The server's certificate must then be
 *   signed by that CA, name the endpoint's host and be a server certificate
 *   (extended key usage serverAuth); with --expect-member ID (env
 *   SNAPCOORD_EXPECT_MEMBER) it must also name member ID.
 * Errors: CliError exit 2 for an unreadable or invalid CA file, an
 * unreadable or empty key file, both --api-key and --api-key-file, an
 * invalid member id, or --expect-member without TLS.
 */
export function dialOf(opts: ClientOpts, env: NodeJS.ProcessEnv = process.env, cwd = process.cwd(), warn = (m: string): void => void process.stderr.write(`snapcoord: warning: ${m}\n`)): ClientDial {
  if (opts.apiKey !== undefined && opts.apiKeyFile !== undefined) throw new CliError('api-key and api-key-file: give one of them', EXIT_CONFIG);
  const fromFile = (what: string, file: string): string => {
    const path = resolve(cwd, file);
    let key: string;
    try {
      key = readKeyFileLine(path);
    } catch (err) {
      // ./data/api-key with a blank first line: no key (as before); a file the operator named must hold one.
      if (what === 'key file' && (err as Error).message === KEY_FILE_EMPTY) return '';
      throw new CliError(`${what} ${file}: ${(err as Error).message}`, EXIT_CONFIG);
    }
    const exposed = keyFileExposure(path);
    if (exposed !== null) warn(exposed);
    return key;
  };
  const localKey = resolve(cwd, LOCAL_API_KEY_FILE);
  let apiKey: string;
  if (opts.apiKey !== undefined) apiKey = opts.apiKey;
  else if (opts.apiKeyFile !== undefined) apiKey = fromFile('api-key-file', opts.apiKeyFile);
  else if (env[API_KEY_ENV] !== undefined) apiKey = env[API_KEY_ENV];
  else if (env[API_KEY_FILE_ENV] !== undefined && env[API_KEY_FILE_ENV] !== '') apiKey = fromFile(API_KEY_FILE_ENV, env[API_KEY_FILE_ENV]);
  else apiKey = existsSync(localKey) ? fromFile('key file', LOCAL_API_KEY_FILE) : '';
  const expectMember = opts.expectMember ?? (env[EXPECT_MEMBER_ENV] !== undefined && env[EXPECT_MEMBER_ENV] !== '' ? env[EXPECT_MEMBER_ENV] : undefined);
  if (expectMember !== undefined) {
    try {
      checkMemberId(expectMember);
    } catch (err) {
      throw new CliError(`expect-member: ${(err as Error).message}`, EXIT_CONFIG);
    }
  }
  const clientCert = opts.clientCert ?? env[CLIENT_CERT_ENV] ?? '';
  const clientKey = opts.clientKey ?? env[CLIENT_KEY_ENV] ?? '';
  if ((clientCert === '') !== (clientKey === '')) throw new CliError('client-cert and client-key go together: give both (mutual TLS), or neither', EXIT_CONFIG);
  if (clientCert !== '' && (opts.plaintext === true || (opts.cacert ?? env[CACERT_ENV] ?? (existsSync(resolve(cwd, LOCAL_CA_FILE)) ? 'local' : '')) === '')) {
    throw new CliError('client-cert: a client certificate is presented over TLS only: give --cacert FILE', EXIT_CONFIG);
  }
  const noTls = (why: string): CliError => new CliError(`expect-member: a member's certificate is checked over TLS only, and ${why}: give --cacert FILE`, EXIT_CONFIG);
  if (opts.plaintext === true) {
    if (expectMember !== undefined) throw noTls('--plaintext turns it off');
    return { apiKey };
  }
  const localCa = resolve(cwd, LOCAL_CA_FILE);
  const ca = opts.cacert ?? env[CACERT_ENV] ?? (existsSync(localCa) ? localCa : '');
  if (ca === '') {
    if (expectMember !== undefined) throw noTls('no CA is given');
    // Without a CA the call would go out in plaintext: never with a key to another machine unless asked.
    const refusal = plaintextKeyRefusal(endpointOf(opts), parseHostPort(endpointOf(opts))?.host ?? '', apiKey, false, "give --cacert FILE (the CA of the node's TLS certificate)");
    if (refusal !== null) throw refusal;
    return { apiKey };
  }
  const client = clientCert !== '' ? { certFile: resolve(cwd, clientCert), keyFile: resolve(cwd, clientKey) } : undefined;
  if (client !== undefined) {
    try {
      checkTlsFiles({ ...client, checkChain: false });
    } catch (err) {
      throw new CliError(`client-cert: ${(err as Error).message}`, EXIT_CONFIG);
    }
  }
  try {
    return dialWithCa(resolve(cwd, ca), apiKey, expectMember, client);
  } catch (err) {
    throw new CliError(`cacert: ${(err as Error).message}`, EXIT_CONFIG);
  }
}

/**
 * plaintextKeyRefusal: the CliError (exit 2) refusing to send `apiKey`
 * without TLS to `target` (on `host`, another machine), naming `remedy`; null
 * when that is fine: no key, a loopback host, or `plaintext` (--plaintext:
 * the operator means it). The message never holds the key.
 */
export function plaintextKeyRefusal(target: string, host: string, apiKey: string, plaintext: boolean, remedy: string): CliError | null {
  if (apiKey === '' || plaintext || isLoopback(host)) return null;
  return new CliError(`refusing to send the API key in plaintext to ${target}: ${remedy}, or --plaintext if you mean it`, EXIT_CONFIG);
}

let currentDial: ClientDial | null = null;
let currentPlaintext = false;

/** configureDial sets how this process's client commands connect (main.ts calls it once, before the command runs). */
export function configureDial(opts: ClientOpts): void {
  currentDial = dialOf(opts);
  currentPlaintext = opts.plaintext === true;
}

/** cliDial: what configureDial set (plaintext, no key, when it was not called). */
export function cliDial(): ClientDial {
  return currentDial ?? {};
}

/** cliPlaintext: whether --plaintext was given (configureDial). */
export function cliPlaintext(): boolean {
  return currentPlaintext;
}

/**
 * otherAddressRefusal: the CliError refusing to dial `address` (another
 * node than the endpoint, e.g. a member `cluster status` asks) with `dial`
 * when that would send its API key in plaintext to another machine: the
 * endpoint's rule (dialOf) applied to that address. null when `dial` is TLS,
 * has no key, `address` is loopback, or `plaintext` (--plaintext was given).
 */
export function otherAddressRefusal(address: string, dial: ClientDial = cliDial(), plaintext = cliPlaintext()): CliError | null {
  if (dial.credentials !== undefined) return null;
  return plaintextKeyRefusal(address, parseHostPort(address)?.host ?? '', dial.apiKey ?? '', plaintext, "give --cacert FILE (the CA of the nodes' TLS certificates)");
}

/** endpointOf: --endpoint, else SNAPCOORD_ENDPOINT, else 127.0.0.1:7001; exit 2 when not host:port. */
export function endpointOf(opts: ClientOpts): string {
  const ep = opts.endpoint ?? process.env[ENDPOINT_ENV] ?? DEFAULT_ENDPOINT;
  if (parseHostPort(ep) === null) throw new CliError(`endpoint: "${ep}" is not host:port`, EXIT_CONFIG);
  return ep;
}

/** positiveInt parses a whole number >= min for option `name`; exit 2 otherwise. */
export function positiveInt(name: string, text: string, min = 1, max = Number.MAX_SAFE_INTEGER): number {
  const n = /^\d{1,15}$/.test(text.trim()) ? Number(text.trim()) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `${min} or more` : `${min}..${max}`;
    throw new CliError(`${name}: "${text}" is not a whole number (${range})`, EXIT_CONFIG);
  }
  return n;
}

/** deadlineOf: --timeout-ms as a number, DEFAULT_CALL_DEADLINE_MS when absent. */
export function deadlineOf(opts: ClientOpts, dflt = DEFAULT_CALL_DEADLINE_MS): number {
  return opts.timeoutMs === undefined ? dflt : positiveInt('timeout-ms', opts.timeoutMs);
}

/**
 * oneLine: a remote string (an error's details, a peer's refusal) as one line safe for a terminal: whitespace
 * runs become one space, and any other control character (an escape sequence's ESC, C1 controls) a visible
 * \\xNN, so a peer's message can neither break a table nor drive the operator's terminal.
 */
export function oneLine(s: string): string {
  return s
    .replace(/\s+/g, ' ')
    // eslint-disable-next-line no-control-regex -- matching control characters is the point
    .replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`)
    .trim();
}

/**
 * visible: a remote string (a server's answer, an archive's text) as text that cannot drive a terminal: every
 * control character (C0 with tab and newline, DEL, C1: an escape sequence's ESC or CSI, BEL) becomes a visible
 * \\xNN; nothing else changes. For what is printed as it is, not on one line (oneLine also folds whitespace).
 */
export function visible(s: string): string {
  // eslint-disable-next-line no-control-regex -- matching control characters is the point
  return s.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

/**
 * PLAINTEXT_PEER_TLS_ERROR: what OpenSSL says when a TLS client's handshake
 * is answered in plaintext (a node started without --cert answers the
 * ClientHello with an HTTP/2 frame, which is no TLS record).
 */
const PLAINTEXT_PEER_TLS_ERROR = /wrong version number|WRONG_VERSION_NUMBER|packet length too long/i;

/**
 * CERTIFICATE_REFUSED_ERROR: a TLS handshake this client ended over the
 * server's certificate (another CA, a name or member it does not hold, not a
 * server certificate, expired): a node answered, so "is a node running" misleads.
 */
const CERTIFICATE_REFUSED_ERROR = /certificate|altnames/i;

/** plaintextPeerHint: the hint of an UNAVAILABLE whose TLS handshake met a plaintext server. */
function plaintextPeerHint(endpoint: string): string {
  return ` (the node at ${endpoint} answered without TLS: it was started without --cert/--key; give it TLS, or call it with --plaintext if it listens on loopback)`;
}

/**
 * callError turns a gRPC failure into a one-line CliError (exit 1):
 * "<CODE>: <details>", with a hint for UNAVAILABLE. The original error is
 * kept as `cause` (printed with --debug).
 */
export function callError(err: unknown, endpoint: string): CliError {
  if (err instanceof CliError) return err;
  const e = err as Partial<grpc.ServiceError>;
  let out: CliError;
  if (typeof e.code === 'number') {
    const name = grpc.status[e.code] ?? String(e.code);
    // grpc-js's connection errors end in an empty "Resolution note:"; keep the line short.
    const details = oneLine(e.details ?? e.message ?? '')
      .replace(/\s*Resolution note:\s*$/, '')
      .replace(/Last error: Error: /, 'last error: ');
    const hint =
      e.code !== grpc.status.UNAVAILABLE
        ? ''
        : PLAINTEXT_PEER_TLS_ERROR.test(details)
          ? plaintextPeerHint(endpoint)
          : CERTIFICATE_REFUSED_ERROR.test(details)
            ? ` (a node answers at ${endpoint}, but its TLS certificate was refused: check --cacert and --expect-member)`
            : ` (is a node running at ${endpoint}?)`;
    out = new CliError(`${name}: ${details}${hint}`);
  } else {
    out = new CliError(oneLine(err instanceof Error ? err.message : String(err)));
  }
  out.cause = err;
  return out;
}

/** Closable: anything with close(), e.g. a grpc-js client. */
interface Closable {
  close(): void;
}

/**
 * withClient opens a client on the endpoint, runs `f`, maps its failure with
 * callError, and closes the client whatever happens.
 */
export async function withClient<C extends Closable, T>(
  opts: ClientOpts,
  make: (endpoint: string) => C,
  f: (client: C, deadlineMs: number, endpoint: string) => Promise<T>,
): Promise<T> {
  const endpoint = endpointOf(opts);
  const deadlineMs = deadlineOf(opts);
  const client = make(endpoint);
  try {
    return await f(client, deadlineMs, endpoint);
  } catch (err) {
    throw callError(err, endpoint);
  } finally {
    client.close();
  }
}

/** clientOptions adds --endpoint, --timeout-ms, --api-key, --api-key-file, --cacert, --expect-member, --client-cert, --client-key and --plaintext to `cmd`. */
export function clientOptions(cmd: Command, timeoutHelp = `deadline of each call (default ${DEFAULT_CALL_DEADLINE_MS})`): Command {
  return cmd
    .option('--endpoint <host:port>', `node to talk to (env ${ENDPOINT_ENV}, default ${DEFAULT_ENDPOINT})`)
    .option('--timeout-ms <ms>', timeoutHelp)
    .option('--api-key <key>', `API key sent as authorization: Bearer (env ${API_KEY_ENV}, else ./${LOCAL_API_KEY_FILE} when present; prefer --api-key-file or the env: a flag shows in /proc/*/cmdline)`)
    .option('--api-key-file <file>', `read the API key from this file's first line (env ${API_KEY_FILE_ENV})`)
    .option('--cacert <file>', `CA certificate that signs the node's TLS certificate (env ${CACERT_ENV}, else ./${LOCAL_CA_FILE} when present, else plaintext)`)
    .option('--expect-member <id>', `the node's TLS certificate must name this member (urn:snapcoord:node:<id>; env ${EXPECT_MEMBER_ENV}): where its address does not tell one member from another`)
    .option('--client-cert <file>', `present this client certificate (mutual TLS: a node started with --client-ca; \`snapcoord certs client NAME\` makes one; env ${CLIENT_CERT_ENV})`)
    .option('--client-key <file>', `the private key of --client-cert (env ${CLIENT_KEY_ENV})`)
    .option('--plaintext', 'connect without TLS (a loopback node started without --cert)');
}

/**
 * jsonText: one JSON value as the `--json` commands print it (bigints as numbers, indented by 2, a final newline).
 * DEL and the C1 controls, which JSON.stringify leaves raw (a server's U+009B is a CSI to some terminals), are
 * written as \\u escapes: the same JSON value.
 */
export function jsonText(value: unknown): string {
  const text = JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? Number(v) : v), 2);
  return `${text.replace(/[\u007f-\u009f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)}\n`;
}

/** jsonOut prints one JSON value on stdout (jsonText). */
export function jsonOut(value: unknown): void {
  process.stdout.write(jsonText(value));
}

/** formatBytes: 1536 -> "1.5 KiB". */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

/**
 * table lays rows out in columns separated by two spaces (the last column unpadded). Every cell is shown
 * visible(): a server's id, path or date cannot drive the terminal or break the layout with a newline.
 */
export function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const all = [header, ...rows].map((r) => r.map(visible));
  const widths = header.map((_, i) => Math.max(...all.map((r) => (r[i] ?? '').length)));
  return all.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('  ').trimEnd()).join('\n');
}
