// @ts-check
// ESLint flat config. Not type-aware on purpose (fast, and independent of the TS compiler's JS API).
import js from '@eslint/js';
import { defineConfig } from 'eslint/config';
import tseslint from 'typescript-eslint';

/**
 * Globals and properties the pure Raft core (src/raft) may not touch: time,
 * randomness, timers, the process and the outside world arrive through
 * injected interfaces (ticks, Rng, Ready) so that the simulator can replay a
 * seed exactly (DESIGN.md: "the consensus core: PURE").
 */
const RAFT_FORBIDDEN_GLOBALS = [
  'Date',
  'setTimeout',
  'setInterval',
  'setImmediate',
  'clearTimeout',
  'clearInterval',
  'clearImmediate',
  'process',
  'performance',
  'queueMicrotask',
  'require',
  'fetch',
  'crypto',
  'Buffer',
  'global',
  'globalThis',
].map((name) => ({
  name,
  message: `src/raft is pure: no '${name}'. Time, randomness and IO come in through ticks, Rng and Ready.`,
}));

/** ABOVE_THE_FLOOR: the layers above storage, snapshot, transport and fsm. */
const ABOVE_THE_FLOOR = ['node', 'api', 'ops', 'client', 'gateway', 'cli'];

/** NODE_CLOCK_GLOBALS: time and timers src/node may not touch (it is given a Clock). */
const NODE_CLOCK_GLOBALS = ['Date', 'performance', 'setTimeout', 'setInterval', 'setImmediate', 'clearTimeout', 'clearInterval', 'clearImmediate', 'queueMicrotask'].map(
  (name) => ({ name, message: `src/node takes its clock as a parameter (NodeOptions.clock): no '${name}'.` }),
);

const RAFT_MESSAGE = 'src/raft is pure: it may import only relative files inside src/raft.';

/**
 * layerImports forbids imports of the named layers (as relative paths from any
 * depth of src/<layer>/**), so imports point one way:
 * raft <- storage, snapshot, transport <- node <- api <- gateway, cli.
 * @param {string[]} layers
 */
function layerImports(layers) {
  return {
    'no-restricted-imports': importPatterns({
      regex: `^(\\.\\./)+(${layers.join('|')})(/|$)`,
      message: `Layer rule (DESIGN.md): this layer may not import ${layers.join(', ')}.`,
    }),
  };
}

/**
 * importPatterns: the 'no-restricted-imports' setting that refuses every import
 * whose path matches one of `patterns` ({regex, message}).
 * @param {...{regex: string, message: string}} patterns
 */
function importPatterns(...patterns) {
  return ['error', { patterns }];
}

/**
 * raftImports allows, for a file `depth` directories below src/raft, only
 * relative imports that do not climb out of src/raft.
 * @param {number} depth
 */
function raftImports(depth) {
  return {
    'no-restricted-imports': importPatterns(
      // Anything that is not relative: node:*, bare packages, absolute paths, URLs.
      { regex: '^(?!\\.{1,2}/)', message: RAFT_MESSAGE },
      // Relative paths that climb above src/raft.
      { regex: `^(\\./)*(\\.\\./){${depth + 1},}`, message: RAFT_MESSAGE },
      // '..' or '.' alone (a directory import) at the top.
      ...(depth === 0 ? [{ regex: '^\\.\\.?$', message: RAFT_MESSAGE }] : []),
    ),
  };
}

const AUTH_MESSAGE = 'src/auth is a bottom layer: it may import packages, files inside src/auth and src/hash, nothing from other src directories.';
const HASH_MESSAGE = 'src/hash is a bottom layer: it may import packages and files inside src/hash, nothing from other src directories.';

/**
 * bottomImports forbids, for a file `depth` directories below a bottom layer,
 * relative imports that climb out of it, but into the bottom layers named in
 * `allowed` (packages such as node:crypto are allowed).
 * @param {number} depth
 * @param {string} message
 * @param {string[]} allowed
 */
