/**
 * State images (issue 15): a state generation's RocksDB files as
 * they are on disk, exported by the node that built the generation (the
 * leader applying a restore) and imported by another member as its own next
 * generation, instead of that member loading the same records itself.
 *
 * An export is taken while the generation's database is closed: its SSTs are
 * hard-linked (RocksDB never rewrites an SST in place, only deletes it), the
 * other files (WAL, MANIFEST, CURRENT, OPTIONS, IDENTITY) copied; each file's
 * SHA-256 is recorded in the manifest. An import writes the files a peer
 * sends into a new directory, checking every name against RocksDB's own file
 * name patterns (no directories, no dot files, no LOCK), the counts and
 * bytes against caps, each file's bytes in order and its SHA-256 at its end.
 */
import { createHash } from 'node:crypto';
import { copyFile, link, mkdir, open as openFile, readdir, rm, statfs } from 'node:fs/promises';
import { join } from 'node:path';

import type { StateImageChunk, StateImageFile } from '../raft/types.js';
import { StorageError } from './storage-error.js';

/** StateImageFile, StateImageChunk: declared in raft/types.ts (transport carries them too). */
export type { StateImageChunk, StateImageFile };

/** StateImageSource: what an import reads: the manifest, then the files' bytes in manifest order. */
export interface StateImageSource {
  readonly files: readonly StateImageFile[];
  readonly chunks: AsyncIterable<StateImageChunk>;
}

/** StateImage: an exported image on this node's disk, of the generation whose applied index it names. */
export interface StateImage {
  readonly dir: string;
  readonly appliedIndex: number;
  readonly files: readonly StateImageFile[];
}

/** IMAGE_FILE_NAME: the RocksDB files an image may hold (the database's own names; LOCK and info logs are left out). */
export const IMAGE_FILE_NAME = /^(?:[0-9]{6,20}\.(?:sst|log)|MANIFEST-[0-9]{6,20}|OPTIONS-[0-9]{6,20}|CURRENT|IDENTITY)$/;
/** IMAGE_FILES_MAX: the most files an image may list (1M x 1 KiB: ~130 files). */
export const IMAGE_FILES_MAX = 65_536;
/** IMAGE_BYTES_MAX: the most bytes an image may hold in all (as the restore's state cap, RESTORE_STATE_BYTES_MAX_DEFAULT). */
export const IMAGE_BYTES_MAX = 64 * 1024 ** 3;
/** IMAGE_SYNCS_IN_FLIGHT: fsyncs of finished files an import lets run while it receives the next ones. */
const IMAGE_SYNCS_IN_FLIGHT = 8;
/** IMAGE_CHUNK_BYTES: the bytes of one chunk read from an image to be sent. */
export const IMAGE_CHUNK_BYTES = 1 << 20;

async function fsOp<T>(what: string, path: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw new StorageError('io', `${path}: cannot ${what}: ${(err as Error).message}`, { path, cause: err });
  }
}

async function sha256OfFile(path: string): Promise<{ sha256: Buffer; sizeBytes: number }> {
  return fsOp('read', path, async () => {
    const h = createHash('sha256');
    const handle = await openFile(path, 'r');
    try {
      const buf = Buffer.allocUnsafe(IMAGE_CHUNK_BYTES);
      let size = 0;
      for (;;) {
        const { bytesRead } = await handle.read(buf, 0, buf.length, size);
        if (bytesRead === 0) break;
        h.update(buf.subarray(0, bytesRead));
        size += bytesRead;
      }
      return { sha256: h.digest(), sizeBytes: size };
    } finally {
      await handle.close();
    }
  });
}

/**
 * exportStateImage copies the closed database at `srcDir` into `destDir`
 * (created, mode 0700; an existing one is removed first): SSTs hard-linked,
 * the other RocksDB files copied, everything else (LOCK) left out; each file
 * hashed (`onFileExported` called after each: crash tests). Errors: StorageError `io`.
 */
