/**
 * serve loads its embedded gateway's code before the node starts: loaded
 * after (as it was), its module evaluation held a restarted member's event
 * loop for 0.2-1.4 s (tsx, a loaded machine) while the member already served
 * clients and its peers counted on its answers; in bench:write's planned
 * restarts it heard its leader only once the gateway was in. One real
 * `snapcoord serve` at --log-level debug: the order of its log lines.
 */
import assert from 'node:assert/strict';
import { ServeCluster } from '../harness/serve-cluster.js';

describe('serve: the gateway code is loaded before the node starts', function () {
  this.timeout(120_000);
  let c: ServeCluster | undefined;

  after(async () => {
    // stop() removes the temp dir the cluster made.
    await c?.stop();
  });

  it("logs 'gateway code loaded' before 'node started' and before the API serves", async () => {
    c = await ServeCluster.start({ ids: ['n1'], logLevel: 'debug' });
    await c.leader();
    const msgs = (c.node('n1').proc?.output ?? '')
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => (JSON.parse(l) as { msg?: string }).msg ?? '');
    const at = (m: string): number => msgs.indexOf(m);
    assert.ok(at('gateway code loaded') >= 0, `no 'gateway code loaded' line in:\n${msgs.join('\n')}`);
    assert.ok(at('node started') > at('gateway code loaded'), msgs.join('\n'));
    assert.ok(at('api server serving') > at('gateway code loaded'), msgs.join('\n'));
  });
});
