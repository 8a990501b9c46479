import { describe, expect, it } from 'vitest';
import { parseSSE } from './sse';

const enc = new TextEncoder();

async function collect(chunks: (string | Uint8Array)[]): Promise<string[]> {
  async function* source() {
    for (const c of chunks) yield typeof c === 'string' ? enc.encode(c) : c;
  }
  const out: string[] = [];
  for await (const data of parseSSE(source())) out.push(data);
  return out;
}

describe('parseSSE', () => {
  it('yields each event once its blank line arrives, whatever the chunk boundaries', async () => {
    const stream = 'data: {"a":1}\n\ndata: {"b":2}\n\ndata: [DONE]\n\n';
    const whole = await collect([stream]);
    expect(whole).toEqual(['{"a":1}', '{"b":2}', '[DONE]']);
    // every possible split into two chunks, and one byte at a time
    for (let i = 1; i < stream.length; i++) {
      expect(await collect([stream.slice(0, i), stream.slice(i)])).toEqual(whole);
    }
    expect(await collect(stream.split(''))).toEqual(whole);
  });

  it('keeps a multi-byte character split across chunks intact', async () => {
    const bytes = enc.encode('data: {"t":"안녕"}\n\n');
    const cut = 13; // inside the first Hangul syllable's three bytes
    expect(await collect([bytes.slice(0, cut), bytes.slice(cut)])).toEqual(['{"t":"안녕"}']);
  });

  it('handles CRLF split between \\r and \\n, comments and multi-line data', async () => {
    expect(await collect([': keep-alive\r', '\n', 'data: x\r', '\ndata: y\r\n', '\r', '\n'])).toEqual(['x\ny']);
  });

  it('delivers a last event that has no closing blank line', async () => {
    expect(await collect(['data: one\n\ndata: two'])).toEqual(['one', 'two']);
  });

  it('reads a ReadableStream too', async () => {
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(enc.encode('data: hel'));
        controller.enqueue(enc.encode('lo\n\n'));
        controller.close();
      },
    });
    const out: string[] = [];
    for await (const d of parseSSE(body)) out.push(d);
    expect(out).toEqual(['hello']);
  });
});
