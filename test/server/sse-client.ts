/**
 * A Server-Sent Events reader for tests: the events of a `GET /predictions/{id}/events` response, parsed as
 * they arrive (comments skipped, `data` parsed as JSON).
 */
export interface SseEvent {
  event: string;
  data: any;
}

export async function* readEvents(res: Response): AsyncGenerator<SseEvent> {
  const decoder = new TextDecoder();
  let buffer = '';
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    buffer += decoder.decode(chunk, { stream: true });
    let end: number;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = 'message';
      const data: string[] = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event: ')) event = line.slice(7);
        else if (line.startsWith('data: ')) data.push(line.slice(6));
      }
      if (data.length > 0) yield { event, data: JSON.parse(data.join('\n')) };
    }
  }
}

/** Every event until the stream ends. */
export async function collectEvents(url: string, signal?: AbortSignal): Promise<SseEvent[]> {
  const res = await fetch(url, { signal });
  if (res.status !== 200) throw new Error(`GET ${url}: ${res.status}`);
  const out: SseEvent[] = [];
  for await (const e of readEvents(res)) out.push(e);
  return out;
}
