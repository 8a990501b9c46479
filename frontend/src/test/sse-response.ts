/** A fetch Response whose SSE body the test feeds event by event. */
export function controllableSse(headers: Record<string, string> = {}) {
  const enc = new TextEncoder();
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  const body = new ReadableStream<Uint8Array>({
    start(c) {
      controller = c;
    },
  });
  const response = new Response(body, {
    status: 200,
    headers: { 'Content-Type': 'text/event-stream', ...headers },
  });
  return {
    response,
    push: (data: unknown) => controller.enqueue(enc.encode(`data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`)),
    close: () => controller.close(),
    error: (err: unknown) => controller.error(err),
  };
}

export const delta = (text: string, extra: Record<string, unknown> = {}) => ({
  choices: [{ index: 0, delta: { content: text }, finish_reason: null }],
  ...extra,
});
