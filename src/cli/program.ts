/**
 * The `snapcoord` CLI: serve, gateway, local, kv, cluster, snapshot, tasks.
 * main.ts runs it (runCli), from these modules or, for the client commands,
 * from the one-file bundle of this module (fast-start.ts).
 * Errors print one line "snapcoord: <message>" on stderr; the exit code is 1
 * for a failed operation, 2 for bad configuration or a refused data dir.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Command, CommanderError, Option } from 'commander';
import { dialWithCa, type ClientDial } from '../client/dial.js';
import { checkTlsFiles } from '../tls/index.js';
import { isLoopback, parseHostPort } from '../client/address.js';
import { protoDir } from '../api/proto-dir.js';
import type { ApiKeySpec } from '../gateway/index.js';
import { CliError, EXIT_CONFIG } from './cli-error.js';
import { DEFAULT_ENDPOINT, ENDPOINT_ENV, configureDial, visible } from './client-options.js';
import { LOG_LEVELS, envName } from './config-env.js';
import { firstWord } from './fast-start.js';
import { adminKeyOf, keyFileExposure, readApiKeysFile, tlsKeyFileWarnings } from './key-file.js';

function version(): string {
  try {
    const pkg = JSON.parse(readFileSync(join(dirname(protoDir()), 'package.json'), 'utf8')) as { version?: string };
    return pkg.version ?? '0.0.0';
  } catch {
    return '0.0.0';
  }
}

function intArg(name: string): (v: string) => number {
  return (v) => {
    if (!/^\d{1,9}$/.test(v)) throw new CliError(`${name}: "${v}" is not a whole number`, 2);
    return Number(v);
  };
}

/** COMMAND_GROUPS: the top-level commands whose definitions live in modules of their own (loaded only when named). */
const COMMAND_GROUPS = ['serve', 'kv', 'cluster', 'snapshot', 'tasks', 'certs', 'bench'] as const;

/**
 * commandNamed: the top-level command `argv` names (firstWord) if it is one
 * of COMMAND_GROUPS, else null (no command, `help`, an unknown word: every
 * command is defined, so help and errors list them all).
 */
function commandNamed(argv: readonly string[]): (typeof COMMAND_GROUPS)[number] | null {
  const first = firstWord(argv);
  return (COMMAND_GROUPS as readonly string[]).includes(first ?? '') ? (first as (typeof COMMAND_GROUPS)[number]) : null;
}

/**
 * buildProgram defines the CLI. Only the modules of the command `argv` names
 * are loaded (commandNamed; all of them when it names none): `snapshot save`
 * starts without the node, the bench's histograms or serve's option table.
 */
