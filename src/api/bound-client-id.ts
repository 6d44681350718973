/**
 * boundClientId: the client id a write's session is recorded under (see
 * src/fsm/sessions.ts): the `client_id` the caller chose, bound to the API key
 * that sent it (its principal). Holders of two keys therefore never share a
 * session, whatever client ids they pick: one cannot answer another's retries
 * with its own results (a write of the other's next request id first) nor
 * expire them (request ids above the other's). Callers with the same key share
 * its client ids, as before.
 *
 * The recorded id is `<tag>:<client_id>`, the tag the first 8 base64url
 * characters of SHA-256("snapcoord client id\0" + key) (the key is never
 * recorded; no key at all: the tag of ''; a node without auth binds to
 * whatever bearer token the caller sends, checked against nothing). A client id too
 * long to fit beside it in CLIENT_ID_CHARS_MAX (over 55 characters) is recorded
 * as `<tag>#<its SHA-256, 43 base64url characters>`. Either form is printable
 * ASCII within CLIENT_ID_CHARS_MAX, the same on every node for the same key and
 * client id (a forwarded call carries the caller's key), so the replicated
 * state's rules are unchanged. The tag is also the principal the session
 * counts against in the table's per-key share (sessionPrincipal, sessions.ts).
 */
import { CLIENT_ID_CHARS_MAX, CLIENT_ID_TAG_CHARS } from '../fsm/sessions.js';
import { sha256 } from '../hash/sha256.js';

function base64urlSha256(s: string): string {
  return sha256(s).toString('base64url');
}

/** boundClientId: `clientId` as recorded for a caller presenting `apiKey` ('' for none). */
export function boundClientId(apiKey: string, clientId: string): string {
  const tag = base64urlSha256(`snapcoord client id\0${apiKey}`).slice(0, CLIENT_ID_TAG_CHARS);
  if (CLIENT_ID_TAG_CHARS + 1 + clientId.length <= CLIENT_ID_CHARS_MAX) return `${tag}:${clientId}`;
  return `${tag}#${base64urlSha256(clientId)}`;
}
