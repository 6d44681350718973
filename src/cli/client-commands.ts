/**
 * The client commands: `kv put|get|del|ls|cas|txn`, `cluster status|vote|
 * transfer-leader|add|remove`, and (from their own files) `snapshot ...` and
 * `tasks ...`, talking to --endpoint (default 127.0.0.1:7001, env
 * SNAPCOORD_ENDPOINT). A failed call becomes one line
 * "snapcoord: <CODE>: <details>" and exit code 1; a bad argument exit code 2.
 */
import type { Command } from 'commander';
import { isNodeId, parseHostPort } from '../client/address.js';
import { ClusterClient } from '../client/cluster-client.js';
import { KvClient } from '../client/kv-client.js';
import type { RetryOptions } from '../client/retry-write.js';
import { Role, Suffrage, roleToJSON, suffrageToJSON, type Member, type SnapshotScrub, type StatusResponse } from '../gen/snapcoord/v1/cluster.js';
import { CHECK_ATTEMPTS_DEFAULT, CHECK_ATTEMPTS_MAX, CHECK_HASH_ALLOWANCE_MS, CHECK_WAIT_MS_DEFAULT, CHECK_WAIT_MS_MAX } from '../client/consistency-check-bounds.js';
import { CliError, EXIT_CONFIG } from './cli-error.js';
import { cliDial, cliPlaintext, clientOptions, jsonOut, oneLine, otherAddressRefusal, positiveInt, table, visible, withClient, type ClientOpts } from './client-options.js';
import type { ClientDial } from '../client/dial.js';
import { addKvTxnCommands } from './kv-txn-commands.js';
import { addSnapshotCommands } from './snapshot-commands.js';
import { addTaskCommands } from './task-commands.js';

/** REMOVED_CERT_HINT: what `cluster remove ID` tells the operator to do next (stderr: stdout is the new configuration). */
export const REMOVED_CERT_HINT = (id: string): string =>
  `next: revoke ${id}'s certificate (\`snapcoord certs revoke ${id}\`, or \`openssl ca -revoke ${id}.pem\` then \`openssl ca -gencrl\`) ` +
  `and give every member the CRL with --peer-crl: a member that missed this removal still takes ${id}'s certificate for a member's`;

export { DEFAULT_ENDPOINT, ENDPOINT_ENV, callError } from './client-options.js';

/** WRITE_RETRIES_DEFAULT: how often `kv put` / `kv del` retry a failed write (with the same request id). */
export const WRITE_RETRIES_DEFAULT = 3;

/**
 * writeRetry: the RetryOptions of `kv put` / `kv del`: --retries (0..10)
 * retries, each announced on stderr. Every attempt carries the same client
 * and request id, so the write is applied once (see kv.proto).
 */
function writeRetry(opts: { retries?: string }): RetryOptions {
  const retries = opts.retries === undefined ? WRITE_RETRIES_DEFAULT : positiveInt('retries', opts.retries, 0, 10);
  return {
    attempts: retries + 1,
    onRetry: (err, attempt) => process.stderr.write(`snapcoord: attempt ${attempt} failed (${oneLine(err.details || err.message)}); retrying with the same request id\n`),
  };
}

/** MEMBER_STATUS_DEADLINE_MS: how long `cluster status` waits for each member's own Status. */
export const MEMBER_STATUS_DEADLINE_MS = 1_500;

const enc = new TextEncoder();
const dec = new TextDecoder();

const kvClient = (endpoint: string): KvClient => new KvClient(endpoint, cliDial());
const clusterClient = (endpoint: string): ClusterClient => new ClusterClient(endpoint, cliDial());

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
      clientAddress: m.clientAddress,
      suffrage: suffrageToJSON(m.suffrage),
      matchIndex: Number(m.matchIndex),
      // Why this member refuses the answering node's peer messages ('' when it takes them): what the text form shows.
      refused: m.refused,
    })),
    ...(st.snapshotLoss !== undefined ? { snapshotLoss: { stranded: st.snapshotLoss.stranded, rebuildFailed: st.snapshotLoss.rebuildFailed, handOffTo: st.snapshotLoss.handOffTo } } : {}),
    ...(st.snapshotScrub !== undefined ? { snapshotScrub: scrubView(st.snapshotScrub) } : {}),
  };
}