async function buildProgram(argv: readonly string[] = process.argv): Promise<Command> {
  const named = commandNamed(argv);
  const wanted = (group: (typeof COMMAND_GROUPS)[number]): boolean => named === null || named === group;
  const program = new Command('snapcoord')
    .description('a small Raft-replicated key-value store whose headline job is snapshots')
    .version(version());

  if (wanted('serve')) await addServeCommand(program);

  program
    .command('gateway')
    .description("run the REST gateway alone, in front of a node's gRPC API")
    .requiredOption('--target <host:port>', "the node's gRPC address")
    .option('--http <host:port>', 'HTTP listen address (port 0: any free port)', '127.0.0.1:8108')
    .option('--api-key <key>', `admin API key [env ${envName('api-key')}] (prefer --api-key-file: a flag shows in /proc/*/cmdline)`)
    .option('--api-key-file <file>', `read the admin API key from this file (first line) [env ${envName('api-key-file')}]`)
    .option('--api-keys <json>', `extra keys, a JSON array [{"key","actions"}] [env ${envName('api-keys')}] (prefer --api-keys-file: a flag shows in /proc/*/cmdline)`)
    .option('--api-keys-file <file>', `read --api-keys' JSON array from this file (at most 1 MiB) [env ${envName('api-keys-file')}]`)
    .option('--insecure-no-auth', `ask for no key [env ${envName('insecure-no-auth')}]`)
    .option('--restore-bytes-max <bytes>', 'largest restore body in bytes (default 64 GiB)')
    .option('--cacert <file>', `CA that signs the target's TLS certificate (env ${envName('cacert')}; default plaintext)`)
    .option('--expect-member <id>', `the target's TLS certificate must name this member (urn:snapcoord:node:<id>) [env ${envName('expect-member')}]`)
    .option('--client-cert <file>', `present this client certificate to the target (a node started with --client-ca; \`snapcoord certs client NAME\` makes one) [env ${envName('client-cert')}]`)
    .option('--client-key <file>', `the private key of --client-cert [env ${envName('client-key')}]`)
    .option('--metrics-open', `serve /metrics without a key [env ${envName('metrics-open')}]`)
    .option('--http-cert <file>', `serve HTTPS with this certificate (PEM; with --http-key; reloaded when it changes) [env ${envName('http-cert')}]`)
    .option('--http-key <file>', `the private key of --http-cert (PEM) [env ${envName('http-key')}]`)
    .option('--insecure-plaintext', `allow a non-loopback --http without HTTPS, or a non-loopback --target without --cacert (keys then cross the network in the clear) [env ${envName('insecure-plaintext')}]`)
    .option('--log-level <level>', `log level: ${LOG_LEVELS.join(', ')}`, 'info')
    .action(
      async (opts: {
        target: string;
        http: string;
        apiKey?: string;
        apiKeyFile?: string;
        apiKeys?: string;
        apiKeysFile?: string;
        insecureNoAuth?: boolean;
        restoreBytesMax?: string;
        cacert?: string;
        expectMember?: string;
        clientCert?: string;
        clientKey?: string;
        metricsOpen?: boolean;
        httpCert?: string;
        httpKey?: string;
        insecurePlaintext?: boolean;
        logLevel: string;
      }) => {
        const target = parseHostPort(opts.target);
        if (target === null) throw new CliError(`target: "${opts.target}" is not host:port`, EXIT_CONFIG);
        const http = parseHostPort(opts.http, true);
        if (http === null) throw new CliError(`http: "${opts.http}" is not host:port`, EXIT_CONFIG);
        const httpCert = opts.httpCert ?? process.env[envName('http-cert')] ?? '';
        const httpKey = opts.httpKey ?? process.env[envName('http-key')] ?? '';
        if ((httpCert === '') !== (httpKey === '')) throw new CliError('http-cert and http-key go together: give both for HTTPS, or neither', EXIT_CONFIG);
        const cacert = opts.cacert ?? process.env[envName('cacert')] ?? '';
        // The gateway reads its callers' keys from --http and sends them on to --target: as serve does for its
        // listeners (and the CLI for its calls), neither goes off this machine in the clear unless asked.
        const insecurePlaintext = opts.insecurePlaintext === true || ['1', 'true', 'yes', 'on'].includes((process.env[envName('insecure-plaintext')] ?? '').toLowerCase());
        if (!insecurePlaintext) {
          const open: string[] = [];
          if (httpCert === '' && !isLoopback(http.host)) open.push(`listen on http ${opts.http} without HTTPS (give --http-cert, --http-key)`);
          if (cacert === '' && !isLoopback(target.host)) open.push(`send keys to target ${opts.target} without TLS (give --cacert)`);
          if (open.length > 0) throw new CliError(`refusing to ${open.join(' or to ')}; accept plaintext with --insecure-plaintext`, EXIT_CONFIG);
        }
        if (!(LOG_LEVELS as readonly string[]).includes(opts.logLevel)) throw new CliError(`log-level: "${opts.logLevel}" is not one of ${LOG_LEVELS.join(', ')}`, EXIT_CONFIG);
        for (const w of tlsKeyFileWarnings([['--http-key', httpKey], ['--client-key', opts.clientKey ?? process.env[envName('client-key')] ?? '']])) process.stderr.write(`snapcoord: warning: ${w}\n`);
        const { parseApiKeys, runGateway } = await import('../gateway/index.js');
        const adminKey = gatewayAdminKey(opts);
        let keys: ApiKeySpec[];
        try {
          keys = parseApiKeys(gatewayApiKeysText(opts));
        } catch (err) {
          if (err instanceof CliError) throw err;
          throw new CliError(`api-keys: ${(err as Error).message}`, EXIT_CONFIG);
        }
        const insecureEnv = (process.env[envName('insecure-no-auth')] ?? '').toLowerCase();
        const insecureNoAuth = opts.insecureNoAuth === true || ['1', 'true', 'yes', 'on'].includes(insecureEnv);
        if (adminKey === '' && keys.length === 0 && !insecureNoAuth) {
          throw new CliError('the gateway needs an API key: give --api-key-file, --api-key or SNAPCOORD_API_KEY (or --api-keys), or run it open with --insecure-no-auth', EXIT_CONFIG);
        }
        let restoreBytesMax: number | undefined;
        if (opts.restoreBytesMax !== undefined) {
          if (!/^\d{1,15}$/.test(opts.restoreBytesMax) || Number(opts.restoreBytesMax) < 1) {
            throw new CliError(`restore-bytes-max: "${opts.restoreBytesMax}" is not a positive whole number of bytes`, EXIT_CONFIG);
          }
          restoreBytesMax = Number(opts.restoreBytesMax);
        }
        try {
          process.exitCode = await runGateway({
            target: opts.target,
            http: opts.http,
            auth: { adminKey, keys, insecureNoAuth },
            logLevel: opts.logLevel,
            dial: gatewayTargetDial(cacert, opts.expectMember ?? process.env[envName('expect-member')] ?? '', clientPairOf(opts.clientCert ?? process.env[envName('client-cert')] ?? '', opts.clientKey ?? process.env[envName('client-key')] ?? '')),
            ...(httpCert !== '' ? { tls: { certFile: httpCert, keyFile: httpKey } } : {}),
            metricsOpen: opts.metricsOpen === true || ['1', 'true', 'yes', 'on'].includes((process.env[envName('metrics-open')] ?? '').toLowerCase()),
            ...(restoreBytesMax !== undefined ? { restoreBytesMax } : {}),
          });
        } catch (err) {
          throw new CliError((err as Error).message);
        }
      },
    );

  program
    .command('local')
    .description('run a local cluster of `serve` processes on 127.0.0.1 (what `npm start` runs)')
    .option('--base-dir <dir>', 'where node data and logs go', './data')
    .option('--nodes <n>', 'how many nodes', intArg('nodes'), 3)
    .option('--grpc-base-port <port>', 'gRPC port of n1 (n2 the next, ...)', intArg('grpc-base-port'), 7001)
    .option('--peer-base-port <port>', 'peer (Raft) port of n1 (default: gRPC base port + 100)', intArg('peer-base-port'))
    .option('--http-base-port <port>', 'HTTP port of n1 (n2 the next, ...)', intArg('http-base-port'), 8108)
    .option('--log-level <level>', 'log level of the nodes', 'info')
    .action(async (opts: { baseDir: string; nodes: number; grpcBasePort: number; peerBasePort?: number; httpBasePort: number; logLevel: string }) => {
      const { runLocal } = await import('./local.js');
      process.exitCode = await runLocal(opts);
    });

  // `snapshot` alone loads only its own file (no KV, cluster or task clients); the other client groups come together.
  if (named === 'snapshot') (await import('./snapshot-commands.js')).addSnapshotCommands(program);
  else if (wanted('kv') || wanted('cluster') || wanted('tasks')) (await import('./client-commands.js')).addClientCommands(program);
  if (wanted('certs')) (await import('./certs-commands.js')).addCertsCommands(program);
  if (wanted('bench')) (await import('./bench/commands.js')).addBenchCommands(program);
  // Client commands (those with --endpoint) share one way to connect: TLS with a CA and an API key (client-options.ts dialOf).
  program.hook('preAction', (_program, action) => {
    if (action.options.some((o) => o.long === '--endpoint')) configureDial(action.opts());
  });
  program.option('--debug', 'print stack traces with errors');
  program.addHelpText(
    'after',
    `\nClient commands connect to --endpoint host:port (env ${ENDPOINT_ENV}, default ${DEFAULT_ENDPOINT}).\n` +
      'Exit codes: 0 ok, 1 the operation failed, 2 bad usage or configuration.',
  );
  return program;
}

