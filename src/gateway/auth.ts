/**
 * Gateway auth: API keys and the actions they allow.
 *
 * The admin key (--api-key / SNAPCOORD_API_KEY) may do everything; extra keys
 * (config file `apiKeys: [{key, actions}]`, env SNAPCOORD_API_KEYS as JSON)
 * may do what their actions say. A key is read from any of the three styles'
 * places, whatever the route: `X-TYPESENSE-API-KEY` (or the query parameter
 * `x-typesense-api-key`), `Authorization: Bearer <key>`, `X-Nomad-Token`.
 * The key model (actions, KeyRing, parseApiKeys) lives in src/auth/keys.ts,
 * shared with the client-plane gRPC interceptor; this file reads where a
 * request carries its key. Keys are compared in constant time (see
 * KeyRing.lookup) and are never logged (see redactUrl and the gateway's
 * request serializer).
 */
import { KeyRing as BaseKeyRing, type AuthVerdict, type KeyRingConfig, type Need } from '../auth/keys.js';
import { bearerToken } from '../auth/bearer.js';

export { ACTIONS, API_KEY_BYTES_MAX, parseApiKeys, type Action, type ApiKeySpec, type AuthVerdict } from '../auth/keys.js';

/** AuthConfig: the gateway's keys (src/auth's KeyRingConfig). With insecureNoAuth every request is allowed. */
export type AuthConfig = KeyRingConfig;

/** HeaderBag: request headers as Node gives them (lower-case names). */
export type HeaderBag = Readonly<Record<string, string | string[] | undefined>>;

const TYPESENSE_HEADER = 'x-typesense-api-key';
const NOMAD_HEADER = 'x-nomad-token';

/** AUTH_HEADERS: the request headers that may carry a key (redacted from logs). */
export const AUTH_HEADERS = [TYPESENSE_HEADER, 'authorization', NOMAD_HEADER] as const;

/** TYPESENSE_KEY_QUERY: the query parameter Typesense also accepts. */
export const TYPESENSE_KEY_QUERY = 'x-typesense-api-key';

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
  if (authz !== undefined) add(bearerToken(authz));
  add(first(headers[NOMAD_HEADER]));
  return keys;
}

/** KeyRing is src/auth's KeyRing (digests, constant-time lookup, check) that also reads a request's keys. */
export class KeyRing extends BaseKeyRing {
  /** checkRequest is check() over the keys a request presents (presentedKeys). */
  checkRequest(headers: HeaderBag, query: Readonly<Record<string, unknown>> | undefined, action: Need): AuthVerdict {
    return this.check(presentedKeys(headers, query), action);
  }
}

/** SECRET_QUERY_NAME: a query parameter whose name (decoded, lower-cased) matches this never has its value logged. */
const SECRET_QUERY_NAME = /key|token|secret|passw|auth|sig/;

/** DECODE_ROUNDS_MAX: how many layers of percent-encoding queryNameOf peels off a parameter name. */
const DECODE_ROUNDS_MAX = 4;

/**
 * queryNameOf: a raw query parameter name as a server could read it: `+` as
 * a space, percent-encoding undone (repeatedly, so `%252D` counts as `-`;
 * malformed escapes left as they are), lower-cased.
 */
export function queryNameOf(raw: string): string {
  let name = raw;
  for (let i = 0; i < DECODE_ROUNDS_MAX && /[%+]/.test(name); i++) {
    const next = name.replace(/\+/g, ' ').replace(/%([0-9a-fA-F]{2})/g, (_m, hex: string) => String.fromCharCode(parseInt(hex, 16)));
    if (next === name) break;
    name = next;
  }
  return name.toLowerCase();
}

/**
 * redactUrl hides, in a request URL (for logs), the value of every query
 * parameter whose name, however cased or percent-encoded, looks secret
 * (`x-typesense-api-key`, `X-TYPESENSE-API-KEY`, `x%2Dtypesense%2Dapi%2Dkey`,
 * and anything naming a key, token, secret, password, auth or signature).
 * The path and the other parameters are kept as sent.
 */
export function redactUrl(url: string): string {
  const q = url.indexOf('?');
  if (q < 0) return url;
  const parts = url
    .slice(q + 1)
    .split('&')
    .map((part) => {
      const eq = part.indexOf('=');
      if (eq < 0) return part;
      const rawName = part.slice(0, eq);
      return SECRET_QUERY_NAME.test(queryNameOf(rawName)) ? `${rawName}=<redacted>` : part;
    });
  return `${url.slice(0, q + 1)}${parts.join('&')}`;
}
