import { MessageSquare } from 'lucide-react';
import { useEffect, useLayoutEffect, useRef } from 'react';
import { conversationsApi } from '../api/endpoints';
import { ApiError } from '../api/errors';
import { ChatError } from '../components/chat/ChatError';
import { ChatInput } from '../components/chat/ChatInput';
import { MessageItem } from '../components/chat/MessageItem';
import { chooseVariant, stopChatStream, useChatStream } from '../hooks/useChatStream';
import { useT } from '../i18n';
import { toUiMessages, useChat } from '../stores/chat';
import { useRouter } from '../stores/router';
import { useSettings } from '../stores/settings';

/** Opens the conversation in the URL (unless it is the one already open, e.g. just created). */
function useConversationLoader(routeId: string | null) {
  useEffect(() => {
    const chat = useChat.getState();
    if (routeId === chat.conversationId && (routeId !== null || chat.messages.length > 0 || chat.streaming)) return;
    stopChatStream();
    const defaults = useSettings.getState().defaults;
    chat.reset(routeId);
    useChat.getState().set({ temperature: defaults?.temperature ?? null, maxTokens: defaults?.max_tokens ?? null });
    if (!routeId) return;
    const controller = new AbortController();
    useChat.getState().set({ loading: true });
    conversationsApi
      .get(routeId, controller.signal)
      .then((detail) => {
        if (useChat.getState().conversationId !== routeId) return;
        useChat.getState().set({
          messages: toUiMessages(detail.messages),
          systemPrompt: detail.system_prompt ?? '',
          loading: false,
        });
      })
      .catch((err: unknown) => {
        if ((err as { name?: string }).name === 'AbortError') return;
        if (err instanceof ApiError && err.status === 404) useRouter.getState().navigate({ name: 'chat', conversationId: null }, { replace: true });
        useChat.getState().set({ loading: false });
      });
    return () => controller.abort();
  }, [routeId]);
}

export function ChatPage({ routeId }: { routeId: string | null }) {
  const t = useT();
  const { messages, pending, pendingReasoning, pendingReasoningMs, streaming, failure, loading } = useChat();
  const { send, stop, regenerate, retry } = useChatStream();
  const scroller = useRef<HTMLDivElement>(null);
  const stick = useRef(true);
  useConversationLoader(routeId);

  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      if (e.key === 'Escape' && useChat.getState().streaming) stop();
    };
    window.addEventListener('keydown', onKey);
    return () => window.removeEventListener('keydown', onKey);
  }, [stop]);

  // follow the answer while the reader is at the bottom; leave them be when they scrolled up
  useLayoutEffect(() => {
    const el = scroller.current;
    if (el && stick.current) el.scrollTop = el.scrollHeight;
  }, [messages, pending, pendingReasoning, failure]);

  const lastAssistant = messages.map((m) => m.role).lastIndexOf('assistant');
  const empty = messages.length === 0 && !streaming && !loading;
  return (
    <div className="flex h-full min-h-0 flex-col">
      <div
        ref={scroller}
        data-testid="message-list"
        onScroll={(e) => {
          const el = e.currentTarget;
          stick.current = el.scrollHeight - el.scrollTop - el.clientHeight < 80;
        }}
        className="min-h-0 flex-1 overflow-y-auto"
      >
        <div className="mx-auto flex w-full max-w-3xl flex-col gap-6 px-4 py-6">
          {empty && (
            <div className="mt-[15vh] flex flex-col items-center gap-3 text-center text-slate-500">
              <MessageSquare className="h-10 w-10 text-indigo-400" aria-hidden />
              <h2 className="text-xl font-semibold text-slate-800 dark:text-slate-100">{t('emptyChatTitle')}</h2>
              <p className="text-sm">{t('emptyChatHint')}</p>
            </div>
          )}
          {loading && <p className="text-center text-sm text-slate-500">{t('loading')}</p>}
          {messages.map((m, i) => (
            <MessageItem
              key={m.key}
              role={m.role}
              content={m.content}
              reasoning={m.reasoning}
              reasoningMs={m.reasoningMs}
              status={m.status}
              onRegenerate={i === lastAssistant && i === messages.length - 1 && !streaming ? () => void regenerate() : undefined}
              variant={
                m.variants && m.variants.length > 1
                  ? {
                      index: m.variantIndex ?? m.variants.length - 1,
                      count: m.variants.length,
                      onChoose: streaming ? undefined : (index) => void chooseVariant(i, index),
                    }
                  : undefined
              }
            />
          ))}
          {streaming && (
            <MessageItem
              role="assistant"
              content={pending}
              reasoning={pendingReasoning}
              reasoningMs={pendingReasoningMs}
              status="streaming"
            />
          )}
          {failure && !streaming && <ChatError failure={failure} onRetry={() => void retry()} />}
        </div>
      </div>
      <div className="mx-auto w-full max-w-3xl px-3 pb-3 pt-1 sm:px-4 sm:pb-4">
        <ChatInput
          streaming={streaming}
          onSend={(text) => {
            stick.current = true;
            void send(text);
          }}
          onStop={stop}
        />
      </div>
    </div>
  );
}
