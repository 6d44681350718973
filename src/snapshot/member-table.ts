/**
 * members.json: an archive's member table (ArchiveMemberTable) recorded
 * beside a stored archive built here, so a later snapshot can copy the gzip
 * members whose keys did not change (archive-delta.ts). It names the archive
 * it describes (its SHA-256) and carries its own SHA-256, so a table that was
 * damaged or belongs to other bytes is refused, never trusted.
 */

import type { ArchiveMemberTable, StateMemberEntry } from './archive-writer.js';
import { sha256Hex } from '../hash/sha256.js';

/** MEMBERS_FILE: the member table of a stored archive (absent for fetched and uploaded ones). */
export const MEMBERS_FILE = 'members.json';

interface MemberTableJson {
  readonly format: 1;
  readonly archiveSha256: string;
  readonly headBytes: number;
  readonly tailBytes: number;
  /** per state member: [compressedBytes, stateBytes, keys, first key in hex]. */
  readonly state: readonly (readonly [number, number, number, string])[];
}

function checksum(body: string): string {
  return sha256Hex(body);
}

/** encodeMemberTable serializes the table of the archive whose SHA-256 is archiveSha256 (JSON, with its own checksum). */
export function encodeMemberTable(table: ArchiveMemberTable, archiveSha256: string): Buffer {
  const json: MemberTableJson = {
    format: 1,
    archiveSha256,
    headBytes: table.headBytes,
    tailBytes: table.tailBytes,
    state: table.state.map((m) => [m.compressedBytes, m.stateBytes, m.keys, m.firstKey.toString('hex')] as const),
  };
  const body = JSON.stringify(json);
  return Buffer.from(`${JSON.stringify({ checksum: checksum(body), table: body })}\n`);
}

function count(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new Error(`${what} is not a whole number`);
  return v;
}

/**
 * decodeMemberTable parses members.json and checks it against the archive it
 * must describe: its checksum, the archive's SHA-256, and that its members
 * cover exactly archiveBytes, stateBytes and stateKeys. Errors: Error saying why.
 */
export function decodeMemberTable(
  bytes: Uint8Array,
  archive: { readonly archiveSha256: string; readonly archiveBytes: number; readonly stateBytes: number; readonly stateKeys: number },
): ArchiveMemberTable {
  const outer = JSON.parse(Buffer.from(bytes).toString('utf8')) as { checksum?: unknown; table?: unknown };
  if (typeof outer.table !== 'string' || outer.checksum !== checksum(outer.table)) throw new Error('its checksum does not match');
  const json = JSON.parse(outer.table) as Partial<MemberTableJson>;
  if (json.format !== 1) throw new Error(`format ${String(json.format)} is not known`);
  if (json.archiveSha256 !== archive.archiveSha256) throw new Error('it describes another archive');
  if (!Array.isArray(json.state)) throw new Error('it has no state members');
  const headBytes = count(json.headBytes, 'headBytes');
  const tailBytes = count(json.tailBytes, 'tailBytes');
  let total = headBytes + tailBytes;
  let stateBytes = 0;
  let stateKeys = 0;
  const state: StateMemberEntry[] = json.state.map((m, i) => {
    if (!Array.isArray(m) || m.length !== 4 || typeof m[3] !== 'string' || !/^([0-9a-f]{2})+$/.test(m[3])) throw new Error(`state member ${i} is malformed`);
    const entry = { compressedBytes: count(m[0], 'compressedBytes'), stateBytes: count(m[1], 'stateBytes'), keys: count(m[2], 'keys'), firstKey: Buffer.from(m[3], 'hex') };
    if (entry.keys === 0 || entry.compressedBytes === 0) throw new Error(`state member ${i} is empty`);
    total += entry.compressedBytes;
    stateBytes += entry.stateBytes;
    stateKeys += entry.keys;
    return entry;
  });
  if (total !== archive.archiveBytes) throw new Error(`it covers ${total} bytes, the archive has ${archive.archiveBytes}`);
  if (stateBytes !== archive.stateBytes || stateKeys !== archive.stateKeys) throw new Error('its state members do not add up to the archive\'s state');
  return { headBytes, state, tailBytes };
}
