/**
 * The CLI loads the modules of the command it runs only: `snapshot save`
 * starts without the node, the state machine, the snapshot store, the
 * bench's histograms, serve's option table, the S3 client or restore's
 * upload (start-up CPU is most of a save of an unchanged state).
 */
import assert from 'node:assert/strict';
import { Child, plaintextClientEnv } from '../../harness/child.js';
import { loadedModules } from '../../harness/log-module-loads.js';

async function modulesOf(args: readonly string[]): Promise<string[]> {
  const c = new Child(args, plaintextClientEnv(), { nodeImports: ['./test/harness/log-module-loads.ts'] });
  await c.exited;
  assert.equal(c.exitCode, 0, c.lastLines());
  return loadedModules(c.stderr).map((u) => u.replace(/^file:\/\/.*?\/(src|node_modules)\//, '$1/'));
}

/** NOT_FOR_A_SAVE: modules a client command has no use for. */
const NOT_FOR_A_SAVE = [/^src\/cli\/(client|kv-txn|task)-commands\.ts$/, /^src\/client\/(kv|task)-client\.ts$/, /^src\/node\//, /^src\/raft\//, /^src\/fsm\//, /^src\/storage\//, /^src\/snapshot\/(store|archive)\.ts$/, /^src\/cli\/bench\//, /^src\/cli\/config\.ts$/, /^node_modules\/hdr-histogram-js\//, /^src\/ops\/(s3|retention)\.ts$/, /^src\/client\/(archive-upload|retry-write)\.ts$/];

describe('CLI start-up: modules loaded', function () {
  this.timeout(60_000);

  it('`snapshot save` loads none of the node, the store or the bench; the whole CLI (help) loads them', async () => {
    const all = await modulesOf(['--help']);
    // The control: the hook sees the modules a full definition loads.
    for (const m of ['src/cli/config.ts', 'src/cli/bench/commands.ts', 'src/node/node.ts', 'src/cli/snapshot-commands.ts']) assert.ok(all.includes(m), `--help loads ${m}: ${all.join(' ')}`);
    const save = await modulesOf(['snapshot', 'save', '--help']);
    assert.ok(save.includes('src/cli/snapshot-commands.ts'), save.join(' '));
    const extra = save.filter((m) => NOT_FOR_A_SAVE.some((re) => re.test(m)));
    assert.deepEqual(extra, [], `snapshot save loads ${extra.join(', ')}`);
  });
});
