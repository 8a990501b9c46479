import { create } from 'zustand';

/** The message being typed, kept across a session expiry and a reload of this tab. */
const STORAGE_KEY = 'vllm-chat.draft';

interface DraftState {
  draft: string;
  setDraft: (text: string) => void;
}

function load(): string {
  try {
    return sessionStorage.getItem(STORAGE_KEY) ?? '';
  } catch {
    return '';
  }
}

export const useDraft = create<DraftState>((set) => ({
  draft: load(),
  setDraft: (draft) => {
    try {
      if (draft) sessionStorage.setItem(STORAGE_KEY, draft);
      else sessionStorage.removeItem(STORAGE_KEY);
    } catch {
      // memory only
    }
    set({ draft });
  },
}));
