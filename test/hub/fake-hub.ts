/**
 * A local stand-in for the Hugging Face Hub on 127.0.0.1, serving plain folders as model repositories at
 * given commits. It speaks the endpoints @huggingface/hub and the downloader call:
 *
 *   GET  /api/models/<org>/<name>/tree/<rev>[/<path>]?recursive=&expand=[&cursor=]   listing, paginated by Link
 *   POST /api/models/<org>/<name>/paths-info/<rev>                                   {paths, expand}
 *   GET  /<org>/<name>/resolve/<rev>/<path>     small files directly, LFS files by a 302 to /cdn/<sha256>
 *   GET  /cdn/<sha256>                          content with Range support (206 + Content-Range)
 *
 * Files named *.safetensors are LFS files (as the Hub's default .gitattributes makes them): the listing gives
 * their sha256 and size under `lfs`, like the real API. Faults for tests: a required token, cutting the
 * connection after some bytes of a file, serving a corrupted copy, ignoring Range.
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join, relative, sep } from 'node:path';

export interface FakeRepo { id: string; revision: string; dir: string }

interface Entry { path: string; content: Buffer; lfs: boolean; sha256: string; oid: string }

export interface RequestRecord { method: string; url: string; range?: string; auth?: string }

export class FakeHub {
  url = '';
  readonly requests: RequestRecord[] = [];
  /** Require `Authorization: Bearer <token>` on the API and resolve URLs. */
  token: string | undefined;
  /** Close the connection after this many body bytes of the named path, `times` times. */
  cut: { path: string; afterBytes: number; times: number } | undefined;
  /** Paths served with one byte changed. */
  readonly corrupt = new Set<string>();
  /** Answer range requests with the whole file (200), as some proxies do. */
  ignoreRange = false;
  /** Listing page size (the real Hub pages long listings too). */
  pageSize = 7;

  private server: Server | undefined;
  private readonly repos = new Map<string, { revision: string; entries: Entry[] }>();
  private readonly blobs = new Map<string, Entry>();

  constructor(repos: FakeRepo[]) {
    for (const r of repos) {
      const entries = walk(r.dir).map((file) => {
        const content = readFileSync(file);
        const path = relative(r.dir, file).split(sep).join('/');
        const sha256 = createHash('sha256').update(content).digest('hex');
        const oid = createHash('sha1').update(`blob ${content.length}\0`).update(content).digest('hex');
        return { path, content, lfs: path.endsWith('.safetensors'), sha256, oid };
      });
      this.repos.set(r.id, { revision: r.revision, entries });
      for (const e of entries) if (e.lfs) this.blobs.set(e.sha256, e);
    }
  }

  async start(): Promise<this> {
    this.server = createServer((req, res) => { this.handle(req, res).catch((err) => { res.statusCode = 500; res.end(String(err)); }); });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  async close(): Promise<void> {
    if (!this.server) return;
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server!.close(() => resolve()));
    this.server = undefined;
  }

  /** Requests whose URL contains `part`. */
  count(part: string): number {
    return this.requests.filter((r) => r.url.includes(part)).length;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://x');
    this.requests.push({ method: req.method ?? 'GET', url: url.pathname + url.search, range: req.headers.range, auth: req.headers.authorization });
    const parts = url.pathname.split('/').filter(Boolean).map(decodeURIComponent);

    if (parts[0] === 'cdn') return this.send(req, res, this.blobs.get(parts[1]));
    if (this.token && req.headers.authorization !== `Bearer ${this.token}`) {
      return json(res, 401, { error: 'Invalid credentials in Authorization header' });
    }
    if (parts[0] === 'api' && parts[1] === 'models') {
      const repo = this.repo(res, `${parts[2]}/${parts[3]}`, parts[5]);
      if (!repo) return;
      if (parts[4] === 'tree') return this.tree(res, repo.entries, parts.slice(6).join('/'), url);
      if (parts[4] === 'paths-info' && req.method === 'POST') {
        const body = JSON.parse(await readBody(req)) as { paths: string[] };
        return json(res, 200, repo.entries.filter((e) => body.paths.includes(e.path)).map((e) => this.info(e, repo.revision)));
      }
    }
    if (parts[2] === 'resolve') {
      const repo = this.repo(res, `${parts[0]}/${parts[1]}`, parts[3]);
      if (!repo) return;
      const path = parts.slice(4).join('/');
      const entry = repo.entries.find((e) => e.path === path);
      if (!entry) { res.setHeader('X-Error-Code', 'EntryNotFound'); return json(res, 404, { error: 'Entry not found' }); }
      res.setHeader('X-Repo-Commit', repo.revision);
      if (entry.lfs) {
        res.writeHead(302, { Location: `${this.url}/cdn/${entry.sha256}`, 'X-Linked-Etag': `"${entry.sha256}"`, 'X-Linked-Size': entry.content.length });
        res.end();
        return;
      }
      return this.send(req, res, entry);
    }
    json(res, 404, { error: 'not found' });
  }

  private repo(res: ServerResponse, id: string, rev: string) {
    const repo = this.repos.get(id);
    if (!repo) { res.setHeader('X-Error-Code', 'RepoNotFound'); json(res, 404, { error: 'Repository not found' }); return undefined; }
    if (rev !== repo.revision && rev !== 'main') { res.setHeader('X-Error-Code', 'RevisionNotFound'); json(res, 404, { error: `Invalid rev id: ${rev}` }); return undefined; }
    return repo;
  }

  private info(e: Entry, revision: string) {
    const pointer = `version https://git-lfs.github.com/spec/v1\noid sha256:${e.sha256}\nsize ${e.content.length}\n`;
    return e.lfs
      ? { type: 'file', path: e.path, size: pointer.length, oid: createHash('sha1').update(pointer).digest('hex'),
        lfs: { oid: e.sha256, size: e.content.length, pointerSize: pointer.length }, lastCommit: { id: revision, title: 'upload', date: '2025-04-17T00:00:00Z' } }
      : { type: 'file', path: e.path, size: e.content.length, oid: e.oid, lastCommit: { id: revision, title: 'upload', date: '2025-04-17T00:00:00Z' } };
  }

  private tree(res: ServerResponse, entries: Entry[], folder: string, url: URL): void {
    const recursive = url.searchParams.get('recursive') === 'true';
    const prefix = folder ? `${folder}/` : '';
    if (folder && !entries.some((e) => e.path.startsWith(prefix))) {
      res.setHeader('X-Error-Code', 'EntryNotFound');
      return json(res, 404, { error: `${folder} does not exist` });
    }
    const items: object[] = [];
    const dirs = new Set<string>();
    for (const e of entries.filter((x) => x.path.startsWith(prefix))) {
      const rest = e.path.slice(prefix.length);
      if (!recursive && rest.includes('/')) {
        const d = prefix + rest.slice(0, rest.indexOf('/'));
        if (!dirs.has(d)) { dirs.add(d); items.push({ type: 'directory', path: d, size: 0, oid: 'd'.repeat(40) }); }
        continue;
      }
      items.push(this.info(e, ''));
    }
    const cursor = Number(url.searchParams.get('cursor') ?? 0);
    const page = items.slice(cursor, cursor + this.pageSize);
    if (cursor + this.pageSize < items.length) {
      const next = new URL(url.toString().replace('http://x', this.url));
      next.searchParams.set('cursor', String(cursor + this.pageSize));
      res.setHeader('Link', `<${next}>; rel="next"`);
    }
    json(res, 200, page);
  }

  private send(req: IncomingMessage, res: ServerResponse, entry: Entry | undefined): void {
    if (!entry) return json(res, 404, { error: 'no such blob' });
    let body = entry.content;
    if (this.corrupt.has(entry.path)) { body = Buffer.from(body); body[body.length >> 1] ^= 0xff; }
    const size = body.length;
    const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    const headers: Record<string, string | number> = { 'Accept-Ranges': 'bytes', ETag: `"${entry.lfs ? entry.sha256 : entry.oid}"`, 'Content-Type': 'application/octet-stream' };
    let start = 0;
    let end = size - 1;
    if (m && !this.ignoreRange) {
      start = Number(m[1]);
      end = m[2] ? Math.min(Number(m[2]), size - 1) : size - 1;
      if (start >= size) { res.writeHead(416, { 'Content-Range': `bytes */${size}` }); res.end(); return; }
      res.writeHead(206, { ...headers, 'Content-Range': `bytes ${start}-${end}/${size}`, 'Content-Length': end - start + 1 });
    } else {
      res.writeHead(200, { ...headers, 'Content-Length': size });
    }
    if (req.method === 'HEAD') { res.end(); return; }
    const chunk = body.subarray(start, end + 1);
    if (this.cut && this.cut.path === entry.path && this.cut.times > 0) {
      this.cut.times--;
      const keep = Math.max(0, Math.min(chunk.length, this.cut.afterBytes - start));
      res.write(chunk.subarray(0, keep), () => setTimeout(() => res.destroy(), 20));
      return;
    }
    res.end(chunk);
  }
}

function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? walk(p) : [p];
  });
}

function json(res: ServerResponse, status: number, value: unknown): void {
  res.writeHead(status, { 'Content-Type': 'application/json' });
  res.end(JSON.stringify(value));
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let s = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => { s += c; });
    req.on('end', () => resolve(s));
    req.on('error', reject);
  });
}