/** addServeCommand defines `serve` from serve's option table (config.ts, which loads the node's defaults). */
async function addServeCommand(program: Command): Promise<void> {
  const { CONFIG_ENV, SERVE_OPTIONS, resolveServeConfig } = await import('./config.js');
  const serve = program.command('serve').description('run one node');
  for (const o of SERVE_OPTIONS) {
    const flags = o.kind === 'bool' ? `--${o.flag}` : o.aloneValue !== undefined ? `--${o.flag} [${o.valueName}]` : `--${o.flag} <${o.valueName}>`;
    serve.addOption(new Option(flags, `${o.description} [env ${o.env}]`));
  }
  serve.addOption(new Option('--config <file>', `JSON file of options (flag > env > file > default) [env ${CONFIG_ENV}]`));
  // serve, gateway and local load their modules (the node, RocksDB, Fastify) only when run: a client
  // command such as `snapshot save` starts without them (about half the CLI's start-up CPU).
  serve.action(async (opts: Record<string, unknown>) => {
    const cfg = resolveServeConfig(opts, process.env);
    const { runServe } = await import('./serve.js');
    process.exitCode = await runServe(cfg);
  });
}

/**
 * usageErrors makes `cmd` and every subcommand throw a CommanderError instead
 * of printing and exiting, so that fail() reports usage errors as one line
 * with exit code 2 (commander's own default is 1).
 */