/** ScrubView: a member's snapshot scrub since it started (StatusResponse.snapshot_scrub), in `cluster status --json`. */
export interface ScrubView {
  /** intervalSecs: the periodic scrub's interval (0: off). */
  readonly intervalSecs: number;
  readonly runs: number;
  readonly bytes: number;
  /** damaged: stored archives found not matching their recorded hashes (quarantined). */
  readonly damaged: number;
  /** lastRunAgoSecs: since its last run ended; null when none has. */
  readonly lastRunAgoSecs: number | null;
}

function scrubView(s: SnapshotScrub): ScrubView {
  const ago = Number(s.lastRunAgoMs);
  return { intervalSecs: Number(s.intervalSecs), runs: Number(s.runs), bytes: Number(s.bytes), damaged: Number(s.damaged), lastRunAgoSecs: ago < 0 ? null : Math.floor(ago / 1000) };
}

const ROLE_NAMES: Partial<Record<Role, string>> = {
  [Role.ROLE_FOLLOWER]: 'follower',
  [Role.ROLE_PRE_CANDIDATE]: 'pre-candidate',
  [Role.ROLE_CANDIDATE]: 'candidate',
  [Role.ROLE_LEADER]: 'leader',
};

function roleName(r: Role): string {
  return ROLE_NAMES[r] ?? 'unknown';
}

function suffrageName(s: Suffrage): string {
  return s === Suffrage.SUFFRAGE_LEARNER ? 'learner' : 'voter';
}

/** MemberView: one row of `cluster status`. */
export interface MemberView {
  readonly id: string;
  /** address: the member's client API ('' when the answering node has not learned it yet). */
  readonly address: string;
  /** peerAddress: its peer-plane (Raft) address, as in the membership. */
  readonly peerAddress: string;
  readonly suffrage: string;
  /** role: from the member's own Status; "unreachable" when it did not answer in time. */
  readonly role: string;
  readonly reachable: boolean;
  readonly term: number | null;
  readonly commitIndex: number | null;
  readonly appliedIndex: number | null;
  /** matchIndex / lag (leader commit - match): known only when the leader answered. */
  readonly matchIndex: number | null;
  readonly lag: number | null;
  readonly error?: string;
  /** refused: this member refuses the peer messages of `from` (the leader, else the endpoint node), for `reason`; absent when it takes them. */
  readonly refused?: { readonly from: string; readonly reason: string };
  /**
   * snapshotLost: a follower's own snapshot is lost (its Status' snapshot_loss): it stands for no election until it
   * holds one again; `rebuildFailed`: building a new one failed. Absent when not (the leader's is ClusterView.snapshotLoss).
   */
  readonly snapshotLost?: { readonly rebuildFailed: boolean };
  /** scrub: its snapshot scrub, from its own Status; absent when it did not answer or does not say (an older node). */
  readonly scrub?: ScrubView;
}

/**
 * SnapshotLossView: the leader's own snapshot is lost (StatusResponse.snapshot_loss):
 * `stranded` need one it cannot offer (at most STRANDED_SHOWN_MAX named, `strandedCount`
 * all of them), `rebuildFailed` building a new one failed, `handOffTo` the voter that
 * leadership is being handed to ('' for none).
 */
export interface SnapshotLossView {
  readonly leader: string;
  readonly stranded: readonly string[];
  readonly strandedCount: number;
  readonly rebuildFailed: boolean;
  readonly handOffTo: string;
}

/** STRANDED_SHOWN_MAX: stranded followers `cluster status` names; the rest are counted. */
export const STRANDED_SHOWN_MAX = 16;

/** ClusterView: the JSON of `cluster status --json`. */
export interface ClusterView {
  /** endpoint: the id of the node asked. */
  readonly endpoint: string;
  readonly leader: { readonly id: string; readonly address: string } | null;
  readonly term: number;
  /** commitIndex: the leader's (the endpoint's when the leader did not answer). */
  readonly commitIndex: number;
  readonly members: readonly MemberView[];
  /** snapshotLoss: what the leader says of its lost snapshot; absent when it says nothing (or did not answer). */
  readonly snapshotLoss?: SnapshotLossView;
}

/** MemberDial: how `cluster status` reaches the other members: the endpoint's dial, and whether --plaintext was given. */
export interface MemberDial {
  readonly dial: ClientDial;
  readonly plaintext: boolean;
}

