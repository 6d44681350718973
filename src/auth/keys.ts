/**
 * The key model shared by every door into a node: API keys and the actions
 * they allow. The HTTP gateway (src/gateway/auth.ts) and the client-plane gRPC
 * interceptor (src/api/auth-interceptor.ts) both decide with a KeyRing built
 * from the same configuration, so a key means the same thing on either door.
 *
 * The admin key (--api-key / SNAPCOORD_API_KEY) may do everything; extra keys
 * (config file `apiKeys: [{key, actions}]`, env SNAPCOORD_API_KEYS as JSON)
 * may do what their actions say, and `admin` among them implies every other
 * action. Keys are compared in constant time: SHA-256 digests (equal length
 * whatever the key's length) compared with crypto.timingSafeEqual against
 * every known key on every lookup, with no early exit. A presented key longer
 * than API_KEY_BYTES_MAX is refused without hashing. The ring keeps digests,
 * never the keys, and nothing here logs or echoes a key.
 *
 * This is the bottom layer: it imports nothing from other src directories.
 */
// The default import (the module object, not a frozen namespace) is read at call time on purpose:
// a test can then watch that every comparison goes through crypto.timingSafeEqual.
import crypto from 'node:crypto';
import { sha256 } from '../hash/sha256.js';

/**
 * ACTIONS: what a key may be allowed to do. `admin` implies every other action.
 * - `snapshots.read`: list and inspect snapshots, read tasks, hash the state (metadata, never the data);
 * - `snapshots.write`: create snapshots (task or directory), download or restore the whole state, cancel tasks;
 * - `cluster`: membership changes, leadership transfer, vote;
 * - `kv.read` / `kv.write`: the key-value API (Get, Range / Put, Delete);
 * - `admin`: everything, including what no table names yet.
 */
export const ACTIONS = ['snapshots.read', 'snapshots.write', 'cluster', 'kv.read', 'kv.write', 'admin'] as const;
export type Action = (typeof ACTIONS)[number];

/** isAction tells whether `s` names an action. */
export function isAction(s: unknown): s is Action {
  return typeof s === 'string' && (ACTIONS as readonly string[]).includes(s);
}

/** ApiKeySpec: one extra key and its actions. */
export interface ApiKeySpec {
  readonly key: string;
  readonly actions: readonly Action[];
}

/** KeyRingConfig: the keys of a node. With insecureNoAuth every request is allowed. */
export interface KeyRingConfig {
  /** adminKey: '' for none. */
  readonly adminKey: string;
  readonly keys?: readonly ApiKeySpec[];
  readonly insecureNoAuth?: boolean;
}

/** API_KEY_BYTES_MAX: a presented key longer than this (UTF-8 bytes) is refused without hashing. */
export const API_KEY_BYTES_MAX = 4096;

/** API_KEY_CHARS_MIN: the shortest extra key parseApiKeys accepts. */
export const API_KEY_CHARS_MIN = 8;

/**
 * AuthVerdict: `ok`; `missing` (no key presented); `invalid` (unknown key, or
 * one over API_KEY_BYTES_MAX); `forbidden` (known key without the action).
 */
export type AuthVerdict = 'ok' | 'missing' | 'invalid' | 'forbidden';

/** Need: what a request needs: one action, or `anyKey` (any known key, whatever its actions). */
export type Need = Action | 'anyKey';

/**
 * allows tells whether a known key holding `actions` may do `needed`: it holds
 * `needed` itself or `admin` (which implies every action). `anyKey` is
 * allowed to every known key, whatever its actions.
 */
export function allows(actions: Iterable<Action>, needed: Need): boolean {
  if (needed === 'anyKey') return true;
  for (const a of actions) {
    if (a === needed || a === 'admin') return true;
  }
  return false;
}

interface KnownKey {
  readonly digest: Buffer;
  readonly actions: ReadonlySet<Action>;
}

/** KeyRing holds the key digests (never the keys) and decides requests. */
export class KeyRing {
  readonly insecureNoAuth: boolean;
  private readonly known: readonly KnownKey[];

  /**
   * KeyRing builds the ring from a configuration (admin key first).
   * Errors: an extra key that is empty or has an unknown action (Error naming the entry and the problem, never the key).
   */
  constructor(cfg: KeyRingConfig) {
    this.insecureNoAuth = cfg.insecureNoAuth === true;
    const known: KnownKey[] = [];
    if (cfg.adminKey !== '') known.push({ digest: sha256(cfg.adminKey), actions: new Set<Action>(['admin']) });
    (cfg.keys ?? []).forEach((k, i) => {
      if (k.key === '') throw new Error(`apiKeys[${i}]: empty key`);
      for (const a of k.actions) if (!isAction(a)) throw new Error(`apiKeys[${i}]: unknown action "${String(a)}"`);
      known.push({ digest: sha256(k.key), actions: new Set(k.actions) });
    });
    this.known = known;
  }

