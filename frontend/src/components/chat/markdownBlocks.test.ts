import { describe, expect, it } from 'vitest';
import { splitBlocks } from './markdownBlocks';

describe('splitBlocks', () => {
  it('splits at blank lines but never inside a code fence', () => {
    const text = 'intro\n\n```py\na = 1\n\nb = 2\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |';
    expect(splitBlocks(text)).toEqual(['intro', '```py\na = 1\n\nb = 2\n```', '| a | b |\n|---|---|\n| 1 | 2 |']);
  });

  it('keeps an unclosed fence (still streaming) in one block', () => {
    expect(splitBlocks('x\n\n```\ncode\n\nmore')).toEqual(['x', '```\ncode\n\nmore']);
  });
});
