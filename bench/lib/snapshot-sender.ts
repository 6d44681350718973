/**
 * Child of bench/snapshot.ts: the sending side. Serves, on 127.0.0.1:--port,
 *   - RaftService FetchSnapshot (createRaftService, openSnapshot = readChunks
 *     on --archive with the chunk hashes recorded when the store opened it):
 *     snapcoord's real serving path (SnapshotManager.openChunks);
 *   - /bench.RawStream/Pull: the archive's bytes in --chunk-bytes messages,
 *     no protobuf, no hashing, read into the buffers of chunks already sent
 *     as readChunks does (the ceiling).
 * Prints `ready` once bound; on SIGTERM prints its peak RSS and exits 0.
 * With --cert/--key/--ca it serves as a node's peer plane does: mutual TLS,
 * a client certificate signed by --ca required at the handshake.
 *
 *   node --import tsx bench/lib/snapshot-sender.ts --port P --archive F --digest HEX --index N --chunk-bytes B
 *                                                  [--cert F --key F --ca F]
 */
import { open } from 'node:fs/promises';
import * as grpc from '@grpc/grpc-js';

import { serverCredentialsFromFiles } from '../../src/tls/index.js';
import { RAFT_SERVICE_DEFINITION } from '../../src/transport/fetch-serializer.js';
import { basename, dirname } from 'node:path';
import { readChunks } from '../../src/snapshot/chunk-reader.js';
import { CHUNK_HASH_BYTES, SnapshotStore } from '../../src/snapshot/store.js';
import { createRaftService } from '../../src/transport/raft-service.js';
import type { RaftRequestHandler } from '../../src/transport/transport.js';
import { threadCpu, threadCpuByGroup } from './thread-cpu.js';
import { RAW_STREAM_SERVICE, RssSampler, args, exitWithParent, need, report, writable } from './snapshot-common.js';

const rss = new RssSampler(100);
exitWithParent();
const a = args();
const port = Number(need(a, 'port'));
const archive = need(a, 'archive');
const digest = need(a, 'digest');
const index = Number(need(a, 'index'));
const defaultChunk = Number(need(a, 'chunk-bytes'));
const certFile = a.get('cert');
// As serve does for --peer-cert/--peer-key/--peer-ca: mutual TLS, client certificates required.
const credentials =
  certFile !== undefined
    ? serverCredentialsFromFiles({ certFile, keyFile: need(a, 'key'), caFile: need(a, 'ca'), requireClientCert: true })
    : grpc.ServerCredentials.createInsecure();
// As a node does: the archive is opened (verified) once, recording its chunk hashes, before serving.
const store = await SnapshotStore.open(dirname(dirname(archive)), { retain: 1000 });
const handle = await store.open(basename(dirname(archive)));
const known = { chunkBytes: CHUNK_HASH_BYTES, sha256s: handle.chunkSha256s };

let streams = 0;
/** CPU time is counted from `ready` on (start-up and module loading excluded). */
let cpuAtReady: NodeJS.CpuUsage | undefined;
let threadsAtReady: ReturnType<typeof threadCpu> | undefined;
let faultsAtReady = 0;
let bytesServed = 0;

const handler: RaftRequestHandler = {
  handleRequest: () => Promise.reject(Object.assign(new Error('bench sender serves FetchSnapshot only'), { code: grpc.status.UNIMPLEMENTED })),
  handleReport: () => undefined,
  openSnapshot: (p) => {
    if (p.index !== index || p.digest !== digest) {
      return Promise.reject(Object.assign(new Error(`no snapshot ${p.index} ${p.digest.slice(0, 12)}`), { code: grpc.status.NOT_FOUND }));
    }
    streams++;
    return Promise.resolve(readChunks(archive, p.offset, p.chunkBytes > 0 ? p.chunkBytes : defaultChunk, known));
  },
};

/**
 * rawPull streams the archive file in chunks as they are read: no hashing, no
 * protobuf. As the fetch's sender does (readChunks), a chunk's buffer takes a
 * later chunk once grpc-js has sent it (its write callback: the bytes are in
 * grpc-js's own framed buffer by then), so the ceiling pays no fresh 1 MiB
 * buffer per chunk that the fetch does not pay either.
 */
function rawPull(call: grpc.ServerWritableStream<Buffer, Buffer>): void {
  void (async () => {
    streams++;
    let chunkBytes = defaultChunk;
    try {
      const req = JSON.parse(call.request.toString('utf8')) as { chunkBytes?: number };
      if (typeof req.chunkBytes === 'number' && req.chunkBytes > 0) chunkBytes = req.chunkBytes;
    } catch {
      // default chunk size
    }
    const fh = await open(archive, 'r');
    /** spare: buffers of full chunks already sent, for the next reads (bounded by the messages grpc-js queues). */
    const spare: Buffer[] = [];
    try {
      const total = (await fh.stat()).size;
      let pos = 0;
      while (pos < total && !call.cancelled) {
        const want = Math.min(chunkBytes, total - pos);
        const buf = (want === chunkBytes ? spare.pop() : undefined) ?? Buffer.allocUnsafe(want);
        const { bytesRead } = await fh.read(buf, 0, want, pos);
        if (bytesRead === 0) throw new Error('archive shrank');
        pos += bytesRead;
        bytesServed += bytesRead;
        const sent = (): void => {
          if (buf.length === chunkBytes && spare.length < 32) spare.push(buf);
        };
        if (!call.write(buf.subarray(0, bytesRead), sent)) await writable(call);
      }
      if (!call.cancelled) call.end();
    } catch (err) {
      if (!call.cancelled) call.emit('error', Object.assign(err as Error, { code: grpc.status.INTERNAL }));
    } finally {
      await fh.close();
    }
  })();
}

const server = new grpc.Server();
server.addService(RAFT_SERVICE_DEFINITION, createRaftService(handler));
server.addService(RAW_STREAM_SERVICE, { pull: rawPull });
server.bindAsync(`127.0.0.1:${port}`, credentials, (err, bound) => {
  if (err !== null) {
    report({ error: `bind 127.0.0.1:${port}: ${err.message}` });
    process.exit(2);
  }
  cpuAtReady = process.cpuUsage();
  faultsAtReady = process.resourceUsage().minorPageFault;
  threadsAtReady = threadCpu();
  report({ ready: true, port: bound, tls: certFile !== undefined, rss: rss.sample() });
});

process.on('SIGTERM', () => {
  rss.stop();
  const cpu = process.cpuUsage(cpuAtReady);
  const cpuSeconds = (cpu.user + cpu.system) / 1e6;
  const threadSeconds = threadCpuByGroup(threadsAtReady ?? new Map(), threadCpu(), cpuSeconds);
  const minorFaults = process.resourceUsage().minorPageFault - faultsAtReady;
  report({ peakRss: rss.peak, baselineRss: rss.baseline, streams, rawBytesServed: bytesServed, cpuSeconds, threadCpu: threadSeconds, minorFaults });
  server.forceShutdown();
  process.exit(0);
});
