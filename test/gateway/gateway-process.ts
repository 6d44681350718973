/**
 * GatewayServe: one real `snapcoord serve` child process with its embedded
 * HTTP gateway (the API key comes through the environment, as `npm start`
 * passes it; the client plane asks for it too), its client plane on `grpc`
 * and its peer plane on `peer`. Output is kept for diagnostics; kill() always
 * ends the child (SIGKILL after 5 s).
 */
import { Child, cleanEnv } from '../cluster/serve-process.js';

export { Child, cleanEnv, freeNodeAddresses, freePorts, peersFlag, plaintextClientEnv, sleep, REPO_ROOT, type NodeAddresses } from '../cluster/serve-process.js';

export interface GatewayServeArgs {
  readonly id: string;
  /** grpc: the client plane (--grpc). */
  readonly grpc: string;
  /** peer: the peer plane (--peer-listen). */
  readonly peer: string;
  readonly http: string;
  /** peers: the membership, "id=<peer address>,...". */
  readonly peers: string;
  readonly dataDir: string;
  readonly apiKey: string;
  /** apiKeys: extra keys the node (client plane and gateway) accepts, as SNAPCOORD_API_KEYS JSON (default none). */
  readonly apiKeys?: readonly { readonly key: string; readonly actions: readonly string[] }[];
  readonly snapshotRoot: string;
  readonly snapshotDir: string;
}

/** GatewayServe: `snapcoord serve` with SNAPCOORD_API_KEY in its environment. */
export class GatewayServe extends Child {
  readonly args: GatewayServeArgs;

  constructor(args: GatewayServeArgs) {
    super(
      [
        'serve',
        '--id', args.id,
        '--grpc', args.grpc,
        '--peer-listen', args.peer,
        '--http', args.http,
        '--peers', args.peers,
        '--data-dir', args.dataDir,
        '--snapshot-root', args.snapshotRoot,
        '--snapshot-dir', args.snapshotDir,
        '--log-level', 'warn',
      ],
      cleanEnv({ SNAPCOORD_API_KEY: args.apiKey, ...(args.apiKeys !== undefined ? { SNAPCOORD_API_KEYS: JSON.stringify(args.apiKeys) } : {}) }),
    );
    this.args = args;
  }

  /** ready waits for both the gateway and the gRPC "listening on grpc <client> peer <peer>" lines. */
  async ready(timeoutMs = 30_000): Promise<void> {
    await this.waitFor(new RegExp(`snapcoord node ${this.args.id} gateway listening on http `), timeoutMs);
    await this.waitFor(new RegExp(`snapcoord node ${this.args.id} listening on grpc ${escapeRe(this.args.grpc)} peer ${escapeRe(this.args.peer)}\\n`), timeoutMs);
  }
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
