/**
 * GetSnapshot serves an archive from reused frames (SnapshotHandle.readFrames):
 * each piece is read into a frame that takes a later piece once grpc-js has
 * sent its message. grpc-js serializes a message only when its turn comes
 * (a server stream's Writable holds the messages written after one still
 * being sent, unserialized), so a frame given back when its message was
 * written, not sent, would be read into while its message still waits, and
 * the client would get another piece's bytes. Here every frame is overwritten
 * the moment it is given back, and the client reads slowly, so messages wait:
 * the bytes must still be the archive's, whole and ranged. A download the
 * client cancels closes its frames' file and releases its snapshot.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readdir, readFile, readlink } from 'node:fs/promises';

import { PutRequest } from '../../../src/gen/snapcoord/v1/kv.js';
import type { GetSnapshotResponse } from '../../../src/gen/snapcoord/v1/snapshot.js';
import type { FileFrame } from '../../../src/snapshot/chunk-reader.js';
import { SERVED_FRAME_BYTES, type SnapshotHandle, type SnapshotStore } from '../../../src/snapshot/store.js';
import { STREAM_UNSENT_MAX } from '../../../src/transport/stream-write-window.js';
import { SnapshotNode, unaryCall } from './snapshot-node.js';
import { sleep, until } from '../../harness/until.js';

/** FrameLog: what the wrapped handles' frame readers did. */
interface FrameLog {
  /** served: frames handed to the service. */
  served: number;
  /** released: frames given back (each overwritten with 0xee at once). */
  released: number;
  /** readers: frame readers begun and not yet closed. */
  readers: number;
  /** hold: while set, a reader waits for it before it hands over any frame after its first (the file stays mid-read). */
  hold: Promise<void> | null;
  /** heldBytes / heldBytesMax: bytes of frames handed to the service and not yet given back, now and at most. */
  heldBytes: number;
  heldBytesMax: number;
  /** pieceBytesMax: the largest piece handed over. */
  pieceBytesMax: number;
}

/** overwriteReleasedFrames makes every handle `store` opens fill a frame with 0xee the moment it is given back, and logs its frame readers. */
function overwriteReleasedFrames(store: SnapshotStore, log: FrameLog): void {
  const open = store.open.bind(store);
  store.open = async (...args: Parameters<SnapshotStore['open']>): Promise<SnapshotHandle> => {
    const h = await open(...args);
    const readFrames = (offset: number, end: number): AsyncGenerator<FileFrame> => {
      const inner = h.readFrames(offset, end);
      return (async function* () {
        log.readers++;
        try {
          let handed = 0;
          for await (const f of inner) {
            if (handed++ > 0 && log.hold !== null) await log.hold;
            log.served++;
            log.heldBytes += f.data.length;
            log.heldBytesMax = Math.max(log.heldBytesMax, log.heldBytes);
            log.pieceBytesMax = Math.max(log.pieceBytesMax, f.data.length);
            let given = false;
            const release = (): void => {
              if (!given) log.heldBytes -= f.data.length;
              given = true;
              log.released++;
              f.data.fill(0xee);
              f.release();
            };
            yield { ...f, release };
          }
        } finally {
          log.readers--;
        }
      })();
    };
    return { ...h, readFrames };
  };
}

/** slowDownload: a pinned download of [offset, offset+length) read slowly (a pause after each data message); its info digest and bytes. */
async function slowDownload(n: SnapshotNode, id: string, offset = 0, length = 0): Promise<{ digest: string; bytes: Buffer; messages: number }> {
  const client = n.snapshotClient();
  const parts: Buffer[] = [];
  let digest = '';
  for await (const m of client.getSnapshot({ stale: true, id, offset: BigInt(offset), length: BigInt(length) }) as AsyncIterable<GetSnapshotResponse>) {
    if (m.info !== undefined) digest = m.info.digest;
    if (m.data !== undefined) {
      parts.push(Buffer.from(m.data));
      await sleep(15);
    }
  }
  return { digest, bytes: Buffer.concat(parts), messages: parts.length };
}

/** openFilesAt: this process's file descriptors open on `path` (Linux /proc), or null where /proc is not there. */
async function openFilesAt(path: string): Promise<number | null> {
  let fds: string[];
  try {
    fds = await readdir('/proc/self/fd');
  } catch {
    return null;
  }
  let n = 0;
  for (const fd of fds) {
    const target = await readlink(`/proc/self/fd/${fd}`).catch(() => '');
    if (target === path) n++;
  }
  return n;
}

