/**
 * The stand-ins the client bundle gives two libraries for node built-ins
 * (scripts/bundle-shims, scripts/bundle-cli.ts): each answers as the
 * built-in does. grpc-js's node:net answers isIPv6 and isIP without Node's
 * IPv6 expression for a string without ':'; commander's node:child_process
 * is the module itself, loaded on first use.
 */
import assert from 'node:assert/strict';
import * as childProcess from 'node:child_process';
import { createRequire } from 'node:module';
import * as net from 'node:net';

const load = createRequire(import.meta.url);
const netShim = load('../../../scripts/bundle-shims/net.cjs') as typeof net;
const childProcessShim = load('../../../scripts/bundle-shims/child-process.cjs') as typeof childProcess;

/** ADDRESSES: what grpc-js may ask about (targets, resolved addresses), and edge cases of Node's expressions. */
const ADDRESSES: readonly unknown[] = [
  '127.0.0.1', '0.0.0.0', '255.255.255.255', '256.1.1.1', '1.2.3', '01.2.3.4', '1.2.3.4 ', ' 1.2.3.4',
  '::', '::1', '1::', 'fe80::1', 'fe80::1%eth0', 'fe80::1%', '::ffff:1.2.3.4', '::ffff:256.1.1.1', '2001:db8::1:0:0:1',
  'a:b:c:d:e:f:1:2', 'a:b:c:d:e:f:1:2:3', '1:2', ':', ':::', '[::1]', 'gggg::1',
  'localhost', 'node-1.example', 'example.com:443', '', 'x', '1', 1, null, undefined,
];

describe('client bundle shims', () => {
  it('node:net for grpc-js: isIPv6, isIP and isIPv4 answer as Node does', () => {
    for (const a of ADDRESSES) {
      assert.equal(netShim.isIPv6(a as string), net.isIPv6(a as string), `isIPv6(${String(a)})`);
      assert.equal(netShim.isIP(a as string), net.isIP(a as string), `isIP(${String(a)})`);
      assert.equal(netShim.isIPv4(a as string), net.isIPv4(a as string), `isIPv4(${String(a)})`);
    }
  });

  it('node:net for grpc-js: everything else is node:net', () => {
    for (const k of ['connect', 'createConnection', 'Socket', 'Server', 'createServer', 'BlockList', 'SocketAddress']) {
      assert.equal((netShim as unknown as Record<string, unknown>)[k], (net as unknown as Record<string, unknown>)[k], k);
    }
  });

  it('node:child_process for commander: the module itself', () => {
    assert.equal(childProcessShim.spawn, childProcess.spawn);
    assert.equal(childProcessShim.execFileSync, childProcess.execFileSync);
    assert.ok('spawn' in childProcessShim);
    assert.deepEqual(Object.keys(childProcessShim).sort(), Object.keys(load('node:child_process') as object).sort());
  });
});
