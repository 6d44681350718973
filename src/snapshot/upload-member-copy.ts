/**
 * UploadMemberCopy: the snapshot a node keeps after a restore, built from the
 * upload's own compressed state members rather than by encoding and
 * compressing every installed record again (SnapshotManager.installUpload).
 *
 * The installed state is the upload's state except inside one key range the
 * caller names (`changed`: a restore replaces the reserved records there,
 * the client sessions, with this cluster's: StateMachine.installState with
 * keepSessions). So, for each state member of the upload (reported by a
 * MemberGunzip as it reads the upload, whole records each), in order:
 * - a member whose key range (from its first key to the next member's)
 *   misses `changed` is copied compressed, as it is;
 * - a member whose range meets it is re-encoded: its own records outside
 *   `changed`, merged with the installed records inside it that fall in its
 *   range, into fresh record-aligned blocks, gzipped as the writer does.
 * The installed records reach the copy as the install makes them
 * (InstalledRecordsCopy.write, which never waits): only those inside
 * `changed` are kept (copied; at most CHANGED_BYTES_MAX), the others are
 * counted, and at the end the count must equal the new state's records.
 *
 * state.bin's SHA-256 is taken over the new state.bin as it is produced
 * (copied members' decompressed bytes, new blocks): with a changed range that
 * holds anything (a restore always records its own index there),
 * the new state.bin is not the upload's, so the upload's SHA256SUMS line
 * cannot be reused. What this saves is the encoding and the compression of
 * every member outside `changed`.
 *
 * Anything unexpected fails the copy, never the install: a member that does
 * not hold whole records or does not lie where state.bin's next byte is, a
 * key out of order, counts that disagree. The producer then throws, nothing
 * is stored, and the node's next snapshot is built the usual way.
 */
import { createHash } from 'node:crypto';

import type { GzipMemberRead } from './member-gunzip.js';
import { StateBlockEncoder, type StateMemberInfo, type StateMembersProducer, type StateProduced } from './archive-writer.js';
import { gzipBlock } from './parallel-gzip.js';
import { RecordTee } from './record-tee.js';
import type { StateLimits, StateRecord } from './state-format.js';
import type { SnapshotIo } from './snapshot-io.js';

/** CHANGED_BYTES_MAX: the installed records inside the changed range a copy keeps (keys and values) before giving up. */
export const CHANGED_BYTES_MAX = 64 * 1024 * 1024;

/** TakenMember: a state member of the upload as taken, its key range not yet known (the next member's first key ends it). */
interface TakenMember {
  readonly bytes: Buffer;
  readonly outBytes: number;
  readonly keys: number;
  readonly firstKey: Buffer;
  /** lo: where its key range begins (null for the first state member: below every key). */
  readonly lo: Buffer | null;
  readonly output: readonly Buffer[];
}

/**
 * CopiedMember: one state member of the upload queued for the copy, its key range [lo, hi) known: `meets` when it
 * meets the changed range (re-encoded), else copied as it is. `output` (its decompressed bytes): null once they were
 * hashed into state.bin's SHA-256 as the member was taken (see UploadMemberCopy's #queue).
 */
interface CopiedMember {
  readonly bytes: Buffer;
  readonly outBytes: number;
  readonly keys: number;
  readonly firstKey: Buffer;
  readonly hi: Buffer | null;
  readonly meets: boolean;
  readonly output: readonly Buffer[] | null;
}

/** UploadMemberCopyOptions: where state.bin lies, the changed key range and how new blocks are compressed. */
export interface UploadMemberCopyOptions extends StateLimits {
  /** stateTarOffset / stateBytes: where the upload's state.bin lies in its tar (the first member must end at stateTarOffset). */
  readonly stateTarOffset: number;
  readonly stateBytes: number;
  /** stateKeys: the upload's records (its meta.json): with stateBytes, the new state's totals once past `changed`. */
  readonly stateKeys: number;
  /**
   * changed: the key range [from, to) where the installed state may differ from the upload's; null: nowhere (the
   * installed state is the archive's exactly: a directory export's copy of a stored snapshot). Then every member is
   * copied as it is and the archive is begun at once with stateBytes and stateKeys: nothing waits in a spool.
   */
  readonly changed: { readonly from: Buffer; readonly to: Buffer } | null;
  /**
   * declaredStateSha256: with `changed` null only: state.bin's SHA-256 is not taken again but is the one the
   * archive's SHA256SUMS declares, given to finish() (readArchive's declaredStateSha256). For an archive whose bytes
   * are known (a stored snapshot read on its recorded hashes or checked against them, every gzip member's CRC-32
   * checked as read): its state.bin, copied member by member, is the one that digest was taken of.
   */
  readonly declaredStateSha256?: boolean;
  /** membersMax: upload members queued for the copy before the reader waits. */
  readonly membersMax: number;
  readonly gzipLevel: number;
  readonly gzipBlockBytes: number;
  readonly gzipAdaptive: boolean;
  readonly io: SnapshotIo;
  /**
   * release: each piece of a member's `output` (its decompressed bytes, from a MemberGunzip with a PiecePool) is
   * handed to it once the copy reads it no more (hashed, or re-encoded); pieces of a copy that fails or is given up
   * are not (left to the GC).
   */
  readonly release?: (piece: Buffer) => void;
}