function usageErrors(cmd: Command): Command {
  cmd.exitOverride();
  cmd.configureOutput({ outputError: () => undefined });
  for (const sub of cmd.commands) usageErrors(sub);
  return cmd;
}

/**
 * gatewayApiKeysText: the gateway's extra keys as JSON text, from --api-keys,
 * --api-keys-file, SNAPCOORD_API_KEYS or SNAPCOORD_API_KEYS_FILE (a flag wins
 * over the environment; a file at most API_KEYS_FILE_BYTES_MAX bytes), a file
 * others may read warned about. Errors: CliError exit 2 (both flags; a file
 * that cannot be read, is too large or empty).
 */
export function gatewayApiKeysText(
  opts: { apiKeys?: string; apiKeysFile?: string },
  env: NodeJS.ProcessEnv = process.env,
  warn = (m: string): void => void process.stderr.write(`snapcoord: warning: ${m}\n`),
): string {
  if (opts.apiKeys !== undefined && opts.apiKeysFile !== undefined) throw new CliError('api-keys and api-keys-file: give one of them', EXIT_CONFIG);
  if (opts.apiKeys !== undefined) return opts.apiKeys;
  const path = opts.apiKeysFile ?? (env[envName('api-keys')] !== undefined ? undefined : env[envName('api-keys-file')]);
  if (path === undefined || path === '') return env[envName('api-keys')] ?? '';
  let text: string;
  try {
    text = readApiKeysFile(path);
  } catch (err) {
    throw new CliError(`api-keys-file ${path}: ${(err as Error).message}`, EXIT_CONFIG);
  }
  if (text.trim() === '') throw new CliError(`api-keys-file ${path}: empty (a JSON array like [{"key":"...","actions":["kv.read"]}] is expected)`, EXIT_CONFIG);
  const exposed = keyFileExposure(path, 'API keys file');
  if (exposed !== null) warn(exposed);
  return text;
}

/**
 * gatewayAdminKey: the gateway's admin key from --api-key, --api-key-file,
 * SNAPCOORD_API_KEY or SNAPCOORD_API_KEY_FILE (adminKeyOf), a key file
 * others may read warned about on stderr. Errors: CliError exit 2.
 */
export function gatewayAdminKey(
  opts: { apiKey?: string; apiKeyFile?: string },
  env: NodeJS.ProcessEnv = process.env,
  warn = (m: string): void => void process.stderr.write(`snapcoord: warning: ${m}\n`),
): string {
  try {
    return adminKeyOf({ flag: opts.apiKey, file: opts.apiKeyFile, envKey: env[envName('api-key')], envFile: env[envName('api-key-file')], envFileName: envName('api-key-file') }, warn);
  } catch (err) {
    throw new CliError((err as Error).message, EXIT_CONFIG);
  }
}