  /** hasKeys tells whether any key is configured. */
  get hasKeys(): boolean {
    return this.known.length > 0;
  }

  /**
   * lookup answers the actions `key` holds (the union over every known entry
   * it matches), or null when it matches none. The key's SHA-256 digest is
   * compared with every known digest by crypto.timingSafeEqual, all of them
   * every time (no early exit), so the time taken does not depend on which
   * key, if any, matched or on how much of one matched. A key over
   * API_KEY_BYTES_MAX is not hashed at all: null.
   */
  lookup(key: string): ReadonlySet<Action> | null {
    if (Buffer.byteLength(key, 'utf8') > API_KEY_BYTES_MAX) return null;
    const d = sha256(key); // every client call: no Hash object made where Node has crypto.hash (1.2 against 5 µs per key)
    // The one matching entry's own set when a single one matches (the usual case: no set built per call).
    let only: ReadonlySet<Action> | null = null;
    let union: Set<Action> | null = null;
    for (const known of this.known) {
      if (crypto.timingSafeEqual(d, known.digest)) {
        if (only === null) {
          only = known.actions;
        } else {
          union ??= new Set(only);
          for (const a of known.actions) union.add(a);
        }
      }
    }
    return union ?? only;
  }

  /** checkKey is check([key], needed) without the array. */
  checkKey(key: string, needed: Need): AuthVerdict {
    if (this.insecureNoAuth) return 'ok';
    const actions = this.lookup(key);
    if (actions === null) return 'invalid';
    return allows(actions, needed) ? 'ok' : 'forbidden';
  }

  /**
   * check decides whether one of the presented `keys` may do `needed`
   * (allows). Every presented key is looked up (lookup: constant time per
   * comparison). With insecureNoAuth: always `ok`.
   */
  check(keys: readonly string[], needed: Need): AuthVerdict {
    if (this.insecureNoAuth) return 'ok';
    if (keys.length === 0) return 'missing';
    let matched = false;
    let allowed = false;
    for (const k of keys) {
      const actions = this.lookup(k);
      if (actions === null) continue;
      matched = true;
      if (allows(actions, needed)) allowed = true;
    }
    if (allowed) return 'ok';
    return matched ? 'forbidden' : 'invalid';
  }
}

/**
 * API_KEYS_MAX: the most extra keys `apiKeys` may list. Every call's key is
 * compared with every known key (constant time: no early exit), so the list's
 * length is a cost on every call.
 */
export const API_KEYS_MAX = 1024;

/**
 * parseApiKeys parses the `apiKeys` option: a JSON array (or its text) of
 * at most API_KEYS_MAX {key, actions}; '' or blank text is no keys. A key is
 * a string of API_KEY_CHARS_MIN characters up to API_KEY_BYTES_MAX bytes;
 * actions a non-empty array of ACTIONS.
 * Errors: Error with one line naming the entry and the problem (never the key).
 */
export function parseApiKeys(value: unknown): ApiKeySpec[] {
  let v = value;
  if (typeof v === 'string') {
    if (v.trim() === '') return [];
    try {
      v = JSON.parse(v);
    } catch {
      // JSON.parse's message quotes the text it read, which may be a key given by mistake: say only where it failed.
      throw new Error(`not valid JSON (a list like [{"key":"...","actions":["admin"]}] is expected; ${(v as string).length} characters given)`);
    }
  }
  if (!Array.isArray(v)) throw new Error('expected a JSON array of {"key": "...", "actions": [...]}');
  if (v.length > API_KEYS_MAX) throw new Error(`${v.length} keys: at most ${API_KEYS_MAX} (each call's key is compared with every one)`);
  return v.map((entry: unknown, i) => {
    if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) throw new Error(`[${i}]: expected an object {key, actions}`);
    const e = entry as Record<string, unknown>;
    for (const k of Object.keys(e)) if (k !== 'key' && k !== 'actions') throw new Error(`[${i}]: unknown field "${k}" (known: key, actions)`);
    if (typeof e['key'] !== 'string' || e['key'].length < API_KEY_CHARS_MIN) {
      throw new Error(`[${i}]: "key" must be a string of at least ${API_KEY_CHARS_MIN} characters`);
    }
    if (Buffer.byteLength(e['key'], 'utf8') > API_KEY_BYTES_MAX) throw new Error(`[${i}]: "key" is longer than ${API_KEY_BYTES_MAX} bytes`);
    const actions = e['actions'];
    if (!Array.isArray(actions) || actions.length === 0) throw new Error(`[${i}]: "actions" must be a non-empty array of ${ACTIONS.join(', ')}`);
    for (const a of actions) {
      if (!isAction(a)) throw new Error(`[${i}]: unknown action ${JSON.stringify(a)} (known: ${ACTIONS.join(', ')})`);
    }
    return { key: e['key'], actions: actions as Action[] };
  });
}
