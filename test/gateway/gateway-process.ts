/**
 * GatewayServe: one real `snapcoord serve` child process with its embedded
 * HTTP gateway (the API key comes through the environment, as `npm start`
 * passes it), and GatewayAlone: `snapcoord gateway --target ...`. Output is
 * kept for diagnostics; kill() always ends the child (SIGKILL after 5 s).
 */
import { Child, cleanEnv } from '../cluster/serve-process.js';

export { Child, cleanEnv, freePorts, sleep, REPO_ROOT } from '../cluster/serve-process.js';

export interface GatewayServeArgs {
  readonly id: string;
  readonly grpc: string;
  readonly http: string;
  readonly peers: string;
  readonly dataDir: string;
  readonly apiKey: string;
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
        '--http', args.http,
        '--peers', args.peers,
        '--data-dir', args.dataDir,
        '--snapshot-root', args.snapshotRoot,
        '--snapshot-dir', args.snapshotDir,
        '--log-level', 'warn',
      ],
      cleanEnv({ SNAPCOORD_API_KEY: args.apiKey }),
    );
    this.args = args;
  }

  /** ready waits for both the gateway and the gRPC "listening" lines. */
  async ready(timeoutMs = 30_000): Promise<void> {
    await this.waitFor(new RegExp(`snapcoord node ${this.args.id} gateway listening on http `), timeoutMs);
    await this.waitFor(new RegExp(`snapcoord node ${this.args.id} listening on grpc`), timeoutMs);
  }
}
