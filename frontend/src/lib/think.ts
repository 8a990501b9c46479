/**
 * A server without vLLM's reasoning parser sends the chain of thought inline, as
 * `<think>…</think>answer`. Split it out, also while the closing tag has not arrived yet.
 */
export function splitThink(text: string): { reasoning: string; answer: string; open: boolean } {
  const start = text.match(/^\s*<think>/);
  if (!start) return { reasoning: '', answer: text, open: false };
  const body = text.slice(start[0].length);
  const end = body.indexOf('</think>');
  if (end < 0) return { reasoning: body.trim(), answer: '', open: true };
  return { reasoning: body.slice(0, end).trim(), answer: body.slice(end + 8).trimStart(), open: false };
}