/** clientPairOf: the gateway's --client-cert/--client-key ('' for none): both or neither (CliError exit 2). */
function clientPairOf(certFile: string, keyFile: string): { readonly certFile: string; readonly keyFile: string } | undefined {
  if ((certFile === '') !== (keyFile === '')) throw new CliError('client-cert and client-key go together: give both (mutual TLS), or neither', EXIT_CONFIG);
  return certFile === '' ? undefined : { certFile, keyFile };
}

/**
 * gatewayTargetDial: TLS verified against `cacert` (CliError exit 2 when unusable), plaintext when ''; with
 * `expectMember` ('' for none) the target's certificate must name that member (exit 2 without a CA); with
 * `client` it presents that certificate and key (mutual TLS with a node started with --client-ca; exit 2
 * without a CA or for an unusable pair).
 */
export function gatewayTargetDial(cacert: string, expectMember: string, client?: { readonly certFile: string; readonly keyFile: string }): ClientDial {
  if (cacert === '') {
    if (expectMember !== '') throw new CliError("expect-member: a member's certificate is checked over TLS only: give --cacert FILE", EXIT_CONFIG);
    if (client !== undefined) throw new CliError('client-cert: a client certificate is presented over TLS only: give --cacert FILE', EXIT_CONFIG);
    return {};
  }
  if (client !== undefined) {
    try {
      checkTlsFiles({ ...client, checkChain: false });
    } catch (err) {
      throw new CliError(`client-cert: ${(err as Error).message}`, EXIT_CONFIG);
    }
  }
  try {
    return dialWithCa(cacert, '', expectMember !== '' ? expectMember : undefined, client);
  } catch (err) {
    throw new CliError(`cacert: ${(err as Error).message}`, EXIT_CONFIG);
  }
}

/** silenceDep0123 drops one warning and keeps every other. */
function silenceDep0123(): void {
  // grpc-js sets the TLS server name to the target even when it is an IP address (the certificate's IP SAN is what
  // is checked); Node warns about that on every connection (DEP0123). Silence that one warning, keep every other.
  const emitWarning = process.emitWarning.bind(process) as (...args: unknown[]) => void;
  process.emitWarning = ((warning: string | Error, ...rest: unknown[]) => {
    const code = typeof rest[0] === 'object' && rest[0] !== null ? (rest[0] as { code?: unknown }).code : rest[1];
    if (code === 'DEP0123') return;
    emitWarning(warning, ...rest);
  }) as typeof process.emitWarning;
}

function fail(err: unknown): never {
  if (err instanceof CommanderError) {
    // --help and --version "fail" with exit code 0; a bare command group prints its help (exit 2).
    if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version') process.exit(0);
    if (err.code !== 'commander.help') {
      const hint = err.code === 'commander.unknownCommand' || err.code === 'commander.unknownOption' ? ' (see snapcoord --help)' : '';
      process.stderr.write(`snapcoord: ${err.message.replace(/^error: /, '').replace(/\s+/g, ' ').trim()}${hint}\n`);
    }
    process.exit(EXIT_CONFIG);
  }
  const message = err instanceof Error ? err.message : String(err);
  // One line, and nothing in it (a server's words in a task's error, an S3 store's message) drives the terminal.
  process.stderr.write(`snapcoord: ${visible(message.replace(/\s*\n\s*/g, ' '))}\n`);
  if (process.argv.includes('--debug')) {
    for (let e: unknown = err; e instanceof Error; e = e.cause) process.stderr.write(`${e.stack ?? e.message}\n`);
  }
  process.exit(err instanceof CliError ? err.exitCode : 1);
}

/** runCli runs the command process.argv names, then exits with its code (see the file comment). */
export function runCli(): void {
  silenceDep0123();
  buildProgram()
    .then((program) => usageErrors(program).parseAsync(process.argv))
    .then(() => {
      // Servers and channels are closed; exit even if a library left a timer behind.
      const code = typeof process.exitCode === 'number' ? process.exitCode : 0;
      setImmediate(() => process.exit(code));
    }, fail);
}