describe('GetSnapshot serves from reused frames', function () {
  this.timeout(60_000);
  let n: SnapshotNode;
  const log: FrameLog = { served: 0, released: 0, readers: 0, hold: null, heldBytes: 0, heldBytesMax: 0, pieceBytesMax: 0 };
  let older: { id: string; path: string; bytes: Buffer };

  before(async () => {
    n = await SnapshotNode.start();
    overwriteReleasedFrames(n.snapshots.store, log);
    // 12 MiB of incompressible values: an archive of 12+ frames, each full frame read into again and again.
    const kv = n.kvClient();
    for (let i = 0; i < 48; i++) await unaryCall((r, cb) => kv.put(r, cb), PutRequest.fromPartial({ key: Buffer.from(`big/${i}`), value: randomBytes(256 * 1024) }));
    await n.node.snapshotNow();
    await unaryCall((r, cb) => kv.put(r, cb), PutRequest.fromPartial({ key: Buffer.from('after'), value: Buffer.from('1') }));
    await n.node.snapshotNow();
    // The older of the two, pinned by id: the node keeps only the newest open itself.
    const s = (await n.snapshots.store.list()).sort((a, b) => (a.id < b.id ? -1 : 1))[0];
    assert.ok(s !== undefined);
    older = { id: s.id, path: s.path, bytes: await readFile(s.path) };
    assert.ok(older.bytes.length > 12 << 20, `archive of ${older.bytes.length} bytes`);
  });
  after(async () => {
    await n?.close();
  });

  it('a slow reader gets the archive byte for byte, though every frame is overwritten the moment it is given back', async () => {
    const before = { ...log };
    const r = await slowDownload(n, older.id);
    assert.equal(r.bytes.length, older.bytes.length);
    assert.ok(r.bytes.equals(older.bytes), 'the downloaded bytes are the archive');
    assert.equal(createHash('sha256').update(r.bytes).digest('hex'), r.digest, 'and hash to the digest its info names');
    assert.equal(log.served - before.served, r.messages, 'each data message was a frame');
    assert.equal(log.released - before.released, r.messages, 'every frame was given back once sent');
  });

  it('a download holds at most STREAM_UNSENT_MAX + 1 pieces of 256 KiB at once (issue 15: a leader serving 4 downloads held ~6 MiB each with 1 MiB pieces)', async () => {
    log.heldBytesMax = 0;
    log.pieceBytesMax = 0;
    const r = await slowDownload(n, older.id);
    assert.ok(r.bytes.equals(older.bytes), 'the downloaded bytes are the archive');
    assert.equal(SERVED_FRAME_BYTES, 256 * 1024);
    assert.equal(log.pieceBytesMax, SERVED_FRAME_BYTES, `pieces of ${log.pieceBytesMax} bytes`);
    assert.ok(r.messages >= Math.floor(older.bytes.length / SERVED_FRAME_BYTES), `${r.messages} data messages`);
    const bound = (STREAM_UNSENT_MAX + 1) * SERVED_FRAME_BYTES;
    assert.ok(log.heldBytesMax > 0 && log.heldBytesMax <= bound, `held ${log.heldBytesMax} bytes of frames at once (at most ${bound})`);
    assert.equal(log.heldBytes, 0, 'every frame given back');
  });

  it('a range (offset inside a frame, length ending inside another) is those bytes exactly', async () => {
    const offset = (1 << 20) + 12_345;
    const length = 3 * (1 << 20) + 7;
    const r = await slowDownload(n, older.id, offset, length);
    assert.ok(r.bytes.equals(older.bytes.subarray(offset, offset + length)), 'the ranged bytes are the archive slice');
    const tail = await slowDownload(n, older.id, older.bytes.length - 5);
    assert.ok(tail.bytes.equals(older.bytes.subarray(older.bytes.length - 5)));
    const none = await slowDownload(n, older.id, older.bytes.length);
    assert.equal(none.bytes.length, 0);
  });

  it('a download the client cancels closes its frame reader and file and releases its snapshot', async function () {
    if ((await openFilesAt(older.path)) === null) this.skip();
    // The reader is held after its first frame: the client cancels while the archive is still being read (without
    // the hold, a fast server could read all 12 frames and close the file before the client saw its first message).
    let letGo = (): void => undefined;
    log.hold = new Promise<void>((resolve) => (letGo = resolve));
    const client = n.snapshotClient();
    const call = client.getSnapshot({ stale: true, id: older.id });
    call.on('error', () => undefined);
    // The first data message: the download is under way, its reader open on the archive.
    await new Promise<void>((resolve, reject) => {
      const onData = (m: GetSnapshotResponse): void => {
        if (m.data === undefined) return;
        call.off('data', onData);
        call.pause();
        resolve();
      };
      call.on('data', onData);
      call.once('error', reject);
    });
    assert.equal(log.readers, 1, 'one frame reader open');
    assert.equal(await openFilesAt(older.path), 1, 'the archive open once, by the download');
    await assert.rejects(n.snapshots.store.remove(older.id), /is open/, 'the download holds its snapshot');
    call.cancel();
    letGo();
    log.hold = null;
    await until('the frame reader to close', 10_000, () => (log.readers === 0 ? true : undefined));
    await until('the archive file to be closed', 10_000, async () => ((await openFilesAt(older.path)) === 0 ? true : undefined));
    // Released: nothing pins it any more.
    await until('the snapshot to be released', 10_000, async () => ((await n.snapshots.store.remove(older.id).then(() => true, () => undefined)) ? true : undefined));
  });
});
