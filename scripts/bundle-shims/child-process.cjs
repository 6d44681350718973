'use strict';
/**
 * node:child_process as the client bundle's commander sees it
 * (scripts/bundle-cli.ts): loaded on first use. commander requires it at
 * start-up but runs it only for a command that is a program of its own
 * (snapcoord has none); loading it cost ~1.9 ms of every client command's start.
 */
let loaded;
const load = () => (loaded ??= require('node:child_process'));

module.exports = new Proxy({}, {
  get: (_target, key) => load()[key],
  has: (_target, key) => key in load(),
  ownKeys: () => Reflect.ownKeys(load()),
  getOwnPropertyDescriptor: (_target, key) => {
    const d = Reflect.getOwnPropertyDescriptor(load(), key);
    return d === undefined ? undefined : { ...d, configurable: true };
  },
});
