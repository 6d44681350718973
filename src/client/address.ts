/**
 * Node ids and "host:port" addresses: the one place their syntax is checked
 * (API requests and CLI configuration alike).
 */

/** NODE_ID_PATTERN: 1..64 characters, letters, digits, '_', '-', '.', starting with a letter or digit. */
export const NODE_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/** isNodeId tells whether `id` is a valid node id (NODE_ID_PATTERN). */
export function isNodeId(id: string): boolean {
  return NODE_ID_PATTERN.test(id);
}

/** HostPort is a parsed address; `host` keeps IPv6 brackets off. */
export interface HostPort {
  readonly host: string;
  readonly port: number;
}

/**
 * parseHostPort parses "host:port" (IPv6 as "[::1]:7001"). Returns null when
 * malformed: no port, a port outside 0..65535 (1..65535 unless allowPortZero),
 * an empty host or a host with spaces, '/' or '@'.
 */
export function parseHostPort(address: string, allowPortZero = false): HostPort | null {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^\s:/@[\]]+)):(\d{1,5})$/.exec(address);
  if (m === null) return null;
  const host = m[1] ?? m[2] ?? '';
  const port = Number(m[3]);
  if (host === '' || port > 65535 || (port === 0 && !allowPortZero)) return null;
  return { host, port };
}

/** formatHostPort is the inverse of parseHostPort. */
export function formatHostPort(hp: HostPort): string {
  return hp.host.includes(':') ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
}

/** isLoopback: `host` only ever reaches this machine (127.0.0.0/8, ::1, localhost). */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}