async function statusAt(address: string, memberId: string, deadlineMs: number, md: MemberDial): Promise<StatusResponse> {
  // The endpoint's rule for every address dialled: the key never goes in plaintext to another machine unasked.
  const refusal = otherAddressRefusal(address, md.dial, md.plaintext);
  if (refusal !== null) throw refusal;
  // Over TLS the member's own certificate (or one naming no member), not any the CA signed: the key goes with the call.
  const credentials = md.dial.credentialsFor?.(memberId);
  const c = new ClusterClient(address, credentials !== undefined ? { ...md.dial, credentials } : md.dial);
  try {
    return await c.status({ deadlineMs });
  } finally {
    c.close();
  }
}

/**
 * clusterView asks the endpoint for its Status, the leader (when another
 * node) for match indexes, and every member for its own role, each with a
 * short deadline; members that do not answer are "unreachable".
 */
export async function clusterView(
  endpointStatus: StatusResponse,
  memberDeadlineMs = MEMBER_STATUS_DEADLINE_MS,
  md: MemberDial = { dial: cliDial(), plaintext: cliPlaintext() },
): Promise<ClusterView> {
  const st = endpointStatus;
  let leaderSt: StatusResponse | null = null;
  if (st.role === Role.ROLE_LEADER) leaderSt = st;
  else if (st.leaderClientAddress !== '') leaderSt = await statusAt(st.leaderClientAddress, st.leaderId, memberDeadlineMs, md).catch(() => null);
  if (leaderSt !== null && leaderSt.role !== Role.ROLE_LEADER) leaderSt = null;
  const view = leaderSt ?? st;
  const commit = Number(view.commitIndex);
  const members = await Promise.all(
    view.members.map(async (m: Member): Promise<MemberView> => {
      let own: StatusResponse | null = null;
      let error: string | undefined;
      if (m.id === st.id) own = st;
      else if (leaderSt !== null && m.id === leaderSt.id) own = leaderSt;
      else if (m.clientAddress === '') {
        error = `${st.id} has not learned ${m.id}'s client address yet`;
      } else {
        try {
          own = await statusAt(m.clientAddress, m.id, memberDeadlineMs, md);
        } catch (err) {
          error = oneLine(err instanceof CliError ? err.message : ((err as { details?: string }).details ?? (err as Error).message));
        }
      }
      const match = leaderSt !== null ? Number(m.matchIndex) : null;
      return {
        id: m.id,
        address: m.clientAddress,
        peerAddress: m.address,
        suffrage: suffrageName(m.suffrage),
        role: own !== null ? roleName(own.role) : 'unreachable',
        reachable: own !== null,
        term: own !== null ? Number(own.term) : null,
        commitIndex: own !== null ? Number(own.commitIndex) : null,
        appliedIndex: own !== null ? Number(own.appliedIndex) : null,
        matchIndex: match,
        lag: match !== null ? Math.max(0, commit - match) : null,
        ...(error !== undefined ? { error } : {}),
        ...(m.refused !== '' ? { refused: { from: view.id, reason: oneLine(m.refused) } } : {}),
        ...(own !== null && own !== leaderSt && own.snapshotLoss !== undefined ? { snapshotLost: { rebuildFailed: own.snapshotLoss.rebuildFailed } } : {}),
        ...(own?.snapshotScrub !== undefined ? { scrub: scrubView(own.snapshotScrub) } : {}),
      };
    }),
  );
  const leaderId = leaderSt?.id ?? st.leaderId;
  const loss = leaderSt?.snapshotLoss;
  return {
    endpoint: st.id,
    leader:
      leaderId !== ''
        ? { id: leaderId, address: (leaderSt !== null ? view.members.find((m) => m.id === leaderId)?.clientAddress : undefined) || st.leaderClientAddress }
        : null,
    term: Number(view.term),
    commitIndex: commit,
    members,
    ...(leaderSt !== null && loss !== undefined
      ? {
          snapshotLoss: {
            leader: oneLine(leaderSt.id),
            stranded: loss.stranded.slice(0, STRANDED_SHOWN_MAX).map(oneLine),
            strandedCount: loss.stranded.length,
            rebuildFailed: loss.rebuildFailed,
            handOffTo: oneLine(loss.handOffTo),
          },
        }
      : {}),
  };
}

