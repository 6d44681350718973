/**
 * The V8 settings `npm run sim` (and `npm run sim:node`) run the simulator's
 * worker threads with: single-threaded V8 (3c564d0), and semi-spaces of 64 MiB
 * from the start (--min-semi-space-size=64 --max-semi-space-size=64). A seed
 * allocates ~19 MB and keeps its cluster alive to its end; with V8's default
 * semi-space (1 MiB, grown to 16) a worker scavenged about once a seed, each
 * time copying and then promoting that seed's live state (old-space garbage
 * for the mark-compacts after it); at 64 MiB it scavenges about every three
 * seeds, when most of what it holds belongs to seeds already over. The flags
 * are process-wide, so every worker isolate gets them.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

/** SEMI_SPACE_BYTES_MIN: the semi-space a simulator worker starts with. */
const SEMI_SPACE_BYTES_MIN = 64 * 2 ** 20;

/** workerNewSpaceBytes: the new space of a fresh worker thread of `node <flags>` (its semi-space as it starts). */
function workerNewSpaceBytes(flags: readonly string[]): number {
  const inWorker =
    "const v8 = require('node:v8'); require('node:worker_threads').parentPort.postMessage(v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_size)";
  const probe = `new (require('node:worker_threads').Worker)(${JSON.stringify(inWorker)}, { eval: true, execArgv: [] }).once('message', (n) => console.log(n))`;
  return Number(execFileSync(process.execPath, [...flags, '-e', probe], { encoding: 'utf8', timeout: 30_000 }).trim());
}

describe('npm run sim: the V8 settings of its worker threads', function () {
  this.timeout(60_000);

  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { scripts: Record<string, string> };
  for (const name of ['sim', 'sim:node']) {
    it(`${name}: single-threaded V8 and workers that start with 64 MiB semi-spaces`, () => {
      const script = pkg.scripts[name] ?? '';
      const m = /^node((?: --[a-z-]+(?:=\d+)?)+) --import tsx test\/sim\/node-campaign\.ts$/.exec(script);
      assert.ok(m !== null, `unexpected script: ${script}`);
      const flags = (m[1] as string).trim().split(' ');
      assert.ok(flags.includes('--single-threaded'), script);
      const bytes = workerNewSpaceBytes(flags);
      assert.ok(bytes >= SEMI_SPACE_BYTES_MIN, `a worker of \`${script}\` starts with a new space of ${bytes} bytes, under ${SEMI_SPACE_BYTES_MIN}`);
    });
  }
});
