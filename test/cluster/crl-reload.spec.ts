/**
 * serve --peer-crl on real processes: a certificate revoked while the
 * cluster runs (`snapcoord certs revoke`, as an operator does after `cluster
 * remove`) is refused on the peer plane without a restart: at once on
 * SIGHUP, within the 5 s look otherwise. A corrupt crl.pem written over it
 * changes nothing: the last good CRL stays in use (the revoked member stays
 * refused) and the node says so, in its log and in /metrics
 * (snapcoord_peer_crl_file_refused). Before, only the parts were unit-tested;
 * `npm start` gave its nodes --peer-crl only when crl.pem existed at start.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createCrl, readCa } from '../../src/tls/index.js';
import { describeRun, runCli } from '../harness/child.js';
import { ServeCluster, type ServeNode } from '../harness/serve-cluster.js';
import { until } from '../harness/until.js';

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

/** metric: the value of `name` (a series with its labels, as printed) in node `n`'s /metrics (0 when absent). */
async function metric(n: ServeNode, name: string): Promise<number> {
  const res = await fetch(`http://${n.http}/metrics`);
  const text = await res.text();
  const m = new RegExp(`^${name.replace(/[{}]/g, '\\$&')} (\\d+)$`, 'm').exec(text);
  return m === null ? 0 : Number(m[1]);
}

/** revokedRefusals: node `n`'s snapcoord_peer_messages_refused_total{reason="revoked"}. */
async function revokedRefusals(n: ServeNode): Promise<number> {
  return metric(n, 'snapcoord_peer_messages_refused_total{reason="revoked"}');
}

describe('cluster: a peer certificate revoked while the nodes run (serve --peer-crl, no restart)', function () {
  this.timeout(180_000);
  let c: ServeCluster | null = null;

  after(async () => {
    await c?.stop();
  });

  it('certs revoke n3: n1 (SIGHUP) and n2 (its 5 s look) refuse n3 as revoked, writes go on; a corrupt crl.pem then changes nothing', async () => {
    let crlFile = '';
    // Every node starts with the (empty) CRL, as `npm start` now gives it.
    const cluster = await ServeCluster.create({ tls: true, logLevel: 'info', extra: () => ['--metrics-open', '--peer-crl', crlFile] });
    c = cluster;
    const tlsDir = cluster.tls?.dir ?? '';
    crlFile = join(tlsDir, 'crl.pem');
    await writeFile(crlFile, await createCrl(await readCa(tlsDir), []));
    await cluster.startAll();
    await cluster.leader(60_000);
    const [n1, n2, n3] = ['n1', 'n2', 'n3'].map((id) => cluster.node(id)) as [ServeNode, ServeNode, ServeNode];
    assert.equal(await revokedRefusals(n1), 0);

    const revoke = ['certs', 'revoke', 'n3', '--dir', tlsDir];
    const r = await runCli(revoke);
    assert.equal(r.code, 0, describeRun(revoke, r));
    // n1 reads it at once on SIGHUP, and says what it holds now.
    n1.proc?.proc.kill('SIGHUP');
    await n1.proc?.waitFor(/peer CRL read again \(SIGHUP\)/, 10_000);
    assert.match(n1.proc?.output ?? '', /"revoked":1,[^\n]*peer CRL read again \(SIGHUP\)/);
    // n2 was not signalled: its periodic look takes the new CRL within 5 s.
    await n2.proc?.waitFor(/peer CRL reloaded/, 15_000);
    await until('n1 and n2 to refuse n3 as revoked', 30_000, async () => ((await revokedRefusals(n1)) > 0 && (await revokedRefusals(n2)) > 0 ? true : undefined), { everyMs: 250 });
    assert.ok(n1.proc?.running && n2.proc?.running && n3.proc?.running, 'no node restarted');
    assert.equal(await metric(n1, 'snapcoord_peer_crl_revoked_certificates'), 1);
    assert.equal(await metric(n1, 'snapcoord_peer_crl_file_refused'), 0);
    assert.ok((await metric(n1, 'snapcoord_peer_crl_next_update_timestamp_seconds')) > Date.now() / 1000 + 20 * 86_400, 'certs revoke signs for 30 days');

    // n1 and n2 are a quorum without n3: a leader among them, and writes commit.
    const leader = await cluster.leader(30_000, [n1, n2]);
    await leader.kv.put({ key: enc('after-revoke'), value: enc('ok') }, { deadlineMs: 10_000 });

    // A corrupt crl.pem: nothing changes; the node says it keeps the previous CRL.
    await writeFile(crlFile, 'not a CRL at all\n');
    n1.proc?.proc.kill('SIGHUP');
    await n1.proc?.waitFor(/peer CRL changed but cannot be used; keeping the previous one/, 10_000);
    assert.match(n1.proc?.output ?? '', /CRL not reloaded, the previous one stays in use: [^\n]*crl\.pem: not a CRL/);
    await n2.proc?.waitFor(/peer CRL changed but cannot be used; keeping the previous one/, 15_000);
    for (const n of [n1, n2]) {
      assert.equal(await metric(n, 'snapcoord_peer_crl_file_refused'), 1, `${n.id}: the file on disk is refused`);
      assert.equal(await metric(n, 'snapcoord_peer_crl_revoked_certificates'), 1, `${n.id}: the last good CRL is in use`);
    }
    const before1 = await revokedRefusals(n1);
    const before2 = await revokedRefusals(n2);
    await until('n3 refused again after the corrupt file', 30_000, async () => ((await revokedRefusals(n1)) > before1 && (await revokedRefusals(n2)) > before2 ? true : undefined), { everyMs: 250 });
    await leader.kv.put({ key: enc('after-corrupt'), value: enc('ok') }, { deadlineMs: 10_000 });
    assert.ok(n1.proc?.running && n2.proc?.running, 'SIGHUP did not stop them');
  });
});
