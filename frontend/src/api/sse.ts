/**
 * Server-sent events as one pure async generator: bytes in, `data:` payloads out.
 *
 * Chunks may split anywhere (mid-line, mid-UTF-8 character, between `\r` and `\n`); an event
 * is yielded only when its blank line has arrived. Multi-line `data:` fields are joined with
 * `\n` as the SSE spec says; comments and other fields are ignored.
 */
export async function* parseSSE(
  source: AsyncIterable<Uint8Array> | ReadableStream<Uint8Array>,
): AsyncGenerator<string, void, undefined> {
  const decoder = new TextDecoder();
  let buffer = '';
  let data: string[] = [];

  function* drain(final: boolean): Generator<string> {
    for (;;) {
      const nl = buffer.search(/\r\n|\r|\n/);
      if (nl < 0) break;
      // a lone `\r` at the very end may be the first half of `\r\n`: wait for more
      if (!final && buffer[nl] === '\r' && nl === buffer.length - 1) break;
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + (buffer.startsWith('\r\n', nl) ? 2 : 1));
      if (line === '') {
        if (data.length) yield data.join('\n');
        data = [];
      } else if (line.startsWith('data:')) {
        data.push(line.slice(line[5] === ' ' ? 6 : 5));
      }
    }
  }

  for await (const chunk of iterate(source)) {
    buffer += decoder.decode(chunk, { stream: true });
    yield* drain(false);
  }
  buffer += decoder.decode();
  yield* drain(true);
  // a stream that ends without the final blank line still delivers its last event
  if (buffer.startsWith('data:')) data.push(buffer.slice(buffer[5] === ' ' ? 6 : 5));
  if (data.length) yield data.join('\n');
}

async function* iterate(
  source: AsyncIterable<Uint8Array> | ReadableStream<Uint8Array>,
): AsyncGenerator<Uint8Array> {
  if (!(source instanceof ReadableStream) && Symbol.asyncIterator in source) {
    yield* source;
    return;
  }
  const reader = (source as ReadableStream<Uint8Array>).getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      if (value) yield value;
    }
  } finally {
    reader.releaseLock();
  }
}
