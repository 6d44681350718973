/**
 * KV Range against a real API server: an answer holds at most
 * KV_RANGE_BYTES_MAX bytes of keys and values (besides its first pair), its
 * `more` set, so a range over large values pages instead of failing. Before,
 * the node read every pair up to the limit (10,000 pairs of 1 MiB values:
 * 10 GiB) into memory, encoded them, and then refused to send an answer over
 * the 64 MiB message cap: RESOURCE_EXHAUSTED, and no way to read past it.
 */
import assert from 'node:assert/strict';

import { KV_RANGE_BYTES_MAX } from '../../../src/fsm/types.js';
import { MESSAGE_BYTES_MAX } from '../../../src/client/dial.js';
import { startTestCluster, type TestCluster } from './harness.js';

const MiB = 1024 * 1024;
const enc = new TextEncoder();
const dec = new TextDecoder();

describe('api: KV Range answers within a byte cap', function () {
  this.timeout(120_000);
  let c: TestCluster;
  /** COUNT values of 1 MiB under big/: more than one answer may carry. */
  const COUNT = Math.ceil(MESSAGE_BYTES_MAX / MiB) + 2;
  const keys = Array.from({ length: COUNT }, (_, i) => `big/${String(i).padStart(3, '0')}`);

  before(async () => {
    c = await startTestCluster(1);
    const leader = await c.waitForLeader();
    for (const [i, k] of keys.entries()) await leader.kv.put({ key: enc.encode(k), value: new Uint8Array(MiB).fill(i & 0xff) }, { deadlineMs: 20_000 });
    // Just past the prefix ('0' follows '/'): paging a prefix must stop before it.
    await leader.kv.put({ key: enc.encode('big0'), value: enc.encode('outside') });
  });

  after(async () => {
    await c?.stop();
  });

  it(`a Range over ${COUNT} MiB of values answers a page of at most ${KV_RANGE_BYTES_MAX} bytes, more set`, async () => {
    const kv = c.members[0]!.kv;
    const r = await kv.range({ prefix: enc.encode('big/') }, { deadlineMs: 30_000 });
    const bytes = r.kvs.reduce((n, p) => n + p.key.length + p.value.length, 0);
    assert.ok(r.kvs.length >= 1 && bytes <= KV_RANGE_BYTES_MAX, `${r.kvs.length} pairs, ${bytes} bytes`);
    assert.deepEqual(r.kvs.map((p) => dec.decode(p.key)), keys.slice(0, r.kvs.length));
    assert.equal(r.more, true);
    // Every limit, the largest included, is cut the same way.
    const max = await kv.range({ start: enc.encode('big/'), limit: 10_000 }, { deadlineMs: 30_000 });
    assert.equal(max.kvs.length, r.kvs.length);
    assert.equal(max.more, true);
  });

  it('KvClient.rangePages reads every pair of a prefix once, in order, and stops at the prefix end', async () => {
    const kv = c.members[0]!.kv;
    const seen: string[] = [];
    let pages = 0;
    let more = true;
    for await (const page of kv.rangePages({ prefix: enc.encode('big/') }, 1000, { deadlineMs: 30_000 })) {
      pages++;
      for (const [i, p] of page.kvs.entries()) {
        assert.equal(p.value[0], (seen.length + i) & 0xff);
      }
      seen.push(...page.kvs.map((p) => dec.decode(p.key)));
      more = page.more;
    }
    assert.deepEqual(seen, keys);
    assert.equal(more, false);
    assert.ok(pages >= Math.ceil((COUNT * MiB) / KV_RANGE_BYTES_MAX), `${pages} pages`);
    // pairsMax stops it (more then says keys are left).
    const firstFive: string[] = [];
    for await (const page of kv.rangePages({ prefix: enc.encode('big/') }, 5, { deadlineMs: 30_000 })) {
      firstFive.push(...page.kvs.map((p) => dec.decode(p.key)));
      more = page.more;
    }
    assert.deepEqual(firstFive, keys.slice(0, 5));
    assert.equal(more, true);
  });
});