export async function exportStateImage(srcDir: string, destDir: string, appliedIndex: number, onFileExported?: () => void): Promise<StateImage> {
  await fsOp('remove', destDir, () => rm(destDir, { recursive: true, force: true }));
  await fsOp('create', destDir, () => mkdir(destDir, { recursive: true, mode: 0o700 }));
  const names = (await fsOp('list', srcDir, () => readdir(srcDir))).filter((n) => IMAGE_FILE_NAME.test(n)).sort();
  const files: StateImageFile[] = [];
  for (const name of names) {
    const from = join(srcDir, name);
    const to = join(destDir, name);
    if (name.endsWith('.sst')) await fsOp('link', to, () => link(from, to));
    else await fsOp('copy', to, () => copyFile(from, to));
    const { sha256, sizeBytes } = await sha256OfFile(to);
    files.push({ name, sizeBytes, sha256 });
    onFileExported?.();
  }
  return { dir: destDir, appliedIndex, files };
}

/**
 * IMAGE_FRAME_ROOM_BEFORE / IMAGE_FRAME_ROOM_AFTER: the free bytes readStateImageChunks leaves around each
 * chunk in its buffer: a FetchStateImageResponse's fields before its data (file, offset, the data's tag
 * and length: at most 21 bytes) and gRPC's 5-byte frame header, so the sender encodes and frames the
 * message where it lies (transport/fetch-serializer.ts), no copy of the chunk.
 */
const IMAGE_FRAME_ROOM_BEFORE = 32;
const IMAGE_FRAME_ROOM_AFTER = 0;
/**
 * FRAME_ROOM: the mark of a chunk with free room around it in its buffer (the same Symbol.for key as
 * snapshot/chunk-reader.ts's FRAME_ROOM and transport/bytes-message.ts's: storage imports neither).
 */
const FRAME_ROOM = Symbol.for('snapcoord.chunk.frameRoom');
/**
 * IMAGE_SPARE_BUFFERS_MAX: released chunk buffers readStateImageChunks keeps for later chunks (of any file
 * of the image). A served stream holds a few at once (one in hand, STREAM_UNSENT_MAX unsent): with its
 * buffers coming back, an image is sent through the same few MiB instead of a fresh 1 MiB buffer per
 * chunk (each a mapping of its own under a node's 128 KiB mmap threshold, resident until the next
 * collection frees it: a leader serving two followers a 1 GB image churned 2 GB of them).
 */
export const IMAGE_SPARE_BUFFERS_MAX = 4;

/**
 * readStateImageChunks reads an exported image's files in manifest order, in
 * chunks of up to `chunkBytes`, each file only as far as its manifest size
 * (and failing if it is shorter). Errors: StorageError `io`, `corrupt`.
 *
 * Each chunk is read into its own buffer with free room before it (marked
 * FRAME_ROOM, for a sender to frame the message in place); a full-size
 * chunk's buffer is read into again for a later chunk once the consumer
 * calls its `release` (at most IMAGE_SPARE_BUFFERS_MAX kept). A consumer
 * that never calls it gets a fresh buffer per chunk.
 */
export async function* readStateImageChunks(image: StateImage, chunkBytes = IMAGE_CHUNK_BYTES): AsyncGenerator<StateImageChunk, void, undefined> {
  const size = Math.max(1, Math.floor(chunkBytes));
  const frameBytes = IMAGE_FRAME_ROOM_BEFORE + size + IMAGE_FRAME_ROOM_AFTER;
  const spare: Buffer[] = [];
  for (let i = 0; i < image.files.length; i++) {
    const f = image.files[i] as StateImageFile;
    if (f.sizeBytes === 0) continue;
    const path = join(image.dir, f.name);
    const handle = await fsOp('open', path, () => openFile(path, 'r'));
    try {
      let offset = 0;
      while (offset < f.sizeBytes) {
        const want = Math.min(size, f.sizeBytes - offset);
        const frame = (want === size ? spare.pop() : undefined) ?? Buffer.allocUnsafe(IMAGE_FRAME_ROOM_BEFORE + want + IMAGE_FRAME_ROOM_AFTER);
        const { bytesRead } = await fsOp('read', path, () => handle.read(frame, IMAGE_FRAME_ROOM_BEFORE, want, offset));
        if (bytesRead === 0) throw new StorageError('corrupt', `${path}: ends at ${offset} bytes, the image lists ${f.sizeBytes}`, { path });
        const data = frame.subarray(IMAGE_FRAME_ROOM_BEFORE, IMAGE_FRAME_ROOM_BEFORE + bytesRead);
        Object.defineProperty(data, FRAME_ROOM, { value: { before: IMAGE_FRAME_ROOM_BEFORE, after: frame.length - IMAGE_FRAME_ROOM_BEFORE - bytesRead } });
        let released = false;
        const release = (): void => {
          if (released) return;
          released = true;
          if (frame.length === frameBytes && spare.length < IMAGE_SPARE_BUFFERS_MAX) spare.push(frame);
        };
        yield { file: i, offset, data, release };
        offset += bytesRead;
      }
    } finally {
      await handle.close();
    }
  }
}

