/** GET /metrics on a node's embedded gateway: Prometheus text with the node's Raft state. */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { startServes, type ServeProcess } from '../harness/serve-process.js';
import { sleep } from '../harness/until.js';

describe('cluster: metrics', function () {
  this.timeout(60_000);
  let dir = '';
  let p: ServeProcess | undefined;

  after(async () => {
    await p?.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  });

  it('--metrics-open: serves the Raft gauges, counters and process metrics without a key', async () => {
    dir = await mkdtemp(join(tmpdir(), 'snapcoord-metrics-'));
    // /metrics needs a key unless --metrics-open: this node is started with a key and --metrics-open, and asked without one.
    p = (
      await startServes(['m1'], (id, { m1 }) => ({ id, grpc: m1.grpc, peer: m1.peer, peers: `m1=${m1.peer}`, dataDir: join(dir, 'm1'), apiKey: 'k'.repeat(24), extra: ['--metrics-open'] }))
    ).procs.m1;
    const http = /gateway listening on http (\S+)/.exec(p.output)?.[1] ?? '';
    let text = '';
    for (let i = 0; i < 100 && !/snapcoord_raft_role 3/.test(text); i++) {
      await sleep(100);
      const res = await fetch(`http://${http}/metrics`);
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-type') ?? '', /text\/plain/);
      text = await res.text();
    }
    for (const name of ['snapcoord_raft_term', 'snapcoord_raft_commit_index', 'snapcoord_raft_applied_index', 'snapcoord_log_append_seconds', 'snapcoord_snapshot_sent_bytes_total', 'snapcoord_snapshot_chunk_hash_failures_total', 'snapcoord_snapshot_install_seconds', 'snapcoord_task_queue_depth', 'process_cpu_user_seconds_total']) {
      assert.ok(text.includes(name), `${name} missing`);
    }
    assert.match(text, /snapcoord_raft_role 3/, 'a one-node cluster leads itself');
    // RocksDB's own native memory, by database and kind: the log's memtable holds the entries of the election at least.
    for (const db of ['log', 'state']) {
      for (const kind of ['memtables', 'table_readers', 'block_cache']) {
        assert.match(text, new RegExp(`^snapcoord_rocksdb_memory_bytes\\{db="${db}",kind="${kind}"\\} \\d+$`, 'm'), `${db} ${kind} missing`);
      }
    }
    const logMemtables = Number(/^snapcoord_rocksdb_memory_bytes\{db="log",kind="memtables"\} (\d+)$/m.exec(text)?.[1]);
    assert.ok(logMemtables > 0, `log memtables ${logMemtables} bytes`);
  });
});
