/**
 * certs-commands: `snapcoord certs init` (a cluster CA) and `snapcoord certs
 * issue ID` (a node certificate for the peer and the client plane), `certs
 * revoke` (a CRL for serve --peer-crl), over
 * src/tls. Bad options exit 2 with one line; so does a CA that is already
 * there (init without --force) or missing (issue). Other failures exit 1.
 */
import { X509Certificate } from 'node:crypto';
import { lstat, readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { CliError, EXIT_CONFIG } from './cli-error.js';
import { DAYS_MAX, caFiles, checkTlsFiles, crlFileOf, localCaKeyFile, nodeCertFiles, revokeCerts, writeCa, writeClientCert, writeNodeCert } from '../tls/index.js';
import { canonicalIp, checkDnsName, checkMemberId } from '../tls/names.js';

/** DEFAULT_TLS_DIR: where `certs` keeps the CA and node certificates (relative to the working directory), as `npm start` does. */
export const DEFAULT_TLS_DIR = 'data/tls';

/** LOCAL_NAMES: what `certs issue` puts in a certificate given no --dns and no --ip. */
const LOCAL_NAMES = { dns: ['localhost'], ips: ['127.0.0.1', '::1'] } as const;

function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), ...value.split(',').map((v) => v.trim()).filter((v) => v !== '')];
}

function parseDays(v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d{1,6}$/.test(v) || Number(v) < 1 || Number(v) > DAYS_MAX) throw new CliError(`days: "${v}" is not a whole number from 1 to ${DAYS_MAX}`, EXIT_CONFIG);
  return Number(v);
}

/** configError runs `check` and turns what it throws into a CliError with exit code 2, prefixed by `what`. */
function configError(what: string, check: () => void): void {
  try {
    check();
  } catch (err) {
    throw new CliError(`${what}: ${(err as Error).message}`, EXIT_CONFIG);
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ENOENT';
  }
}