function bottomImports(depth, message, allowed = []) {
  const into = allowed.length === 0 ? '' : `(?!(${allowed.join('|')})/)`;
  return {
    'no-restricted-imports': importPatterns(
      { regex: `^(\\./)*(\\.\\./){${depth + 1},}${into}`, message },
      ...(depth === 0 ? [{ regex: '^\\.\\.$', message }] : []),
    ),
  };
}

export default defineConfig(
  {
    ignores: ['dist/**', 'src/gen/**', 'node_modules/**', 'coverage/**', 'data/**', 'bench/out/**'],
  },
  js.configs.recommended,
  tseslint.configs.recommended,
  {
    languageOptions: { ecmaVersion: 2022, sourceType: 'module' },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': 'error',
    },
  },
  // The client bundle's stand-ins for two built-ins (scripts/bundle-cli.ts): CommonJS, as the libraries that require them.
  {
    files: ['scripts/bundle-shims/*.cjs'],
    languageOptions: { sourceType: 'commonjs', globals: { require: 'readonly', module: 'writable' } },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
  // Layers (DESIGN.md): left may not import right.
  // The bottom floor: storage, snapshot and transport do not import each other (they meet only in the node, through
  // the interfaces it declares), nor anything above them.
  {
    files: ['src/storage/**/*.ts'],
    rules: layerImports(['snapshot', 'transport', 'fsm', ...ABOVE_THE_FLOOR]),
  },
  {
    files: ['src/snapshot/**/*.ts'],
    rules: layerImports(['storage', 'transport', 'fsm', ...ABOVE_THE_FLOOR]),
  },
  {
    files: ['src/transport/**/*.ts'],
    rules: layerImports(['storage', 'snapshot', 'fsm', ...ABOVE_THE_FLOOR]),
  },
  // The state machine: over storage's interface, under the driver.
  {
    files: ['src/fsm/**/*.ts'],
    rules: layerImports(['snapshot', 'transport', ...ABOVE_THE_FLOOR]),
  },
  // Operator jobs sit beside the API on top of the driver (the client library is a leaf: its wire constants are shared).
  {
    files: ['src/ops/**/*.ts'],
    rules: layerImports(['api', 'gateway', 'cli']),
  },
  // The client side: the one client library knows only the wire (gen), TLS and the key model; the gateway and the
  // CLI's client commands reach the cluster only through it.
  {
    files: ['src/client/**/*.ts'],
    rules: layerImports(['raft', 'storage', 'snapshot', 'transport', 'fsm', 'node', 'api', 'ops', 'gateway', 'cli']),
  },
  {
    files: ['src/gateway/**/*.ts'],
    rules: layerImports(['raft', 'storage', 'snapshot', 'transport', 'fsm', 'node', 'api', 'ops', 'cli']),
  },
  // Every CLI file but the process entry points (serve, local, the config of serve and its --import-snapshot, main and
  // the program it runs)
  // is a client command. Offline archive work (inspect, the fsync of a saved file) uses src/snapshot; a save to S3 uses
  // the S3 destination of src/ops; an archive's reserved keys are named by src/fsm/sessions.
  {
    files: ['src/cli/**/*.ts'],
    ignores: ['src/cli/serve.ts', 'src/cli/local.ts', 'src/cli/main.ts', 'src/cli/program.ts', 'src/cli/config.ts', 'src/cli/import-snapshot.ts'],
    rules: {
      'no-restricted-imports': importPatterns(
        {
          regex: '^(\\.\\./)+(raft|storage|transport|node|api|gateway)(/|$)|^(\\.\\./)+ops/(?!s3\\.js$)|^(\\.\\./)+fsm/(?!sessions\\.js$)',
          message: 'Layer rule (DESIGN.md): a CLI client command reaches the cluster only through src/client (only serve and local wire a node).',
        },
      ),
    },
  },
  {
    files: ['src/node/clock.ts', 'src/node/crypto-rng.ts'],
    rules: layerImports(['api', 'gateway', 'cli', 'ops', 'client']),
  },
  // src/tls is a bottom layer (certificates and credentials): node:*, @grpc/grpc-js and the x509 library only.
  {
    files: ['src/tls/**/*.ts'],
    rules: layerImports(['node', 'api', 'gateway', 'cli', 'storage', 'snapshot', 'transport', 'raft', 'fsm', 'ops', 'client', 'gen']),
  },
  // The API serves through the node and the state machine, never storage internals (its one storage import is
  // StorageError, mapped to a gRPC status).
  {
    files: ['src/api/**/*.ts'],
    rules: {
      'no-restricted-imports': importPatterns(
        { regex: '^(\\.\\./)+(gateway|cli)(/|$)', message: 'Layer rule (DESIGN.md): the API may not import gateway or cli.' },
        { regex: '^(\\.\\./)+storage/(?!storage-error\\.js$)', message: 'Layer rule (DESIGN.md): the API uses node and fsm, never storage internals.' },
      ),
    },
  },
  // src/auth: the key model under the gateway and the API, importing nothing from other src directories.
  {
    files: ['src/auth/**/*.ts'],
    rules: bottomImports(0, AUTH_MESSAGE, ['hash']),
  },
  ...[1, 2, 3].map((depth) => ({
    files: [`src/auth/${'*/'.repeat(depth)}*.ts`],
    rules: bottomImports(depth, AUTH_MESSAGE, ['hash']),
  })),
  // src/hash: whole-input digests shared by src/snapshot and src/auth, importing nothing from other src directories.
  {
    files: ['src/hash/**/*.ts'],
    rules: bottomImports(0, HASH_MESSAGE),
  },
  // The driver (src/node) runs on the clock and randomness it is given (NodeOptions.clock, .rng), so the simulator
  // can run the real node on virtual time: no time, timers or randomness of its own, except in the two files that
  // hold the real implementations the process wiring passes in.
  {
    files: ['src/node/**/*.ts'],
    ignores: ['src/node/clock.ts', 'src/node/crypto-rng.ts'],
    rules: {
      'no-restricted-globals': ['error', ...NODE_CLOCK_GLOBALS],
      'no-restricted-properties': [
        'error',
        { object: 'Math', property: 'random', message: 'src/node takes its randomness as a parameter (NodeOptions.rng).' },
        { object: 'Date', property: 'now', message: 'src/node takes its clock as a parameter (NodeOptions.clock).' },
        { object: 'process', property: 'hrtime', message: 'src/node takes its clock as a parameter (NodeOptions.clock).' },
      ],
      'no-restricted-imports': importPatterns(
        { regex: '^(\\.\\./)+(api|gateway|cli|ops|client)(/|$)', message: 'Layer rule (DESIGN.md): the driver may not import api, gateway, cli, ops or client.' },
        { regex: '^node:(crypto|timers|timers/promises|perf_hooks)$', message: 'src/node takes its clock and randomness as parameters (clock.ts, crypto-rng.ts hold the real ones).' },
      ),
    },
  },
  // The pure Raft core: restricted globals and syntax for every file under src/raft ...
  {
    files: ['src/raft/**/*.ts'],
    rules: {
      'no-restricted-globals': ['error', ...RAFT_FORBIDDEN_GLOBALS],
      'no-restricted-properties': [
        'error',
        { object: 'Math', property: 'random', message: 'src/raft is pure: use the injected Rng.' },
        { object: 'Date', property: 'now', message: 'src/raft is pure: count ticks.' },
        { object: 'performance', property: 'now', message: 'src/raft is pure: count ticks.' },
      ],
      'no-restricted-syntax': [
        'error',
        { selector: 'ImportExpression', message: 'src/raft is pure: no dynamic import().' },
        { selector: "CallExpression[callee.name='require']", message: 'src/raft is pure: no require().' },
        { selector: 'TSImportEqualsDeclaration', message: 'src/raft is pure: no import = require().' },
      ],
    },
  },
  // ... and imports: only relative files that stay inside src/raft. A file at
  // depth d below src/raft may climb at most d levels ('../' x d); files nested
  // deeper than 3 directories may not climb at all (the strict default).
  {
    files: ['src/raft/**/*.ts'],
    rules: raftImports(0),
  },
  ...[1, 2, 3].map((depth) => ({
    files: [`src/raft/${'*/'.repeat(depth)}*.ts`],
    rules: raftImports(depth),
  })),
);
