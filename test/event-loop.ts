/**
 * Whether the event loop stays free while work runs elsewhere: a 2 ms timer ticks during `work`; were the work
 * on this thread, no tick could fire until it returned and the longest gap would span all of it.
 */
export async function loopPauses(work: () => Promise<unknown>): Promise<{ ticks: number; worst: number; took: number }> {
  let last = performance.now(), worst = 0, ticks = 0;
  const tick = setInterval(() => {
    const now = performance.now();
    worst = Math.max(worst, now - last);
    last = now;
    ticks++;
  }, 2);
  const t0 = performance.now();
  try {
    await work();
  } finally {
    clearInterval(tick);
  }
  return { ticks, worst, took: performance.now() - t0 };
}