/** addCertsCommands registers `certs init`, `certs issue` and `certs client` on `program`. */
export function addCertsCommands(program: Command): void {
  const certs = program
    .command('certs')
    .description(`make a cluster CA and node certificates (files in --dir, default ${DEFAULT_TLS_DIR}: ca.pem, ca-key.pem, <id>.pem, <id>-key.pem)`);

  certs
    .command('init')
    .description('create the cluster CA: ca.pem (give it to every node and client) and ca-key.pem (keep it secret; mode 0600)')
    .option('--dir <dir>', 'certificate directory (made 0700 when missing)', DEFAULT_TLS_DIR)
    .option('--ca-key <file>', 'where the CA key goes (default <dir>/ca-key.pem); keep it off the nodes')
    .option('--days <n>', 'validity in days (default 3650)')
    .option('--force', 'replace an existing CA (every certificate it signed stops being trusted)')
    .action(async (opts: { dir: string; caKey?: string; days?: string; force?: boolean }) => {
      const days = parseDays(opts.days);
      const files = caFiles(opts.dir, opts.caKey);
      const force = opts.force === true;
      if (!force) {
        for (const f of [files.caFile, files.caKeyFile]) {
          if (await exists(f)) throw new CliError(`${f} already exists; a new CA would orphan every certificate it signed (use --force to replace it)`, EXIT_CONFIG);
        }
      }
      await writeCa(opts.dir, { force, caKeyFile: files.caKeyFile, ...(days !== undefined ? { days } : {}) });
      process.stdout.write(
        `CA certificate: ${files.caFile}\n` +
          `CA key:         ${files.caKeyFile} (keep it secret)\n` +
          `valid until:    ${checkTlsFiles({ caFile: files.caFile }).notAfter.toISOString()}\n` +
          `next: snapcoord certs issue <id> --dir ${opts.dir} --dns <name> --ip <address>\n`,
      );
    });

  certs
    .command('issue')
    .argument('<id>', 'the member id the certificate names (urn:snapcoord:node:<id>)')
    .description(
      `issue a certificate for node ID (server and client use) signed by the CA in --dir; replaces an earlier one (rotation). ` +
        `Without --dns and --ip it names ${[...LOCAL_NAMES.dns, ...LOCAL_NAMES.ips].join(', ')}`,
    )
    .option('--dir <dir>', 'certificate directory holding ca.pem (and ca-key.pem unless --ca-key)', DEFAULT_TLS_DIR)
    .option('--ca-key <file>', "the CA key (default <dir>/ca-key.pem, else <dir>/../ca/ca-key.pem where `snapcoord local` keeps it)")
    .option('--dns <name>', 'a DNS name the node answers on (repeatable, or comma-separated)', collect)
    .option('--ip <address>', 'an IP address the node answers on (repeatable, or comma-separated)', collect)
    .option('--days <n>', 'validity in days (default 825)')
    .action(async (id: string, opts: { dir: string; caKey?: string; dns?: string[]; ip?: string[]; days?: string }) => {
      const dns = opts.dns ?? [];
      const ips = opts.ip ?? [];
      configError('id', () => checkMemberId(id));
      for (const d of dns) configError('dns', () => checkDnsName(d));
      for (const ip of ips) configError('ip', () => canonicalIp(ip));
      const days = parseDays(opts.days);
      // The key where --ca-key says, else beside ca.pem, else where `snapcoord local` keeps it (outside --dir).
      const beside = caFiles(opts.dir).caKeyFile;
      const files = caFiles(opts.dir, opts.caKey ?? (!(await exists(beside)) && (await exists(localCaKeyFile(opts.dir))) ? localCaKeyFile(opts.dir) : beside));
      for (const f of [files.caFile, files.caKeyFile]) {
        if (!(await exists(f))) throw new CliError(`${f} is missing: create the CA first with \`snapcoord certs init --dir ${opts.dir}\` (or give --ca-key FILE)`, EXIT_CONFIG);
      }
      const local = dns.length === 0 && ips.length === 0;
      const written = await writeNodeCert(opts.dir, id, {
        caKeyFile: files.caKeyFile,
        dns: local ? LOCAL_NAMES.dns : dns,
        ips: local ? LOCAL_NAMES.ips : ips,
        ...(days !== undefined ? { days } : {}),
      });
      const info = checkTlsFiles({ ...written, caFile: files.caFile });
      process.stdout.write(
        `certificate: ${written.certFile}\n` +
          `key:         ${written.keyFile} (keep it secret)\n` +
          `names:       ${info.identities.join(', ')}\n` +
          `valid until: ${info.notAfter.toISOString()}\n`,
      );
    });

  certs
    .command('client')
    .argument('<name>', 'who holds it (urn:snapcoord:client:<name>; letters, digits, _ . -)')
    .description(
      'issue a client certificate (extended key usage clientAuth only, no member, no host name): for nodes started with --client-ca ' +
        'and the client commands\' --client-cert; no client takes it for a server\'s, no node for a member\'s. Files: client-<name>.pem, client-<name>-key.pem',
    )
    .option('--dir <dir>', 'certificate directory holding ca.pem (and ca-key.pem unless --ca-key)', DEFAULT_TLS_DIR)
    .option('--ca-key <file>', "the CA key (default <dir>/ca-key.pem, else <dir>/../ca/ca-key.pem where `snapcoord local` keeps it)")
    .option('--days <n>', 'validity in days (default 825)')
    .action(async (name: string, opts: { dir: string; caKey?: string; days?: string }) => {
      configError('name', () => checkMemberId(name));
      const days = parseDays(opts.days);
      const beside = caFiles(opts.dir).caKeyFile;
      const files = caFiles(opts.dir, opts.caKey ?? (!(await exists(beside)) && (await exists(localCaKeyFile(opts.dir))) ? localCaKeyFile(opts.dir) : beside));
      for (const f of [files.caFile, files.caKeyFile]) {
        if (!(await exists(f))) throw new CliError(`${f} is missing: create the CA first with \`snapcoord certs init --dir ${opts.dir}\` (or give --ca-key FILE)`, EXIT_CONFIG);
      }
      const written = await writeClientCert(opts.dir, name, { caKeyFile: files.caKeyFile, ...(days !== undefined ? { days } : {}) });
      const info = checkTlsFiles({ ...written, caFile: files.caFile });
      process.stdout.write(
        `client certificate: ${written.certFile}\n` +
          `key:                ${written.keyFile} (keep it secret)\n` +
          `names:              ${info.identities.join(', ')}\n` +
          `valid until:        ${info.notAfter.toISOString()}\n` +
          `use:                snapcoord kv get KEY --client-cert ${written.certFile} --client-key ${written.keyFile}\n`,
      );
    });
  certs
    .command('revoke')
    .argument('[id]', "revoke member ID's certificate (<dir>/<id>.pem)")
    .description(
      'revoke certificates (a removed member\'s): add their serials to the CRL (default <dir>/crl.pem, made when missing) and sign it again with the CA; ' +
        'give the CRL to every member with serve --peer-crl (read again within 5 s of a change, no restart); for client certificates (`certs client`) give --crl FILE and serve --client-crl FILE. Serials already listed keep their dates',
    )
    .option('--dir <dir>', 'certificate directory holding ca.pem (and ca-key.pem unless --ca-key)', DEFAULT_TLS_DIR)
    .option('--ca-key <file>', "the CA key (default <dir>/ca-key.pem, else <dir>/../ca/ca-key.pem where `snapcoord local` keeps it)")
    .option('--cert <file>', 'a certificate to revoke (PEM; repeatable)', collect)
    .option('--serial <hex>', 'a serial number to revoke (hex, as `openssl x509 -serial` prints it; repeatable)', collect)
    .option('--crl <file>', 'the CRL to extend (default <dir>/crl.pem)')
    .option('--days <n>', 'days until its nextUpdate: re-run `certs revoke` (even with nothing new) before then (default 30)')
    .action(async (id: string | undefined, opts: { dir: string; caKey?: string; cert?: string[]; serial?: string[]; crl?: string; days?: string }) => {
      const days = parseDays(opts.days);
      const certs = [...(opts.cert ?? [])];
      if (id !== undefined) {
        configError('id', () => checkMemberId(id));
        certs.push(nodeCertFiles(opts.dir, id).certFile);
      }
      const serials: string[] = [];
      for (const s of opts.serial ?? []) {
        if (!/^(?:[0-9A-Fa-f]{2}:)*[0-9A-Fa-f]{1,40}$/.test(s) || s.replace(/:/g, '').length > 40) throw new CliError(`serial: "${s.slice(0, 64)}" is not a hex serial number`, EXIT_CONFIG);
        serials.push(s.replace(/:/g, ''));
      }
      for (const f of certs) {
        let pem: Buffer;
        try {
          pem = await readFile(f);
        } catch (err) {
          throw new CliError(`${f}: cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, EXIT_CONFIG);
        }
        try {
          serials.push(new X509Certificate(pem).serialNumber);
        } catch {
          throw new CliError(`${f}: not a PEM certificate`, EXIT_CONFIG);
        }
      }
      const beside = caFiles(opts.dir).caKeyFile;
      const files = caFiles(opts.dir, opts.caKey ?? (!(await exists(beside)) && (await exists(localCaKeyFile(opts.dir))) ? localCaKeyFile(opts.dir) : beside));
      for (const f of [files.caFile, files.caKeyFile]) {
        if (!(await exists(f))) throw new CliError(`${f} is missing: the CA that signed the certificates signs the CRL (give --ca-key FILE)`, EXIT_CONFIG);
      }
      let r;
      try {
        r = await revokeCerts(opts.dir, serials, { caKeyFile: files.caKeyFile, crlFile: opts.crl ?? crlFileOf(opts.dir), ...(days !== undefined ? { days } : {}) });
      } catch (err) {
        throw new CliError(`certs revoke: ${(err as Error).message}`, EXIT_CONFIG);
      }
      process.stdout.write(
        `CRL:         ${r.crlFile} (${r.added} newly revoked, ${r.revoked} in all)\n` +
          `next update: ${r.nextUpdate.toISOString()} (run \`snapcoord certs revoke\` again before then)\n` +
          `next: copy it to every member and start them with --peer-crl ${r.crlFile} (--client-crl for a CRL of client certificates; a running member reads a changed file within 5 s)\n`,
      );
    });
}
