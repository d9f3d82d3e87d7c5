/**
 * Test scaffolding for the server: an in-process server on 127.0.0.1 with a test predictor, and a recording
 * HTTP receiver (webhooks, uploads, input files) on 127.0.0.1.
 */
import http from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { CogServer, type ServerOptions } from '../../src/server/app.js';
import type { PredictorOptions } from '../../src/predictor.js';
import { predictorSource } from '../../src/server/predictor-source.js';

const created: string[] = [];
process.on('exit', () => { for (const dir of created) rmSync(dir, { recursive: true, force: true }); });

/** A fresh directory under the system temp dir, removed when the test process exits. */
export function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), `${prefix}-`));
  created.push(dir);
  return dir;
}

export const predictorPath = (name: string): string => new URL(`./predictors/${name}.js`, import.meta.url).pathname;

export const repoRoot = new URL('../../../', import.meta.url).pathname;
export const cliPath = join(repoRoot, 'dist', 'src', 'cli.js');

export interface TestServer {
  server: CogServer;
  url: string;
  tmpRoot: string;
  close(): Promise<void>;
}

export async function startServer(predictor: string, options: PredictorOptions = {}, overrides: Partial<ServerOptions> = {}): Promise<TestServer> {
  const tmpRoot = tempDir('server-test');
  const server = new CogServer({
    logger: pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' }),
    host: '127.0.0.1',
    port: 0,
    awaitExplicitShutdown: true,
    bodyLimit: 100 * 1024 * 1024,
    source: predictorSource(predictorPath(predictor), options),
    policy: { denyPrivate: false },
    maxInputBytes: 10 * 1024 * 1024,
    throttleMs: 0,
    tmpRoot,
    webhookBackoffMs: 20,
    uploadBackoffMs: 20,
    ...overrides,
  });
  const url = await server.start();
  return { server, url, tmpRoot, close: () => server.stop(0, { cancel: true, graceMs: 2000 }) };
}

export async function waitFor<T>(fn: () => T | Promise<T>, what: string, timeoutMs = 5000): Promise<NonNullable<T>> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v as NonNullable<T>;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export async function waitReady(url: string): Promise<void> {
  await waitFor(async () => (await (await fetch(`${url}/health-check`)).json()).status === 'READY', 'READY');
}

export async function json(res: Response): Promise<any> {
  return res.json();
}

export function post(url: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
}

export function put(url: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(url, { method: 'PUT', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
}

export async function listDir(dir: string): Promise<string[]> {
  return readdir(dir).catch(() => []);
}

export interface Recorded {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  at: number;
}

export interface Receiver {
  url: string;
  requests: Recorded[];
  /** Decides the response to each request; default 200 with an empty body. */
  respond: (req: Recorded, res: http.ServerResponse) => void;
  close(): Promise<void>;
}

export async function startReceiver(): Promise<Receiver> {
  const receiver: Receiver = {
    url: '',
    requests: [],
    respond: (_req, res) => { res.end(); },
    close: async () => undefined,
  };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const rec: Recorded = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks), at: performance.now() };
      receiver.requests.push(rec);
      receiver.respond(rec, res);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  receiver.url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  receiver.close = () => new Promise((r) => { server.closeAllConnections(); server.close(() => r()); });
  return receiver;
}

/** A valid 1x1 PNG. */
export const PNG_1x1 = Buffer.from(
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==', 'base64');
export const pngDataUrl = `data:image/png;base64,${PNG_1x1.toString('base64')}`;
