/**
 * Timestamps as Cog writes them: RFC 3339 with microseconds and a `+00:00` offset, never `Z` (Replicate's Go
 * runtime parses them with the layout 2006-01-02T15:04:05.999999-07:00, which rejects `Z`).
 */

/** Microseconds since the epoch (Date.now() has only milliseconds). */
function nowMicros(): number {
  return Math.floor((performance.timeOrigin + performance.now()) * 1000);
}

export function isoMicros(micros: number = nowMicros()): string {
  const date = new Date(Math.floor(micros / 1000));
  const frac = String(((micros % 1_000_000) + 1_000_000) % 1_000_000).padStart(6, '0');
  return `${date.toISOString().slice(0, 19)}.${frac}+00:00`;
}

/** Seconds between two timestamps written by isoMicros (or any RFC 3339 ones, at millisecond precision). */
export function secondsBetween(start: string, end: string): number {
  const us = (s: string) => {
    const m = /\.(\d+)/.exec(s);
    const frac = m ? Number(m[1]!.padEnd(6, '0').slice(0, 6)) : 0;
    return Math.floor(Date.parse(s.replace(/\.\d+/, '')) / 1000) * 1_000_000 + frac;
  };
  return (us(end) - us(start)) / 1e6;
}
