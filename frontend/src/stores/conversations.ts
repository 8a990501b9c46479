import { create } from 'zustand';
import { conversationsApi } from '../api/endpoints';
import type { ConversationSummary } from '../api/types';

const PAGE = 30;

/** The sidebar: the user's conversations, newest first, paged by the gateway's cursor. */
interface ConversationsState {
  items: ConversationSummary[];
  nextCursor: string | null;
  query: string;
  loading: boolean;
  error: string | null;
  /** bumps on every first-page load so an older response never overwrites a newer one */
  generation: number;
  load: (query?: string) => Promise<void>;
  loadMore: () => Promise<void>;
  /** a conversation just got a message: show it first at once, the server's view follows */
  touch: (id: string, question: string) => void;
  refreshSoon: () => void;
  /** a new conversation: reload until its generated title replaces the question's words (bounded) */
  watchTitle: (id: string) => void;
  rename: (id: string, title: string) => Promise<void>;
  remove: (id: string) => Promise<void>;
}

let refreshTimer: ReturnType<typeof setTimeout> | undefined;
// after a new conversation's first answer: the list now, then until the title changes
const TITLE_WATCH_MS = [400, 1000, 2000, 4000, 8000];

export const useConversations = create<ConversationsState>((set, get) => ({
  items: [],
  nextCursor: null,
  query: '',
  loading: false,
  error: null,
  generation: 0,
  load: async (query = get().query) => {
    const generation = get().generation + 1;
    set({ query, loading: true, generation, error: null });
    try {
      const page = await conversationsApi.list({ limit: PAGE, q: query || undefined });
      if (get().generation !== generation) return;
      set({ items: page.conversations, nextCursor: page.next_cursor, loading: false });
    } catch (err) {
      if (get().generation === generation) set({ loading: false, error: (err as Error).message });
    }
  },
  loadMore: async () => {
    const { nextCursor, loading, query, generation } = get();
    if (!nextCursor || loading) return;
    set({ loading: true });
    try {
      const page = await conversationsApi.list({ limit: PAGE, cursor: nextCursor, q: query || undefined });
      if (get().generation !== generation) return;
      const known = new Set(get().items.map((c) => c.id));
      set({
        items: [...get().items, ...page.conversations.filter((c) => !known.has(c.id))],
        nextCursor: page.next_cursor,
        loading: false,
      });
    } catch (err) {
      if (get().generation === generation) set({ loading: false, error: (err as Error).message });
    }
  },
  touch: (id, question) => {
    const now = new Date().toISOString();
    const existing = get().items.find((c) => c.id === id);
    const item: ConversationSummary = existing
      ? { ...existing, updated_at: now }
      : {
          id,
          title: question.split(/\s+/).slice(0, 8).join(' ') || null,
          model: null,
          created_at: now,
          updated_at: now,
          message_count: 1,
          preview: question.slice(0, 120),
        };
    set({ items: [item, ...get().items.filter((c) => c.id !== id)] });
  },
  refreshSoon: () => {
    clearTimeout(refreshTimer);
    // the gateway writes in batches and titles arrive a moment later
    refreshTimer = setTimeout(() => void get().load(), 600);
  },
  watchTitle: (id) => {
    clearTimeout(refreshTimer);
    let first: string | null | undefined;
    const step = (i: number) => {
      const delay = TITLE_WATCH_MS[i];
      if (delay === undefined) return;
      refreshTimer = setTimeout(() => {
        void get()
          .load()
          .then(() => {
            const title = get().items.find((c) => c.id === id)?.title;
            if (first === undefined) first = title;
            else if (title !== first) return; // the generated title arrived
            step(i + 1);
          });
      }, delay);
    };
    step(0);
  },
  rename: async (id, title) => {
    const updated = await conversationsApi.update(id, { title });
    set({ items: get().items.map((c) => (c.id === id ? { ...c, title: updated.title } : c)) });
  },
  remove: async (id) => {
    await conversationsApi.remove(id);
    set({ items: get().items.filter((c) => c.id !== id) });
  },
}));
