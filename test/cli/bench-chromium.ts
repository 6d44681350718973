/**
 * renderInChromium: opens a local HTML file in headless Chromium (Debian's
 * `chromium`, driven over --remote-debugging-pipe with the DevTools protocol,
 * no puppeteer), and reports what a person would see: how many <canvas> and
 * <svg> elements the page has, how many canvases hold drawn pixels, the
 * page's own data-charts count, console errors and uncaught exceptions, and
 * a PNG screenshot. Throws when chromium is missing or does not answer.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Readable, Writable } from 'node:stream';

export const CHROMIUM_CANDIDATES = ['/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome'];

/** chromiumPath: the first browser installed, or undefined. */
export function chromiumPath(): string | undefined {
  return CHROMIUM_CANDIDATES.find((p) => existsSync(p));
}

export interface Rendered {
  readonly canvases: number;
  readonly drawnCanvases: number;
  readonly svgs: number;
  readonly chartsAttr: string | null;
  readonly title: string;
  readonly errors: string[];
  readonly screenshotPng: Buffer;
}

interface CdpMessage {
  id?: number;
  method?: string;
  sessionId?: string;
  params?: Record<string, unknown>;
  result?: Record<string, unknown>;
  error?: { message: string };
}

export async function renderInChromium(file: string, timeoutMs = 30_000): Promise<Rendered> {
  const bin = chromiumPath();
  if (bin === undefined) throw new Error(`no chromium found (${CHROMIUM_CANDIDATES.join(', ')}); apt-get install -y chromium (.ci/run installs it)`);
  const profile = await mkdtemp(join(tmpdir(), 'snapcoord-chromium-'));
  const proc = spawn(
    bin,
    ['--headless=new', '--no-sandbox', '--disable-gpu', '--no-first-run', '--no-default-browser-check', '--remote-debugging-pipe', `--user-data-dir=${profile}`, '--window-size=1280,2000', 'about:blank'],
    { stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'] },
  );
  let stderr = '';
  proc.stderr?.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-4000);
  });
  const toBrowser = proc.stdio[3] as Writable;
  const fromBrowser = proc.stdio[4] as Readable;
  let nextId = 1;
  const pending = new Map<number, { resolve: (r: Record<string, unknown>) => void; reject: (e: Error) => void }>();
  const listeners: ((m: CdpMessage) => void)[] = [];
  let buf = '';
  fromBrowser.on('data', (d: Buffer) => {
    buf += d.toString('utf8');
    let at: number;
    while ((at = buf.indexOf('\0')) >= 0) {
      const m = JSON.parse(buf.slice(0, at)) as CdpMessage;
      buf = buf.slice(at + 1);
      if (m.id !== undefined) {
        const p = pending.get(m.id);
        pending.delete(m.id);
        if (m.error !== undefined) p?.reject(new Error(m.error.message));
        else p?.resolve(m.result ?? {});
      } else for (const l of listeners) l(m);
    }
  });
  const send = (method: string, params: Record<string, unknown> = {}, sessionId?: string): Promise<Record<string, unknown>> =>
    new Promise((resolve, reject) => {
      const id = nextId++;
      pending.set(id, { resolve, reject });
      toBrowser.write(`${JSON.stringify({ id, method, params, ...(sessionId !== undefined ? { sessionId } : {}) })}\0`);
    });
  const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  const died = exited.then(() => {
    throw new Error(`chromium exited before answering:\n${stderr}`);
  });
  died.catch(() => undefined);
  try {
    const run = async (): Promise<Rendered> => {
      const { targetId } = (await send('Target.createTarget', { url: 'about:blank' })) as { targetId: string };
      const { sessionId } = (await send('Target.attachToTarget', { targetId, flatten: true })) as { sessionId: string };
      const errors: string[] = [];
      listeners.push((m) => {
        if (m.sessionId !== sessionId) return;
        const p = m.params ?? {};
        if (m.method === 'Runtime.exceptionThrown') errors.push(`exception: ${JSON.stringify((p['exceptionDetails'] as { text?: string; exception?: { description?: string } }) ?? {})}`);
        if (m.method === 'Runtime.consoleAPICalled' && (p['type'] === 'error' || p['type'] === 'assert')) errors.push(`console.${String(p['type'])}: ${JSON.stringify(p['args'])}`);
        if (m.method === 'Log.entryAdded') {
          const e = p['entry'] as { level?: string; text?: string; url?: string };
          if (e.level === 'error') errors.push(`log: ${e.text ?? ''} ${e.url ?? ''}`);
        }
      });
      await send('Page.enable', {}, sessionId);
      await send('Runtime.enable', {}, sessionId);
      await send('Log.enable', {}, sessionId);
      const url = pathToFileURL(file).href;
      await send('Page.navigate', { url }, sessionId);
      // Wait for the page itself (not about:blank) to finish loading.
      for (let i = 0; ; i++) {
        const st = (await send('Runtime.evaluate', { expression: 'location.href + " " + document.readyState', returnByValue: true }, sessionId)) as { result: { value?: string } };
        if (st.result.value === `${url} complete`) break;
        if (i > 200) throw new Error(`the page did not load: ${st.result.value ?? ''}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      // Let the page's script and a frame of drawing run.
      await new Promise((r) => setTimeout(r, 300));
      const probe = `(() => {
        const canvases = [...document.querySelectorAll('canvas')];
        const drawn = canvases.filter((c) => {
          if (c.width === 0 || c.height === 0) return false;
          const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
          for (let i = 3; i < d.length; i += 4) if (d[i] !== 0) return true;
          return false;
        }).length;
        return JSON.stringify({ canvases: canvases.length, drawn, svgs: document.querySelectorAll('svg').length, charts: document.body.dataset.charts ?? null, title: document.title });
      })()`;
      const ev = (await send('Runtime.evaluate', { expression: probe, returnByValue: true }, sessionId)) as { result: { value?: string }; exceptionDetails?: unknown };
      if (ev.exceptionDetails !== undefined) throw new Error(`probe failed: ${JSON.stringify(ev.exceptionDetails)}`);
      const v = JSON.parse(ev.result.value ?? '{}') as { canvases: number; drawn: number; svgs: number; charts: string | null; title: string };
      const shot = (await send('Page.captureScreenshot', { format: 'png', captureBeyondViewport: true }, sessionId)) as { data: string };
      return { canvases: v.canvases, drawnCanvases: v.drawn, svgs: v.svgs, chartsAttr: v.charts, title: v.title, errors, screenshotPng: Buffer.from(shot.data, 'base64') };
    };
    return await Promise.race([run(), died]);
  } finally {
    clearTimeout(timer);
    await send('Browser.close').catch(() => undefined);
    const killer = setTimeout(() => proc.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(killer);
    await rm(profile, { recursive: true, force: true });
  }
}