/**
 * checkImageManifest refuses (StorageError `invalidArgument`) a manifest with
 * a name that is not a RocksDB file name (IMAGE_FILE_NAME: no path, no
 * LOCK), a name twice, more than IMAGE_FILES_MAX files, a size that is not a
 * safe integer, more than `bytesMax` bytes in all, a SHA-256 that is not 32
 * bytes, or no CURRENT (not a database).
 */
export function checkImageManifest(files: readonly StateImageFile[], path: string, bytesMax = IMAGE_BYTES_MAX): void {
  const refuse = (why: string): never => {
    throw new StorageError('invalidArgument', `state image for ${path}: ${why}`, { path });
  };
  if (files.length > IMAGE_FILES_MAX) refuse(`${files.length} files, more than ${IMAGE_FILES_MAX}`);
  const seen = new Set<string>();
  let total = 0;
  for (const f of files) {
    if (typeof f.name !== 'string' || !IMAGE_FILE_NAME.test(f.name)) refuse(`${JSON.stringify(String(f.name).slice(0, 64))} is not a RocksDB file name`);
    if (seen.has(f.name)) refuse(`${f.name} is listed twice`);
    seen.add(f.name);
    if (!Number.isSafeInteger(f.sizeBytes) || f.sizeBytes < 0) refuse(`${f.name} has a malformed size`);
    if (!(f.sha256 instanceof Uint8Array) || f.sha256.length !== 32) refuse(`${f.name} has a malformed SHA-256`);
    total += f.sizeBytes;
    if (total > bytesMax) refuse(`more than ${bytesMax} bytes`);
  }
  if (!seen.has('CURRENT')) refuse('no CURRENT file (not a RocksDB database)');
}

/**
 * checkImageSpace refuses (StorageError `io`, nothing written) an image whose
 * manifest lists more bytes than the file system holding `dir` has free, less
 * `reserveBytes` (the node's disk reserve): the sizes are the sender's word,
 * and a disk filled by an import fails the log's writes beside it too.
 */
export async function checkImageSpace(files: readonly StateImageFile[], dir: string, reserveBytes = 0): Promise<void> {
  const st = await fsOp('measure free space on', dir, () => statfs(dir));
  const freeBytes = st.bavail * st.bsize;
  const imageBytes = files.reduce((n, f) => n + f.sizeBytes, 0);
  if (imageBytes + reserveBytes > freeBytes) {
    throw new StorageError(
      'io',
      `state image for ${dir}: ${files.length} files of ${imageBytes} bytes in all need ${imageBytes + reserveBytes} bytes free (with a reserve of ${reserveBytes}), but ${freeBytes} are free: not imported`,
      { path: dir },
    );
  }
}

/**
 * ImagePiece: what verifyImageChunks hands on, in order: a file begun
 * (`begin`, every file of the manifest in turn, empty ones too), bytes of the
 * file begun last (`data`), the file ended (`end`: its size and SHA-256
 * checked against the manifest).
 */
export type ImagePiece =
  | { readonly kind: 'begin'; readonly file: number }
  | { readonly kind: 'data'; readonly file: number; readonly data: Uint8Array }
  | { readonly kind: 'end'; readonly file: number };

/**
 * verifyImageChunks checks `source` as an import must take it (the one
 * check every store's import runs: RocksStorage's writeStateImage and the
 * simulator's twin): the manifest (checkImageManifest), then the chunks in
 * manifest order, each file from offset 0 without gaps or overlaps, never
 * past its size, and each file's size and SHA-256 at its end. Errors:
 * StorageError `invalidArgument` (the manifest), `corrupt` (a chunk out of
 * order, a file short or long, a SHA-256 that differs), naming `path`; the
 * pieces handed on before then are the caller's to discard.
 */
