import { Plus, Search } from 'lucide-react';
import { useEffect, useRef, useState } from 'react';
import { conversationsApi, downloadResponse } from '../../api/endpoints';
import { stopChatStream } from '../../hooks/useChatStream';
import { useT } from '../../i18n';
import { useChat } from '../../stores/chat';
import { useConversations } from '../../stores/conversations';
import { useRouter } from '../../stores/router';
import { ConfirmDialog } from '../ui/ConfirmDialog';
import { ConversationItem } from './ConversationItem';

/** Conversations: newest first, searchable, more loaded as the list scrolls to its end. */
export function Sidebar({ onNavigate }: { onNavigate: () => void }) {
  const t = useT();
  const { items, nextCursor, loading, load, loadMore, rename, remove } = useConversations();
  // the query the shown list answers (the input may be ahead of it while typing)
  const listedQuery = useConversations((s) => s.query);
  const activeId = useChat((s) => s.conversationId);
  const navigate = useRouter((s) => s.navigate);
  const [query, setQuery] = useState(useConversations.getState().query);
  const [deleting, setDeleting] = useState<string | null>(null);
  const sentinel = useRef<HTMLLIElement>(null);
  const scroller = useRef<HTMLDivElement>(null);

  useEffect(() => {
    const timer = setTimeout(() => void load(query.trim()), query ? 250 : 0);
    return () => clearTimeout(timer);
  }, [query, load]);

  useEffect(() => {
    const el = sentinel.current;
    if (!el || !nextCursor) return;
    const observer = new IntersectionObserver(
      (entries) => {
        if (entries.some((e) => e.isIntersecting)) void loadMore();
      },
      { root: scroller.current, rootMargin: '120px' },
    );
    observer.observe(el);
    return () => observer.disconnect();
  }, [nextCursor, loadMore, items.length]);

  const newChat = () => {
    stopChatStream();
    useChat.getState().reset(null);
    navigate({ name: 'chat', conversationId: null });
    onNavigate();
  };

  const confirmDelete = async () => {
    const id = deleting;
    setDeleting(null);
    if (!id) return;
    await remove(id);
    if (useChat.getState().conversationId === id) newChat();
  };

  return (
    <div className="flex h-full flex-col gap-2 p-2">
      <button
        type="button"
        data-testid="new-chat"
        onClick={newChat}
        className="flex items-center gap-2 rounded-lg border border-slate-300 bg-white px-3 py-2 text-sm font-medium shadow-sm hover:bg-slate-50 dark:border-slate-700 dark:bg-slate-900 dark:hover:bg-slate-800"
      >
        <Plus className="h-4 w-4" aria-hidden />
        {t('newChat')}
      </button>
      <label className="flex items-center gap-2 rounded-lg bg-slate-100 px-3 py-1.5 text-sm dark:bg-slate-800/70">
        <Search className="h-4 w-4 text-slate-400" aria-hidden />
        <input
          data-testid="conversation-search"
          type="search"
          value={query}
          placeholder={t('searchConversations')}
          aria-label={t('searchConversations')}
          onChange={(e) => setQuery(e.target.value)}
          className="min-w-0 flex-1 bg-transparent outline-none placeholder:text-slate-400"
        />
      </label>
      <div ref={scroller} className="-mx-1 min-h-0 flex-1 overflow-y-auto px-1">
        <ul data-testid="conversation-list" className="flex flex-col gap-0.5">
          {items.map((item) => (
            <ConversationItem
              key={item.id}
              item={item}
              active={item.id === activeId}
              onOpen={() => {
                navigate({ name: 'chat', conversationId: item.id });
                onNavigate();
              }}
              onRename={(title) => rename(item.id, title)}
              onDelete={() => setDeleting(item.id)}
              onExport={async (format) => {
                const res = await conversationsApi.exportFile(item.id, format);
                await downloadResponse(res, `conversation-${item.id}.${format}`);
              }}
            />
          ))}
          {nextCursor && <li ref={sentinel} aria-hidden className="h-4" />}
        </ul>
        {loading && <p className="px-3 py-2 text-xs text-slate-500">{t('loadingMore')}</p>}
        {!loading && items.length === 0 && (
          <p data-testid="conversations-empty" className="px-3 py-2 text-xs text-slate-500">
            {listedQuery ? t('noResults') : t('noConversations')}
          </p>
        )}
      </div>
      {deleting && (
        <ConfirmDialog message={t('confirmDelete')} onConfirm={() => void confirmDelete()} onCancel={() => setDeleting(null)} />
      )}
    </div>
  );
}
