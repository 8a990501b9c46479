/**
 * A rough token count, for warning before a prompt that cannot fit the model's context is sent.
 * BPE tokenizers give English about 4 characters a token; Hangul, CJK and other non-ASCII text
 * about one a character. Each message adds a few tokens of chat template.
 */
const PER_MESSAGE = 4;

export function estimateTokens(text: string): number {
  let ascii = 0;
  let other = 0;
  for (const ch of text) {
    if (ch.charCodeAt(0) < 128) ascii++;
    else other++;
  }
  return Math.ceil(ascii / 4) + other;
}

/** Tokens of a whole request: every message plus its template overhead. */
export function estimatePromptTokens(messages: string[]): number {
  return messages.reduce((sum, m) => sum + estimateTokens(m) + PER_MESSAGE, 0);
}