/** snapshotLossText: the note under `cluster status`'s table for a leader whose snapshot is lost. */
function snapshotLossText(l: SnapshotLossView): string {
  const more = l.strandedCount > l.stranded.length ? ` and ${l.strandedCount - l.stranded.length} more` : '';
  const waiting = `${l.stranded.join(', ')}${more}`;
  const one = l.strandedCount === 1;
  if (l.strandedCount === 0) {
    if (!l.rebuildFailed) return `${l.leader}'s snapshot is lost and is being rebuilt (no follower needs one yet)`;
    return `${l.leader}'s snapshot is lost and rebuilding it failed (no follower needs one yet)\n  (free disk space on ${l.leader} or check its disk: a follower that falls behind its log will need one)`;
  }
  const needs = `${waiting} need${one ? 's' : ''} a snapshot the leader ${l.leader} cannot offer`;
  if (!l.rebuildFailed) return `${needs}: its own is lost and is being rebuilt`;
  if (l.handOffTo !== '') return `${needs}: its own is lost and rebuilding it failed; handing leadership to ${l.handOffTo}, which holds one`;
  return `${needs}: its own is lost, rebuilding it failed, and no caught-up voter holds one; ${l.leader} stays leader and ${waiting} wait${one ? 's' : ''}\n  (free disk space on ${l.leader} or check its disk: the snapshot is rebuilt by itself then)`;
}

export function clusterText(v: ClusterView): string {
  const n = (x: number | null): string => (x === null ? '-' : String(x));
  const leader =
    v.leader === null
      ? 'leader: none known (an election may be in progress)'
      : `leader: ${visible(v.leader.id)} at ${visible(v.leader.address)}, term ${v.term}, commit ${v.commitIndex}`;
  const rows = v.members.map((m) => [m.id, m.address || '?', m.role, m.suffrage, n(m.term), n(m.commitIndex), n(m.appliedIndex), n(m.matchIndex), n(m.lag), m.peerAddress]);
  // A member that refuses the leader's messages never catches up: say why, and what fixes the usual cause.
  const refusals = v.members.flatMap((m) =>
    m.refused === undefined ? [] : [`${visible(m.id)} refuses ${visible(m.refused.from)}'s messages: ${m.refused.reason}\n  (a new member must be started with --peers naming every member: \`cluster add\` prints them)`],
  );
  // A leader whose snapshot is lost leaves the followers that need one waiting: name them, and what it does about it.
  const loss = v.snapshotLoss === undefined ? [] : [snapshotLossText(v.snapshotLoss)];
  // A follower whose own snapshot is lost cannot lead until it holds one again: say so, and what to check.
  const lost = v.members.flatMap((m) =>
    m.snapshotLost === undefined
      ? []
      : [
          m.snapshotLost.rebuildFailed
            ? `${oneLine(m.id)}'s snapshot is lost and rebuilding it failed: it stands for no election until it holds one\n  (free disk space on ${oneLine(m.id)} or check its disk: the snapshot is rebuilt by itself then)`
            : `${oneLine(m.id)}'s snapshot is lost and is being rebuilt: it stands for no election until then`,
        ],
  );
  // A member whose scrub found stored archives damaged: its disk (or memory) changes bytes at rest.
  const damaged = v.members.flatMap((m) =>
    m.scrub === undefined || m.scrub.damaged === 0
      ? []
      : [
          `${oneLine(m.id)}'s snapshot scrub found ${m.scrub.damaged} stored archive${m.scrub.damaged === 1 ? '' : 's'} damaged since it started (moved to quarantine, rebuilt or fetched again)\n  (its log names them; bytes that change at rest point to its disk or memory: check them)`,
        ],
  );
  return [`${leader}\n${table(['ID', 'ADDRESS', 'ROLE', 'SUFFRAGE', 'TERM', 'COMMIT', 'APPLIED', 'MATCH', 'LAG', 'PEER'], rows)}`, ...refusals, ...loss, ...lost, ...damaged].join('\n');
}

function membersText(members: readonly Member[]): string {
  return table(
    ['ID', 'ADDRESS', 'SUFFRAGE', 'PEER'],
    members.map((m) => [m.id, m.clientAddress || '?', suffrageName(m.suffrage), m.address]),
  );
}

/** peersFlag: the --peers value naming every member at its peer address (id=host:port, comma-separated). */
export function peersFlag(members: readonly Member[]): string {
  return members.map((m) => `${m.id}=${m.address}`).join(',');
}

