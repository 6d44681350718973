/**
 * Gateway auth: API keys and the actions they allow.
 *
 * The admin key (--api-key / SNAPCOORD_API_KEY) may do everything; extra keys
 * (config file `apiKeys: [{key, actions}]`, env SNAPCOORD_API_KEYS as JSON)
 * may do what their actions say. A key is read from any of the three styles'
 * places, whatever the route: `X-TYPESENSE-API-KEY` (or the query parameter
 * `x-typesense-api-key`), `Authorization: Bearer <key>`, `X-Nomad-Token`.
 * Keys are compared in constant time (timingSafeEqual over SHA-256 digests,
 * every known key checked each time) and are never logged (see redactUrl and
 * the gateway's request serializer).
 */
import { createHash, timingSafeEqual } from 'node:crypto';

/** ACTIONS: what a key may be allowed to do. `admin` implies every other action. */
export const ACTIONS = ['snapshots.read', 'snapshots.write', 'cluster', 'admin'] as const;
export type Action = (typeof ACTIONS)[number];

/** ApiKeySpec: one extra key and its actions. */
export interface ApiKeySpec {
  readonly key: string;
  readonly actions: readonly Action[];
}

/** AuthConfig: the gateway's keys. With insecureNoAuth every request is allowed. */
export interface AuthConfig {
  /** adminKey: '' for none. */
  readonly adminKey: string;
  readonly keys?: readonly ApiKeySpec[];
  readonly insecureNoAuth?: boolean;
}

/** API_KEY_BYTES_MAX: a presented key longer than this is refused without hashing. */
export const API_KEY_BYTES_MAX = 4096;

/** AuthVerdict: `ok`; `missing` (no key presented); `invalid` (unknown key); `forbidden` (known key without the action). */
export type AuthVerdict = 'ok' | 'missing' | 'invalid' | 'forbidden';

/** HeaderBag: request headers as Node gives them (lower-case names). */
export type HeaderBag = Readonly<Record<string, string | string[] | undefined>>;

const TYPESENSE_HEADER = 'x-typesense-api-key';
const NOMAD_HEADER = 'x-nomad-token';

/** AUTH_HEADERS: the request headers that may carry a key (redacted from logs). */
export const AUTH_HEADERS = [TYPESENSE_HEADER, 'authorization', NOMAD_HEADER] as const;

/** TYPESENSE_KEY_QUERY: the query parameter Typesense also accepts. */
export const TYPESENSE_KEY_QUERY = 'x-typesense-api-key';

function digest(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest();
}

