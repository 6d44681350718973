/**
 * missingNodeSettings (src/cli/node-runtime.ts): what `serve` warns about
 * when a node process was started without the memory settings its
 * launchers give it (V8 flags by name, malloc variables by name).
 */
import assert from 'node:assert/strict';

import { NODE_MALLOC_ENV, NODE_V8_FLAGS, missingNodeSettings } from '../../../src/cli/node-runtime.js';

describe('cli: a node process started without its memory settings', () => {
  const allFlags = [...NODE_V8_FLAGS];
  const names = NODE_V8_FLAGS.map((f) => f.split('=')[0] as string);

  it('nothing is missing when started as the launchers start it', () => {
    assert.deepEqual(missingNodeSettings(allFlags, { ...NODE_MALLOC_ENV }), []);
  });

  it('names each V8 flag and malloc variable missing, and takes an operator\'s own values or NODE_OPTIONS as given', () => {
    assert.deepEqual(missingNodeSettings([], {}), [...names, ...Object.keys(NODE_MALLOC_ENV)]);
    const [first, ...rest] = names;
    const own = [`${first}=16`, ...rest.map((n) => `${n}=1`)];
    assert.deepEqual(missingNodeSettings(own, { ...NODE_MALLOC_ENV, MALLOC_ARENA_MAX: '2' }), []);
    assert.deepEqual(missingNodeSettings([], { ...NODE_MALLOC_ENV, NODE_OPTIONS: `--enable-source-maps ${NODE_V8_FLAGS.join(' ')}` }), []);
    const { MALLOC_ARENA_MAX: _gone, ...withoutArena } = NODE_MALLOC_ENV;
    assert.deepEqual(missingNodeSettings(allFlags, withoutArena), ['MALLOC_ARENA_MAX']);
    assert.deepEqual(missingNodeSettings([`${first}x=1`], { ...NODE_MALLOC_ENV }), names, 'a flag of a longer name is not this one');
  });
});