const EMPTY_KEY = Buffer.alloc(0);

function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
}

/** UploadMemberCopy: see the file comment. */
export class UploadMemberCopy {
  readonly #o: UploadMemberCopyOptions;
  readonly #members: RecordTee<CopiedMember>;
  /** #pending: the member taken last, queued once the next one (or finish) says where its key range ends. */
  #pending: TakenMember | null = null;
  /**
   * #stateHash: the new state.bin's SHA-256, updated in state.bin's order: a member copied as it is is hashed when it
   * is taken if nothing queued before it is still to be hashed (#hashOwed 0), and its decompressed pieces are let go
   * at once; otherwise (behind a re-encoded member, whose records wait for the install) produce hashes it in turn.
   */
  readonly #stateHash = createHash('sha256');
  /** #hashOwed: queued members (and re-encoded ones whose last block is not yet out) that produce has still to hash. */
  #hashOwed = 0;
  #statePos = 0;
  #problem: string | null = null;
  /** the installed side: records inside `changed` (copied), the count of all, the last key, whether it ended. */
  readonly #changedRecords: StateRecord[] = [];
  #changedBytes = 0;
  #installedKeys = 0;
  #installedLast: Buffer | null = null;
  #installedEnded = false;
  #wakeInstalled: (() => void) | null = null;

  /** #declared: the state digest finish() was given (declaredStateSha256). */
  #declared: string | null = null;

  constructor(options: UploadMemberCopyOptions) {
    if (options.declaredStateSha256 === true && options.changed !== null) throw new RangeError('UploadMemberCopy: declaredStateSha256 needs changed null (an unchanged state)');
    this.#o = options;
    this.#members = new RecordTee<CopiedMember>(options.membersMax);
  }

