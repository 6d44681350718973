/**
 * The client commands: `kv put|get|del|ls` and `cluster status|vote|transfer`,
 * talking to --endpoint (default 127.0.0.1:7001, env SNAPCOORD_ENDPOINT). A
 * failed call becomes one line "snapcoord: <CODE>: <details>" and exit code 1.
 */
import * as grpc from '@grpc/grpc-js';
import type { Command } from 'commander';
import { parseHostPort } from '../api/address.js';
import { ClusterClient, KvClient } from '../api/clients.js';
import { Role, Suffrage, roleToJSON, suffrageToJSON, type StatusResponse } from '../gen/snapcoord/v1/cluster.js';
import { CliError, EXIT_CONFIG } from './cli-error.js';

/** ENDPOINT_ENV / DEFAULT_ENDPOINT: where client commands connect. */
export const ENDPOINT_ENV = 'SNAPCOORD_ENDPOINT';
export const DEFAULT_ENDPOINT = '127.0.0.1:7001';

interface ClientOpts {
  endpoint?: string;
  timeoutMs?: string;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

function endpointOf(opts: ClientOpts): string {
  const ep = opts.endpoint ?? process.env[ENDPOINT_ENV] ?? DEFAULT_ENDPOINT;
  if (parseHostPort(ep) === null) throw new CliError(`endpoint: "${ep}" is not host:port`, EXIT_CONFIG);
  return ep;
}

function deadlineOf(opts: ClientOpts): number {
  const t = opts.timeoutMs === undefined ? 10_000 : Number(opts.timeoutMs);
  if (!Number.isSafeInteger(t) || t < 1) throw new CliError(`timeout-ms: "${opts.timeoutMs}" is not a positive whole number`, EXIT_CONFIG);
  return t;
}

/** callError turns a gRPC failure into a one-line CliError. */
export function callError(err: unknown, endpoint: string): CliError {
  const e = err as Partial<grpc.ServiceError>;
  if (typeof e.code === 'number') {
    const name = grpc.status[e.code] ?? String(e.code);
    const hint = e.code === grpc.status.UNAVAILABLE ? ` (is a node running at ${endpoint}?)` : '';
    return new CliError(`${name}: ${(e.details ?? e.message ?? '').replace(/\s+/g, ' ')}${hint}`);
  }
  return new CliError(err instanceof Error ? err.message : String(err));
}

async function withKv<T>(opts: ClientOpts, f: (kv: KvClient, deadlineMs: number) => Promise<T>): Promise<T> {
  const endpoint = endpointOf(opts);
  const kv = new KvClient(endpoint);
  try {
    return await f(kv, deadlineOf(opts));
  } catch (err) {
    throw err instanceof CliError ? err : callError(err, endpoint);
  } finally {
    kv.close();
  }
}

async function withCluster<T>(opts: ClientOpts, f: (c: ClusterClient, deadlineMs: number) => Promise<T>): Promise<T> {
  const endpoint = endpointOf(opts);
  const c = new ClusterClient(endpoint);
  try {
    return await f(c, deadlineOf(opts));
  } catch (err) {
    throw err instanceof CliError ? err : callError(err, endpoint);
  } finally {
    c.close();
  }
}

function clientOptions(cmd: Command): Command {
  return cmd
    .option('--endpoint <host:port>', `node to talk to (env ${ENDPOINT_ENV}, default ${DEFAULT_ENDPOINT})`)
    .option('--timeout-ms <ms>', 'deadline of the call (default 10000)');
}

/** statusJson: a StatusResponse as plain JSON (enums by name, uint64 as numbers). */
export function statusJson(st: StatusResponse): object {
  return {
    id: st.id,
    role: roleToJSON(st.role),
    term: Number(st.term),
    leaderId: st.leaderId,
    leaderAddress: st.leaderAddress,
    commitIndex: Number(st.commitIndex),
    appliedIndex: Number(st.appliedIndex),
    snapshotIndex: Number(st.snapshotIndex),
    members: st.members.map((m) => ({
      id: m.id,
      address: m.address,
      suffrage: suffrageToJSON(m.suffrage),
      matchIndex: Number(m.matchIndex),
    })),
  };
}

const ROLE_NAMES: Partial<Record<Role, string>> = {
  [Role.ROLE_FOLLOWER]: 'follower',
  [Role.ROLE_PRE_CANDIDATE]: 'pre-candidate',
  [Role.ROLE_CANDIDATE]: 'candidate',
  [Role.ROLE_LEADER]: 'leader',
};

function statusText(st: StatusResponse): string {
  const lines = [
    `node ${st.id}: ${ROLE_NAMES[st.role] ?? 'unknown'}, term ${st.term}, commit ${st.commitIndex}, applied ${st.appliedIndex}`,
    `leader: ${st.leaderId === '' ? '(none known)' : `${st.leaderId} at ${st.leaderAddress}`}`,
    'members:',
    ...st.members.map(
      (m) =>
        `  ${m.id.padEnd(8)} ${m.address.padEnd(22)} ${m.suffrage === Suffrage.SUFFRAGE_LEARNER ? 'learner' : 'voter  '}` +
        (st.role === Role.ROLE_LEADER ? ` match ${m.matchIndex}` : ''),
    ),
  ];
  return lines.join('\n');
}

/** addClientCommands adds `kv` and `cluster` to `program`. */
export function addClientCommands(program: Command): void {
  const kv = program.command('kv').description('read and write keys');

  clientOptions(kv.command('put').argument('<key>').argument('<value>').description('set KEY to VALUE')).action(
    async (key: string, value: string, opts: ClientOpts) => {
      const res = await withKv(opts, (c, deadlineMs) => c.put({ key: enc.encode(key), value: enc.encode(value) }, { deadlineMs }));
      process.stdout.write(`OK (revision ${res.header?.revision ?? 0n})\n`);
    },
  );

  clientOptions(
    kv.command('get').argument('<key>').option('--serializable', 'read this node\'s state (may be stale)').description('print the value of KEY'),
  ).action(async (key: string, opts: ClientOpts & { serializable?: boolean }) => {
    const res = await withKv(opts, (c, deadlineMs) => c.get({ key: enc.encode(key), serializable: opts.serializable === true }, { deadlineMs }));
    if (!res.found || res.kv === undefined) throw new CliError(`key ${JSON.stringify(key)} not found`);
    process.stdout.write(`${dec.decode(res.kv.value)}\n`);
  });

  clientOptions(kv.command('del').argument('<key>').description('delete KEY; prints how many keys were deleted (0 or 1)')).action(
    async (key: string, opts: ClientOpts) => {
      const res = await withKv(opts, (c, deadlineMs) => c.delete({ key: enc.encode(key) }, { deadlineMs }));
      process.stdout.write(`${res.deleted}\n`);
    },
  );

  clientOptions(
    kv
      .command('ls')
      .argument('[prefix]', 'key prefix (default: every key)')
      .option('--limit <n>', 'at most N keys (1..10000, default 1000)')
      .option('--serializable', 'read this node\'s state (may be stale)')
      .description('list keys and values, in key order'),
  ).action(async (prefix: string | undefined, opts: ClientOpts & { limit?: string; serializable?: boolean }) => {
    const limit = opts.limit === undefined ? 0 : Number(opts.limit);
    if (!Number.isSafeInteger(limit) || limit < 0) throw new CliError(`limit: "${opts.limit}" is not a whole number`, EXIT_CONFIG);
    const res = await withKv(opts, (c, deadlineMs) =>
      c.range({ prefix: enc.encode(prefix ?? ''), limit, serializable: opts.serializable === true }, { deadlineMs }),
    );
    for (const pair of res.kvs) process.stdout.write(`${dec.decode(pair.key)}\t${dec.decode(pair.value)}\n`);
    if (res.more) process.stderr.write('(more keys match; raise --limit)\n');
  });

  const cluster = program.command('cluster').description('inspect and operate the cluster');

  clientOptions(cluster.command('status').option('--json', 'print JSON').description('show the node\'s view of the cluster')).action(
    async (opts: ClientOpts & { json?: boolean }) => {
      const st = await withCluster(opts, (c, deadlineMs) => c.status({ deadlineMs }));
      process.stdout.write(`${opts.json === true ? JSON.stringify(statusJson(st), null, 2) : statusText(st)}\n`);
    },
  );

  clientOptions(cluster.command('vote').description('make the endpoint node the leader (Typesense\'s /operations/vote)')).action(
    async (opts: ClientOpts) => {
      const res = await withCluster(opts, (c, deadlineMs) => c.vote({ deadlineMs }));
      process.stdout.write(`${JSON.stringify({ success: res.success })}\n`);
    },
  );

  clientOptions(
    cluster.command('transfer').argument('[target]', 'new leader (default: the most caught-up voter)').description('hand leadership over'),
  ).action(async (target: string | undefined, opts: ClientOpts) => {
    const res = await withCluster(opts, (c, deadlineMs) => c.transferLeadership(target ?? '', { deadlineMs }));
    process.stdout.write(`leader: ${res.leaderId}\n`);
  });
}