function membersJson(members: readonly Member[]): object[] {
  return members.map((m) => ({ id: m.id, address: m.clientAddress, peerAddress: m.address, suffrage: suffrageName(m.suffrage) }));
}

function checkNodeId(id: string): string {
  if (!isNodeId(id)) throw new CliError(`id: "${id}" is not a valid node id (letters, digits, '_', '-', '.'; at most 64)`, EXIT_CONFIG);
  return id;
}

/** addClientCommands adds `kv`, `cluster`, `snapshot` and `tasks` to `program`. */
export function addClientCommands(program: Command): void {
  const kv = program.command('kv').description('read and write keys');

  clientOptions(
    kv
      .command('put')
      .argument('<key>')
      .argument('<value>')
      .option('--retries <n>', `retries after UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED or RESOURCE_EXHAUSTED, with the same request id (0..10, default ${WRITE_RETRIES_DEFAULT})`)
      .description('set KEY to VALUE (applied once, even when retried)'),
  ).action(async (key: string, value: string, opts: ClientOpts & { retries?: string }) => {
    const retry = writeRetry(opts);
    const res = await withClient(opts, kvClient, (c, deadlineMs) => c.putIdempotent({ key: enc.encode(key), value: enc.encode(value) }, { deadlineMs, ...retry }));
    process.stdout.write(`OK (revision ${res.header?.revision ?? 0n})\n`);
  });

  clientOptions(
    kv.command('get').argument('<key>').option('--serializable', "read this node's state (may be stale)").description('print the value of KEY (exit 1 when absent)'),
  ).action(async (key: string, opts: ClientOpts & { serializable?: boolean }) => {
    const res = await withClient(opts, kvClient, (c, deadlineMs) => c.get({ key: enc.encode(key), serializable: opts.serializable === true }, { deadlineMs }));
    if (!res.found || res.kv === undefined) throw new CliError(`key ${JSON.stringify(key)} not found`);
    process.stdout.write(`${dec.decode(res.kv.value)}\n`);
  });

  clientOptions(
    kv
      .command('del')
      .argument('<key>')
      .option('--retries <n>', `retries with the same request id, as for put (default ${WRITE_RETRIES_DEFAULT})`)
      .description('delete KEY; prints how many keys were deleted (0 or 1; applied once, even when retried)'),
  ).action(async (key: string, opts: ClientOpts & { retries?: string }) => {
    const retry = writeRetry(opts);
    const res = await withClient(opts, kvClient, (c, deadlineMs) => c.deleteIdempotent({ key: enc.encode(key) }, { deadlineMs, ...retry }));
    process.stdout.write(`${res.deleted}\n`);
  });

  clientOptions(
    kv
      .command('ls')
      .argument('[prefix]', 'key prefix (default: every key)')
      .option('--limit <n>', 'at most N keys (1..10000, default 1000)')
      .option('--serializable', "read this node's state (may be stale)")
      .option('--json', 'print a JSON array of {key, value}')
      .description('list keys and values (tab separated), in key order'),
  ).action(async (prefix: string | undefined, opts: ClientOpts & { limit?: string; serializable?: boolean; json?: boolean }) => {
    const limit = opts.limit === undefined ? 1000 : positiveInt('limit', opts.limit, 1, 10_000);
    // Page by page: the node cuts an answer at its byte cap (a page of large values holds few keys).
    const json: { key: string; value: string }[] = [];
    const more = await withClient(opts, kvClient, async (c, deadlineMs) => {
      let more = false;
      for await (const page of c.rangePages({ prefix: enc.encode(prefix ?? ''), serializable: opts.serializable === true }, limit, { deadlineMs })) {
        if (opts.json === true) for (const p of page.kvs) json.push({ key: dec.decode(p.key), value: dec.decode(p.value) });
        else for (const pair of page.kvs) process.stdout.write(`${dec.decode(pair.key)}\t${dec.decode(pair.value)}\n`);
        more = page.more;
      }
      return more;
    });
    if (opts.json === true) jsonOut(json);
    if (more) process.stderr.write('(more keys match; raise --limit)\n');
  });

  addKvTxnCommands(kv, writeRetry, WRITE_RETRIES_DEFAULT);

  const cluster = program.command('cluster').description('inspect and operate the cluster');

  clientOptions(
    cluster
      .command('status')
      .option('--json', 'print JSON')
      .option('--raw', "print only the endpoint node's own Status (as JSON with --json)")
      .description("show every member's role, term, match index and lag behind the leader"),
  ).action(async (opts: ClientOpts & { json?: boolean; raw?: boolean }) => {
    const st = await withClient(opts, clusterClient, (c, deadlineMs) => c.status({ deadlineMs }));
    if (opts.raw === true) {
      if (opts.json === true) jsonOut(statusJson(st));
      else process.stdout.write(`node ${st.id}: ${roleName(st.role)}, term ${st.term}, commit ${st.commitIndex}, applied ${st.appliedIndex}, leader ${st.leaderId || '(none known)'}\n`);
      return;
    }
    const view = await clusterView(st);
    if (opts.json === true) jsonOut(view);
    else process.stdout.write(`${clusterText(view)}\n`);
  });

  clientOptions(
    cluster
      .command('vote')
      .option('--json', 'print {"success":bool,...}')
      .description("make the endpoint node the leader (Typesense's /operations/vote); a leader answers success false"),
  ).action(async (opts: ClientOpts & { json?: boolean }) => {
    const { success, st } = await withClient(opts, clusterClient, async (c, deadlineMs) => {
      const res = await c.vote({ deadlineMs });
      const after = await c.status({ deadlineMs }).catch(() => null);
      return { success: res.success, st: after };
    });
    if (opts.json === true) {
      jsonOut({ success, id: st?.id ?? null, leaderId: st?.leaderId ?? null, term: st !== null ? Number(st.term) : null });
      return;
    }
    const who = st?.id ?? 'the endpoint node';
    process.stdout.write(
      success
        ? `${who} is now the leader${st !== null ? ` (term ${st.term})` : ''}\n`
        : `${who} did not become the leader: it already leads${st !== null ? ` (term ${st.term})` : ''}; nothing changed\n`,
    );
  });

  clientOptions(
    cluster
      .command('transfer-leader')
      .alias('transfer')
      .argument('[id]', 'the new leader (default: the most caught-up voter)')
      .option('--json', 'print {"leaderId"}')
      .description('hand leadership over to ID'),
  ).action(async (target: string | undefined, opts: ClientOpts & { json?: boolean }) => {
    if (target !== undefined) checkNodeId(target);
    const res = await withClient(opts, clusterClient, (c, deadlineMs) => c.transferLeadership(target ?? '', { deadlineMs }));
    if (opts.json === true) jsonOut({ leaderId: res.leaderId });
    else process.stdout.write(`leader: ${res.leaderId}\n`);
  });

  clientOptions(
    cluster
      .command('add')
      .argument('<id>', 'the new member\'s node id')
      .argument('<address>', 'its peer (Raft) address, host:port: what it gives as --peer-listen / in --peers')
      .option('--learner', 'add it as a learner (receives the log, does not vote)')
      .option('--json', 'print the new configuration as JSON')
      .description('add a member (one at a time); prints the new configuration'),
  ).action(async (id: string, address: string, opts: ClientOpts & { learner?: boolean; json?: boolean }) => {
    checkNodeId(id);
    if (parseHostPort(address) === null) throw new CliError(`address: "${address}" is not host:port`, EXIT_CONFIG);
    // The membership before the change (null when Status fails: then the add is taken as new, as before), so a
    // promotion of a running learner is not answered with how to start a new member on an empty data dir.
    const { before, res } = await withClient(opts, clusterClient, async (c, deadlineMs) => {
      const st = await c.status({ deadlineMs }).catch(() => null);
      return { before: st, res: await c.addMember(id, address, opts.learner === true, { deadlineMs }) };
    });
    // As etcd's `member add` prints the new member's --initial-cluster: a node takes a leader its --peers (then its
    // log) do not name only after an election timeout without one, and is refused all but Raft messages by a member
    // they leave out (peer-guard.ts), so a new one started with fewer catches up late.
    const peers = peersFlag(res.members);
    const was = before?.members.find((m) => m.id === id);
    if (opts.json === true) jsonOut({ members: membersJson(res.members), peers });
    else if (was !== undefined) {
      const now = res.members.find((m) => m.id === id);
      const change = now === undefined || now.suffrage === was.suffrage ? `was already a ${suffrageName(was.suffrage)}` : `was a ${suffrageName(was.suffrage)}, now a ${suffrageName(now.suffrage)}`;
      process.stdout.write(`${membersText(res.members)}\n${id} ${change}: it keeps running on its data dir, nothing to restart\n`);
    } else process.stdout.write(`${membersText(res.members)}\nstart ${id} (an empty --data-dir) with: --id ${id} --peers ${peers}\n  (or with --join and --peers naming any one member and ${id})\n`);
  });

  clientOptions(
    cluster
      .command('remove')
      .argument('<id>', 'the member to remove')
      .option('--json', 'print the new configuration as JSON')
      .description('remove a member; prints the new configuration'),
  ).action(async (id: string, opts: ClientOpts & { json?: boolean }) => {
    checkNodeId(id);
    const res = await withClient(opts, clusterClient, (c, deadlineMs) => c.removeMember(id, { deadlineMs }));
    if (opts.json === true) jsonOut({ members: membersJson(res.members) });
    else {
      process.stdout.write(`${membersText(res.members)}\n`);
      // A member that missed the removal (offline across it, restored from an old data dir) still takes id for one.
      process.stderr.write(`${REMOVED_CERT_HINT(id)}\n`);
    }
  });

  clientOptions(
    cluster
      .command('check')
      .option('--json', 'print the verdict as JSON')
      .option('--wait-ms <ms>', `how long each member may take to reach the index (default ${CHECK_WAIT_MS_DEFAULT}, at most ${CHECK_WAIT_MS_MAX})`)
      .option('--attempts <n>', `tries at a common applied index while writes keep coming (default ${CHECK_ATTEMPTS_DEFAULT}, at most ${CHECK_ATTEMPTS_MAX})`)
      .description("compare every member's state hash at one applied index (etcd's hashkv across members); exit 0 equal, 1 a member differs, 3 inconclusive (a member did not answer, or no common index was reached)"),
  ).action(async (opts: ClientOpts & { json?: boolean; waitMs?: string; attempts?: string }) => {
    const waitMs = opts.waitMs === undefined ? CHECK_WAIT_MS_DEFAULT : Math.min(positiveInt('wait-ms', opts.waitMs, 0), CHECK_WAIT_MS_MAX);
    const attempts = opts.attempts === undefined ? CHECK_ATTEMPTS_DEFAULT : Math.min(positiveInt('attempts', opts.attempts), CHECK_ATTEMPTS_MAX);
    const deadline = { ...opts, timeoutMs: opts.timeoutMs ?? String((waitMs + CHECK_HASH_ALLOWANCE_MS) * attempts) };
    const r = await withClient(deadline, clusterClient, (c, deadlineMs) =>
      c.checkConsistency({ waitMs, attempts }, { deadlineMs }),
    );
    const index = Number(r.index);
    if (opts.json === true) {
      jsonOut({
        consistent: r.consistent,
        divergent: r.divergent,
        index,
        attempts: r.attempts,
        differing: r.differing,
        members: r.members.map((m) => ({ id: m.id, sha256: m.sha256, index: Number(m.hashedIndex), error: m.error })),
      });
    } else {
      const rows = r.members.map((m) => [m.id, m.error === '' ? String(m.hashedIndex) : '-', m.error === '' ? m.sha256 : `(${m.error})`, r.differing.includes(m.id) ? 'DIFFERS' : 'ok']);
      process.stdout.write(`${table(['MEMBER', 'INDEX', 'SHA256', ''], rows)}\n`);
      if (r.consistent) process.stdout.write(`consistent: all ${r.members.length} members hold the same state at index ${index}\n`);
      else if (r.divergent) process.stdout.write(`DIVERGENT at index ${index}: ${r.differing.join(', ')} differ${r.differing.length === 1 ? 's' : ''} from the majority\n`);
      else if (index !== 0) process.stdout.write(`inconclusive: the members that answered agree at index ${index}; no answer from ${r.differing.join(', ')}\n`);
      else process.stdout.write(`inconclusive: no common applied index within ${r.attempts} attempt(s)${r.differing.length > 0 ? `; failed or behind: ${r.differing.join(', ')}` : ''}\n`);
    }
    if (!r.consistent) process.exitCode = r.divergent ? 1 : 3;
  });

  addSnapshotCommands(program);
  addTaskCommands(program);
}
