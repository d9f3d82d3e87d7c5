/**
 * Download progress as log lines: bytes done of the total, the recent rate and the time left, at most
 * one line per interval so a 40 GB download does not flood the setup logs.
 */

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

export function formatBytes(n: number): string {
  let i = 0;
  while (n >= 1024 && i < UNITS.length - 1) { n /= 1024; i++; }
  return `${i === 0 ? n.toFixed(0) : n.toFixed(n >= 100 ? 0 : 1)} ${UNITS[i]}`;
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '?';
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

export class Progress {
  private done = 0;
  private lastLine = 0;
  // rate over a sliding window: a resumed download or a slow start should not skew the ETA forever
  private samples: { t: number; bytes: number }[] = [];

  constructor(
    private readonly total: number,
    private readonly log: (line: string) => void,
    private readonly intervalMs = 2000,
    private readonly now: () => number = Date.now,
  ) {
    this.samples.push({ t: now(), bytes: 0 });
  }

  /** Bytes that were already on disk (a resumed file): they count as done but not towards the rate. */
  skip(bytes: number): void {
    this.done += bytes;
    for (const s of this.samples) s.bytes += bytes;
  }

  add(bytes: number, label: string): void {
    this.done += bytes;
    const t = this.now();
    if (t - this.lastLine >= this.intervalMs) {
      this.lastLine = t;
      this.log(this.line(label, t));
    }
  }

  rate(t = this.now()): number {
    if (t - this.samples[this.samples.length - 1].t >= 500) this.samples.push({ t, bytes: this.done });
    while (this.samples.length > 2 && t - this.samples[1].t > 10_000) this.samples.shift();
    const first = this.samples[0];
    const dt = (t - first.t) / 1000;
    // (the newest bytes count even when no sample was taken for them yet)
    return dt > 0 ? (this.done - first.bytes) / dt : 0;
  }

  line(label: string, t = this.now()): string {
    const rate = this.rate(t);
    const pct = this.total > 0 ? ((100 * this.done) / this.total).toFixed(1) : '100.0';
    const eta = rate > 0 ? formatDuration((this.total - this.done) / rate) : '?';
    return `download ${formatBytes(this.done)} / ${formatBytes(this.total)} (${pct}%) at ${formatBytes(rate)}/s, ETA ${eta}: ${label}`;
  }
}
