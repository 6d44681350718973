/**
 * httpPut: one raw HTTP PUT for real-process tests of the gateway's upload routes.
 */
import { request as httpRequest } from 'node:http';

/** httpPut sends `body` with PUT to http://address/path and resolves with the status and body text; rejects on a connection error. */
export function httpPut(address: string, path: string, body: Buffer): Promise<{ status: number; text: string }> {
  const at = address.lastIndexOf(':');
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      { host: address.slice(0, at), port: Number(address.slice(at + 1)), path, method: 'PUT', headers: { 'content-type': 'application/octet-stream', 'content-length': body.length } },
      (res) => {
        const parts: Buffer[] = [];
        res.on('data', (c: Buffer) => parts.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(parts).toString('utf8') }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}