export async function* verifyImageChunks(source: StateImageSource, path: string, bytesMax = IMAGE_BYTES_MAX): AsyncGenerator<ImagePiece, void, undefined> {
  const files = source.files;
  checkImageManifest(files, path, bytesMax);
  const corrupt = (why: string): never => {
    throw new StorageError('corrupt', `state image for ${path}: ${why}`, { path });
  };
  let current = -1;
  let written = 0;
  let hash = createHash('sha256');
  const end = (): ImagePiece => {
    const f = files[current] as StateImageFile;
    if (written !== f.sizeBytes) corrupt(`${f.name} ended at ${written} bytes, the manifest lists ${f.sizeBytes}`);
    if (!hash.digest().equals(f.sha256)) corrupt(`${f.name} does not match its SHA-256`);
    return { kind: 'end', file: current };
  };
  const begin = (): ImagePiece => {
    current++;
    written = 0;
    hash = createHash('sha256');
    return { kind: 'begin', file: current };
  };
  for await (const c of source.chunks) {
    if (!Number.isSafeInteger(c.file) || c.file < current || c.file >= files.length) corrupt(`a chunk of file ${String(c.file)} after file ${current}`);
    while (current < c.file) {
      if (current >= 0) yield end();
      yield begin();
    }
    const f = files[current] as StateImageFile;
    if (c.offset !== written) corrupt(`${f.name}: a chunk at ${c.offset}, ${written} bytes written`);
    if (written + c.data.length > f.sizeBytes) corrupt(`${f.name}: more than the ${f.sizeBytes} bytes listed`);
    hash.update(c.data);
    written += c.data.length;
    yield { kind: 'data', file: current, data: c.data };
  }
  while (current < files.length) {
    if (current >= 0) yield end();
    if (current + 1 >= files.length) break;
    yield begin();
  }
}

/**
 * writeStateImage writes `source`'s files into `dir` (which must exist and
 * be empty), mode 0600, each fsynced once whole (the syncs of finished files
 * run while the next ones are received, up to IMAGE_SYNCS_IN_FLIGHT at once)
 * and its SHA-256 checked against the manifest (verifyImageChunks); then
 * fsyncs `dir`. Errors: StorageError `invalidArgument`, `corrupt` (see
 * verifyImageChunks), `io`; what was written is then the caller's to delete.
 */
export async function writeStateImage(source: StateImageSource, dir: string, bytesMax = IMAGE_BYTES_MAX): Promise<void> {
  const files = source.files;
  let handle: Awaited<ReturnType<typeof openFile>> | null = null;
  /** syncs: the fsyncs (then closes) of finished files in flight; each resolves to its error or null (never rejects). */
  const syncs: Promise<Error | null>[] = [];
  const settle = async (p: Promise<Error | null> | undefined): Promise<void> => {
    const err = await p;
    if (err instanceof Error) throw err;
  };
  try {
    for await (const piece of verifyImageChunks(source, dir, bytesMax)) {
      const f = files[piece.file] as StateImageFile;
      const path = join(dir, f.name);
      if (piece.kind === 'begin') {
        // created exclusively: a name is never written twice
        handle = await fsOp('create', path, () => openFile(path, 'wx', 0o600));
      } else if (piece.kind === 'data') {
        const h = handle as unknown as Awaited<ReturnType<typeof openFile>>;
        const data = piece.data;
        let at = 0;
        while (at < data.length) {
          const { bytesWritten } = await fsOp('write', path, () => h.write(data, at, data.length - at));
          at += bytesWritten;
        }
      } else {
        const h = handle as unknown as Awaited<ReturnType<typeof openFile>>;
        handle = null;
        // Synced while the next files come in (one fsync per file, ~10 ms each on a loaded disk, held the import up).
        syncs.push(fsOp('fsync', path, () => h.sync()).then(() => null, (err: unknown) => err as Error).finally(() => h.close().catch(() => undefined)));
        if (syncs.length >= IMAGE_SYNCS_IN_FLIGHT) await settle(syncs.shift());
      }
    }
    while (syncs.length > 0) await settle(syncs.shift());
  } finally {
    const h = handle as Awaited<ReturnType<typeof openFile>> | null;
    if (h !== null) await h.close().catch(() => undefined);
    await Promise.all(syncs); // every file closed before the caller deletes the directory
  }
  const d = await fsOp('open', dir, () => openFile(dir, 'r'));
  try {
    await fsOp('fsync', dir, () => d.sync());
  } finally {
    await d.close();
  }
}

/** removeImageDir deletes an image's directory; never rejects. */
export async function removeImageDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true }).catch(() => undefined);
}