function first(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

/**
 * presentedKeys lists the keys a request carries, in the order: Typesense
 * header, Typesense query parameter, Bearer token, Nomad token. Empty values
 * are skipped; `Authorization` counts only with the Bearer scheme.
 */
export function presentedKeys(headers: HeaderBag, query: Readonly<Record<string, unknown>> | undefined): string[] {
  const keys: string[] = [];
  const add = (v: unknown): void => {
    if (typeof v === 'string' && v !== '') keys.push(v);
  };
  add(first(headers[TYPESENSE_HEADER]));
  const q = query?.[TYPESENSE_KEY_QUERY];
  add(Array.isArray(q) ? q[0] : q);
  const authz = first(headers['authorization']);
  if (authz !== undefined) {
    const m = /^Bearer\s+(.+)$/i.exec(authz.trim());
    if (m !== null) add(m[1]);
  }
  add(first(headers[NOMAD_HEADER]));
  return keys;
}

interface KnownKey {
  readonly digest: Buffer;
  readonly actions: ReadonlySet<Action>;
}

/** KeyRing holds the key digests (never the keys) and decides requests. */
export class KeyRing {
  readonly insecureNoAuth: boolean;
  private readonly known: readonly KnownKey[];

  /** Errors: an extra key that is empty or has an unknown action (Error naming the problem, never the key). */
  constructor(cfg: AuthConfig) {
    this.insecureNoAuth = cfg.insecureNoAuth === true;
    const known: KnownKey[] = [];
    if (cfg.adminKey !== '') known.push({ digest: digest(cfg.adminKey), actions: new Set(ACTIONS) });
    (cfg.keys ?? []).forEach((k, i) => {
      if (k.key === '') throw new Error(`apiKeys[${i}]: empty key`);
      for (const a of k.actions) if (!(ACTIONS as readonly string[]).includes(a)) throw new Error(`apiKeys[${i}]: unknown action "${a}"`);
      const actions = new Set<Action>(k.actions.includes('admin') ? ACTIONS : k.actions);
      known.push({ digest: digest(k.key), actions });
    });
    this.known = known;
  }

  /** hasKeys tells whether any key is configured. */
  get hasKeys(): boolean {
    return this.known.length > 0;
  }

  /**
   * check decides whether one of `keys` may do `action`. Every presented key
   * is compared with every known key, in constant time per comparison.
   */
  check(keys: readonly string[], action: Action): AuthVerdict {
    if (this.insecureNoAuth) return 'ok';
    if (keys.length === 0) return 'missing';
    let matched = false;
    let allowed = false;
    for (const k of keys) {
      if (Buffer.byteLength(k, 'utf8') > API_KEY_BYTES_MAX) continue;
      const d = digest(k);
      for (const known of this.known) {
        // timingSafeEqual on equal-length digests: no early exit on the first differing byte.
        if (timingSafeEqual(d, known.digest)) {
          matched = true;
          if (known.actions.has(action)) allowed = true;
        }
      }
    }
    if (allowed) return 'ok';
    return matched ? 'forbidden' : 'invalid';
  }

  /** checkRequest is check() over the keys a request presents (presentedKeys). */
  checkRequest(headers: HeaderBag, query: Readonly<Record<string, unknown>> | undefined, action: Action): AuthVerdict {
    return this.check(presentedKeys(headers, query), action);
  }
}

/**
 * parseApiKeys parses the `apiKeys` option: a JSON array of {key, actions}.
 * Errors: Error with one line naming the entry and the problem (never the key).
 */
export function parseApiKeys(value: unknown): ApiKeySpec[] {
  let v = value;
  if (typeof v === 'string') {
    if (v.trim() === '') return [];
    try {
      v = JSON.parse(v);
    } catch (err) {
      throw new Error(`not valid JSON: ${(err as Error).message}`, { cause: err });
    }
  }
  if (!Array.isArray(v)) throw new Error('expected a JSON array of {"key": "...", "actions": [...]}');
  return v.map((entry: unknown, i) => {
    if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) throw new Error(`[${i}]: expected an object {key, actions}`);
    const e = entry as Record<string, unknown>;
    for (const k of Object.keys(e)) if (k !== 'key' && k !== 'actions') throw new Error(`[${i}]: unknown field "${k}" (known: key, actions)`);
    if (typeof e['key'] !== 'string' || e['key'].length < 8) throw new Error(`[${i}]: "key" must be a string of at least 8 characters`);
    if (Buffer.byteLength(e['key'], 'utf8') > API_KEY_BYTES_MAX) throw new Error(`[${i}]: "key" is longer than ${API_KEY_BYTES_MAX} bytes`);
    const actions = e['actions'];
    if (!Array.isArray(actions) || actions.length === 0) throw new Error(`[${i}]: "actions" must be a non-empty array of ${ACTIONS.join(', ')}`);
    for (const a of actions) {
      if (typeof a !== 'string' || !(ACTIONS as readonly string[]).includes(a)) {
        throw new Error(`[${i}]: unknown action ${JSON.stringify(a)} (known: ${ACTIONS.join(', ')})`);
      }
    }
    return { key: e['key'], actions: actions as Action[] };
  });
}

/** redactUrl hides the value of the `x-typesense-api-key` query parameter in a request URL (for logs). */
export function redactUrl(url: string): string {
  return url.replace(/([?&]x-typesense-api-key=)[^&#]*/gi, '$1<redacted>');
}
