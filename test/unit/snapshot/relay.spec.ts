/** relay: items handed on in order, none held while suspended; closing the source as `for await` does. */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';

import { relay } from '../../../src/snapshot/relay.js';

/** Source: an async iterator of 0..n-1 that records whether it was asked to return; fails at `failAt` if given. */
class Source implements AsyncIterableIterator<number> {
  returned = 0;
  #i = 0;
  constructor(
    readonly n: number,
    readonly failAt = -1,
  ) {}
  [Symbol.asyncIterator](): AsyncIterableIterator<number> {
    return this;
  }
  async next(): Promise<IteratorResult<number>> {
    await Promise.resolve();
    if (this.#i === this.failAt) throw new Error('source failed');
    return this.#i < this.n ? { done: false, value: this.#i++ } : { done: true, value: undefined };
  }
  async return(): Promise<IteratorResult<number>> {
    this.returned++;
    return { done: true, value: undefined };
  }
}

/**
 * HOLD_SCRIPT: 32 MiB Buffers passed through relay, with a wait (a timer: another turn) after each item is taken;
 * prints the ArrayBuffers reachable after a full collection during that wait.
 */
const HOLD_SCRIPT = `
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
const { relay } = await import(${JSON.stringify(new URL('../../../src/snapshot/relay.ts', import.meta.url).href)});
setFlagsFromString('--expose-gc');
setFlagsFromString('--no-concurrent-array-buffer-sweeping');
const gc = runInNewContext('gc');
async function* source() { for (let i = 0; i < 3; i++) yield [Buffer.alloc(32 * 1024 * 1024)]; }
const it = relay(source())[Symbol.asyncIterator]();
let most = 0;
const use = (r) => !r.done && r.value.length === 1;
while (use(await it.next())) {
  await new Promise((r) => setTimeout(r, 1));
  gc();
  most = Math.max(most, process.memoryUsage().arrayBuffers);
}
console.log(JSON.stringify({ most }));
`;

describe('relay', () => {
  it('yields every item in order, calling arrived before each is handed on and consumed when the next is asked for', async () => {
    const calls: string[] = [];
    const got: number[] = [];
    for await (const x of relay(new Source(3), (v) => calls.push(`arrived ${v}`), () => calls.push('consumed'))) {
      calls.push(`got ${x}`);
      got.push(x);
    }
    assert.deepEqual(got, [0, 1, 2]);
    assert.deepEqual(calls, ['arrived 0', 'got 0', 'consumed', 'arrived 1', 'got 1', 'consumed', 'arrived 2', 'got 2', 'consumed']);
  });

  it('closes the source when its consumer stops early or arrived throws; not when the source ends or fails', async () => {
    const early = new Source(5);
    for await (const x of relay(early)) if (x === 1) break;
    assert.equal(early.returned, 1);

    const aborted = new Source(5);
    await assert.rejects(
      (async () => {
        for await (const x of relay(aborted, (v) => {
          if (v === 2) throw new Error('aborted');
        }))
          void x;
      })(),
      /aborted/,
    );
    assert.equal(aborted.returned, 1);

    const ended = new Source(2);
    for await (const x of relay(ended)) void x;
    assert.equal(ended.returned, 0);

    const failed = new Source(5, 2);
    await assert.rejects(
      (async () => {
        for await (const x of relay(failed)) void x;
      })(),
      /source failed/,
    );
    assert.equal(failed.returned, 0);
  });

  it('holds no item while its consumer waits (a fresh process: 32 MiB items, a full collection in each wait)', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', HOLD_SCRIPT], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    const [code] = (await once(child, 'exit')) as [number | null];
    assert.equal(code, 0, out);
    const { most } = JSON.parse(out) as { most: number };
    assert.ok(most < 16 * 1024 * 1024, `${most} bytes of ArrayBuffers reachable while the consumer waited`);
  });
});
