'use strict';
/**
 * node:net as the client bundle's grpc-js sees it (scripts/bundle-cli.ts): the
 * same module, but isIPv6 and isIP answer a string without ':' without
 * running Node's IPv6 regular expression. That expression is large: its first
 * use costs ~2.7 ms and each later one ~0.6 ms of a CLI's start, and grpc-js
 * asks for every address it resolves (127.0.0.1 included). Every IPv6 address
 * Node's expression accepts holds a ':', so the answers are the same.
 */
const net = require('node:net');

/** isIPv6: net.isIPv6, false at once for a string without ':'. */
function isIPv6(s) {
  return typeof s === 'string' && s.includes(':') && net.isIPv6(s);
}

/** isIP: net.isIP (6, 4 or 0), without the IPv6 expression for a string without ':'. */
function isIP(s) {
  if (typeof s === 'string' && !s.includes(':')) return net.isIPv4(s) ? 4 : 0;
  return net.isIP(s);
}

module.exports = Object.assign(Object.create(net), { isIPv6, isIP });
