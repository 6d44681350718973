/**
 * The `Authorization: Bearer <key>` scheme (RFC 6750), read the same way by
 * the HTTP gateway and the client-plane gRPC interceptor.
 */

/**
 * bearerToken answers the token of an `Authorization` value using the Bearer
 * scheme (scheme name case-insensitive, surrounding white space ignored), or
 * null for another scheme or an empty token. The token itself is not checked
 * here (see KeyRing.lookup); it is never logged.
 */
export function bearerToken(authorization: string): string | null {
  const m = /^Bearer\s+(.+)$/i.exec(authorization.trim());
  return m?.[1] ?? null;
}