  /** take receives the gunzip's next whole member (MemberGunzipOptions.onMember); resolves once it is queued (or the copy is given up). */
  async take(m: GzipMemberRead): Promise<void> {
    const { stateTarOffset, stateBytes } = this.#o;
    const stateEnd = stateTarOffset + stateBytes;
    // A member not queued: its pieces are read no more.
    if (this.#problem !== null || m.index === 0 || m.outStart >= stateEnd) return this.#release(m.output); // the tail: written anew
    if (m.outStart !== stateTarOffset + this.#statePos) return this.#giveUp(`member ${m.index} starts at tar offset ${m.outStart}, not where state.bin's next byte is`);
    if (m.outStart + m.outBytes > stateEnd) return this.#giveUp(`member ${m.index} runs past state.bin's end`);
    if (m.records === null) return this.#giveUp(`member ${m.index} does not hold whole records`);
    this.#statePos += m.outBytes;
    const taken: TakenMember = { bytes: m.bytes, outBytes: m.outBytes, keys: m.records.keys, firstKey: m.records.firstKey, lo: m.outStart === stateTarOffset ? null : m.records.firstKey, output: m.output };
    const before = this.#pending;
    this.#pending = taken;
    if (before !== null) await this.#queue(before, taken.firstKey);
  }

  /**
   * #queue hands `m` to produce, its key range ending at `hi` (null: the last member). A member that misses the
   * changed range is copied as it is; when nothing before it is still to be hashed, its decompressed pieces are
   * hashed here and not queued (issue 15: queued, up to membersMax + 2 members' pieces, ~1 MiB each, outlived two
   * scavenges and were promoted: only a full collection freed them). Resolves once there is room in the queue.
   */
  #queue(m: TakenMember, hi: Buffer | null): Promise<void> {
    const changed = this.#o.changed;
    const meets = changed !== null && (hi === null || Buffer.compare(hi, changed.from) > 0) && (m.lo === null || Buffer.compare(m.lo, changed.to) < 0);
    let output: readonly Buffer[] | null = m.output;
    if (!meets && this.#hashOwed === 0) {
      if (this.#o.declaredStateSha256 !== true) for (const piece of m.output) this.#stateHash.update(piece);
      this.#release(m.output);
      output = null;
    } else {
      this.#hashOwed++;
    }
    return this.#members.write({ bytes: m.bytes, outBytes: m.outBytes, keys: m.keys, firstKey: m.firstKey, hi, meets, output });
  }

  /** write receives the records the install makes, in order (InstalledRecordsCopy); never waits. */
  write(batch: readonly StateRecord[]): Promise<void> {
    const last = batch[batch.length - 1];
    if (last === undefined || this.#problem !== null) return Promise.resolve();
    this.#installedKeys += batch.length;
    const changed = this.#o.changed;
    if (changed === null) return Promise.resolve(); // only counted: nothing waits for the installed keys
    const { from, to } = changed;
    // Sorted: a batch wholly before or after the changed range is only counted.
    if (Buffer.compare(asBuffer(last.key), from) >= 0 && Buffer.compare(asBuffer((batch[0] as StateRecord).key), to) < 0) {
      for (const r of batch) {
        const key = asBuffer(r.key);
        if (Buffer.compare(key, from) < 0 || Buffer.compare(key, to) >= 0) continue;
        this.#changedRecords.push({ key: Buffer.from(key), value: Buffer.from(r.value) });
        this.#changedBytes += key.length + r.value.length;
      }
      if (this.#changedBytes > CHANGED_BYTES_MAX) this.#giveUp(`more than ${CHANGED_BYTES_MAX} bytes of installed records in the changed range`);
    }
    this.#installedLast = Buffer.from(asBuffer(last.key));
    this.#wake();
    return Promise.resolve();
  }

  /**
   * finish: the archive was read whole and checked, and the install took every record. `declaredStateSha256`:
   * state.bin's line of its SHA256SUMS, required with options.declaredStateSha256 (else the copy fails).
   */
  finish(declaredStateSha256?: string): void {
    if (this.#o.declaredStateSha256 === true) {
      if (declaredStateSha256 === undefined || !/^[0-9a-f]{64}$/.test(declaredStateSha256)) this.#giveUp('finished without the state digest its SHA256SUMS declares');
      else this.#declared = declaredStateSha256;
    }
    this.#installedEnded = true;
    this.#wake();
    const last = this.#pending;
    this.#pending = null;
    // Queued at once (the queue takes it before it waits for room); the writer reads on to the end.
    if (last !== null && this.#problem === null) this.#queue(last, null).catch(() => undefined);
    this.#members.end();
  }

  /** fail: the read or the install failed; the copy must not be kept. */
  fail(err: Error): void {
    this.#pending = null;
    this.#members.fail(err);
    this.#installedEnded = true;
    this.#wake();
  }

  /** abandon: the archive writer will read no more members (it failed before or while reading): take() drops them. */
  abandon(): void {
    this.#pending = null;
    this.#members.abandon();
  }

  /** #release hands a member's pieces back to their pool (options.release), if any. */
  #release(output: readonly Buffer[]): void {
    const release = this.#o.release;
    if (release !== undefined) for (const piece of output) release(piece);
  }

  #giveUp(why: string): void {
    this.#problem ??= why;
    this.#pending = null;
    this.#members.fail(new Error(`the upload's gzip members cannot be copied: ${why}`));
    this.#installedEnded = true;
    this.#wake();
  }

  #wake(): void {
    const wake = this.#wakeInstalled;
    this.#wakeInstalled = null;
    wake?.();
  }

  /** #installedPast resolves once every installed record below `key` (null: every one) has been seen. */
  async #installedPast(key: Buffer | null): Promise<void> {
    while (!this.#installedEnded && (key === null || this.#installedLast === null || Buffer.compare(this.#installedLast, key) < 0)) {
      await new Promise<void>((resolve) => {
        this.#wakeInstalled = resolve;
      });
    }
    if (this.#problem !== null) throw new Error(`the upload's gzip members cannot be copied: ${this.#problem}`);
  }

  /** produce: the StateMembersProducer of the new archive (see the file comment). */
  readonly produce: StateMembersProducer = async (deliver, begin): Promise<StateProduced> => {
    const declared = this.#o.declaredStateSha256 === true;
    // No changed range: the state is the archive's, its totals known now; every member goes straight into the archive.
    if (this.#o.changed === null) await begin({ stateBytes: this.#o.stateBytes, stateKeys: this.#o.stateKeys });
    const { from, to } = this.#o.changed ?? { from: EMPTY_KEY, to: EMPTY_KEY };
    // The new state is the upload's but inside `changed`: the upload's records there dropped, the installed ones
    // added. Once every member meeting `changed` is re-encoded, its totals are known and the archive is begun:
    // the members after go straight into it (only those before wait in the spool: none, when `changed` lies
    // below every key, as the reserved keys do).
    let droppedBytes = 0;
    let droppedKeys = 0;
    let addedBytes = 0;
    let addedKeys = 0;
    let begun = this.#o.changed === null;
    const beginPast = async (hi: Buffer | null): Promise<void> => {
      if (begun || (hi !== null && Buffer.compare(hi, to) < 0)) return;
      begun = true;
      await begin({ stateBytes: this.#o.stateBytes - droppedBytes + addedBytes, stateKeys: this.#o.stateKeys - droppedKeys + addedKeys });
    };
    const stateHash = this.#stateHash;
    const encoder = new StateBlockEncoder(this.#o.gzipBlockBytes, this.#o, true);
    let copiedBytes = 0;
    let copiedKeys = 0;
    let nextChanged = 0;
    const flush = async (final: boolean): Promise<void> => {
      for (const { block, info } of encoder.take(final)) {
        stateHash.update(block);
        await deliver(await gzipBlock(block, this.#o.gzipLevel, this.#o.gzipAdaptive, this.#o.io), info as StateMemberInfo);
      }
    };
    /** changedBelow encodes the kept installed records below `key` (null: all) not yet encoded. */
    const changedBelow = (key: Buffer | null): void => {
      for (; nextChanged < this.#changedRecords.length; nextChanged++) {
        const r = this.#changedRecords[nextChanged] as StateRecord;
        if (key !== null && Buffer.compare(asBuffer(r.key), key) >= 0) return;
        encoder.encode(r);
        addedBytes += 8 + r.key.length + r.value.length;
        addedKeys++;
      }
    };
    /** reencoded: re-encoded members whose hashing is owed (#hashOwed) until their last block is out (a flush(true)). */
    let reencoded = 0;
    for await (const cur of this.#members.records()) {
      if (!cur.meets) {
        // Copied as it is (after the blocks encoded before it).
        await flush(true);
        if (cur.output !== null) {
          if (!declared) for (const piece of cur.output) stateHash.update(piece);
          this.#release(cur.output);
          this.#hashOwed -= reencoded + 1;
          reencoded = 0;
        }
        await deliver(cur.bytes, { stateBytes: cur.outBytes, keys: cur.keys, firstKey: cur.firstKey });
        copiedBytes += cur.outBytes;
        copiedKeys += cur.keys;
      } else {
        // Re-encoded: its records outside the changed range, merged with the installed ones inside it.
        const output = cur.output as readonly Buffer[];
        const hi = cur.hi;
        await this.#installedPast(hi);
        const state = output.length === 1 ? (output[0] as Buffer) : Buffer.concat(output as Buffer[], cur.outBytes);
        for (let pos = 0; pos < state.length; ) {
          const kLen = state.readUInt32BE(pos);
          const key = state.subarray(pos + 4, pos + 4 + kLen);
          const vLen = state.readUInt32BE(pos + 4 + kLen);
          const value = state.subarray(pos + 8 + kLen, pos + 8 + kLen + vLen);
          pos += 8 + kLen + vLen;
          if (Buffer.compare(key, from) >= 0 && Buffer.compare(key, to) < 0) {
            droppedBytes += 8 + kLen + vLen;
            droppedKeys++;
            continue;
          }
          changedBelow(key);
          encoder.encode({ key, value });
        }
        // Every record of it is encoded (copied into the encoder's blocks) or dropped by now.
        this.#release(output);
        changedBelow(hi);
        await beginPast(hi);
        await flush(false);
        reencoded++;
      }
      await beginPast(cur.hi);
    }
    // No state members at all: the state is the installed records inside the changed range.
    await this.#installedPast(null);
    changedBelow(null);
    await flush(true);
    const stateBytes = copiedBytes + encoder.bytes;
    const stateKeys = copiedKeys + encoder.keys;
    if (this.#statePos !== this.#o.stateBytes) throw new Error(`the upload's state members hold ${this.#statePos} bytes, its state.bin ${this.#o.stateBytes}`);
    if (stateKeys !== this.#installedKeys) throw new Error(`the copy holds ${stateKeys} records, the install made ${this.#installedKeys}`);
    if (declared && this.#declared === null) throw new Error(`the archive's gzip members cannot be copied: its state digest was never given`);
    return { stateSha256: declared ? (this.#declared as string) : stateHash.digest('hex'), stateBytes, stateKeys };
  };
}
