import { fireEvent, render, screen, waitFor } from '@testing-library/react';
import { beforeEach, describe, expect, it, vi } from 'vitest';
import { ApiError } from '../../api/errors';
import type { ConversationSummary } from '../../api/types';
import { useLangStore } from '../../i18n';
import { ConversationItem } from './ConversationItem';

const item = { id: 'c1', title: 'Old title' } as ConversationSummary;

function renderItem(onRename: (title: string) => Promise<void>) {
  render(
    <ul>
      <ConversationItem item={item} active onOpen={vi.fn()} onRename={onRename} onDelete={vi.fn()} onExport={vi.fn()} />
    </ul>,
  );
  fireEvent.click(screen.getByTestId('rename-conversation'));
  fireEvent.change(screen.getByTestId('rename-input'), { target: { value: 'Bad\u0000title' } });
  fireEvent.submit(screen.getByTestId('rename-input').closest('form')!);
}

describe('ConversationItem rename', () => {
  beforeEach(() => useLangStore.setState({ lang: 'en' }));

  it('says why a refused rename failed and keeps the editor open', async () => {
    const onRename = vi.fn(() => Promise.reject(new ApiError(422, 'validation_error', 'title: must not contain NUL characters')));
    renderItem(onRename);
    expect(await screen.findByTestId('rename-error')).toHaveTextContent('must not contain NUL characters');
    expect(screen.getByTestId('rename-input')).toBeInTheDocument();
    // Escape gives up: the editor closes and the error goes with it
    fireEvent.keyDown(screen.getByTestId('rename-input'), { key: 'Escape' });
    await waitFor(() => expect(screen.queryByTestId('rename-input')).toBeNull());
    expect(screen.queryByTestId('rename-error')).toBeNull();
  });

  it('closes the editor when the rename is saved', async () => {
    const onRename = vi.fn(() => Promise.resolve());
    renderItem(onRename);
    await waitFor(() => expect(screen.queryByTestId('rename-input')).toBeNull());
    expect(onRename).toHaveBeenCalledWith('Bad\u0000title');
    expect(screen.queryByTestId('rename-error')).toBeNull();
  });
});
