import { X } from 'lucide-react';
import { useEffect, useState } from 'react';
import { conversationsApi } from '../../api/endpoints';
import { useLangStore, useT } from '../../i18n';
import { useChat } from '../../stores/chat';
import { useSettings } from '../../stores/settings';

/** System prompt (this conversation, and the user's default), temperature and max tokens. */
export function ChatSettingsPanel({ onClose }: { onClose: () => void }) {
  const t = useT();
  const lang = useLangStore((s) => s.lang);
  const { conversationId, systemPrompt, temperature, maxTokens, set } = useChat();
  const defaults = useSettings((s) => s.defaults);
  const saveDefaults = useSettings((s) => s.save);
  const [prompt, setPrompt] = useState(systemPrompt);
  const [defaultPrompt, setDefaultPrompt] = useState(defaults?.system_prompt ?? '');
  const [note, setNote] = useState<string | null>(null);

  useEffect(() => setPrompt(systemPrompt), [systemPrompt, conversationId]);
  useEffect(() => setDefaultPrompt(defaults?.system_prompt ?? ''), [defaults]);

  const applyPrompt = async () => {
    set({ systemPrompt: prompt });
    if (conversationId) {
      await conversationsApi.update(conversationId, { system_prompt: prompt.trim() ? prompt : null });
    }
    setNote(t('save'));
  };

  const storeDefaults = async () => {
    await saveDefaults({
      system_prompt: defaultPrompt.trim() ? defaultPrompt : null,
      temperature,
      top_p: defaults?.top_p ?? null,
      max_tokens: maxTokens,
      language: lang,
    });
    setNote(t('savedDefault'));
  };

  const field = 'w-full rounded-lg border border-slate-300 bg-white px-3 py-2 text-sm dark:border-slate-700 dark:bg-slate-900';
  return (
    <aside
      data-testid="chat-settings"
      className="fixed inset-y-0 right-0 z-40 flex w-full max-w-sm flex-col gap-4 overflow-y-auto border-l border-slate-200 bg-white p-4 shadow-2xl dark:border-slate-800 dark:bg-slate-950"
    >
      <div className="flex items-center justify-between">
        <h2 className="text-base font-semibold">{t('chatSettings')}</h2>
        <button type="button" onClick={onClose} aria-label={t('cancel')} className="rounded-md p-1.5 hover:bg-slate-100 dark:hover:bg-slate-800">
          <X className="h-5 w-5" aria-hidden />
        </button>
      </div>
      <label className="flex flex-col gap-1 text-sm">
        <span className="font-medium">{t('systemPromptConversation')}</span>
        <textarea
          data-testid="system-prompt"
          rows={5}
          value={prompt}
          placeholder={defaults?.system_prompt ? `${t('default')}: ${defaults.system_prompt}` : t('systemPromptPlaceholder')}
          onChange={(e) => setPrompt(e.target.value)}
          className={field}
        />
        <button type="button" data-testid="save-system-prompt" onClick={() => void applyPrompt()} className="self-end rounded-lg bg-indigo-600 px-3 py-1.5 text-sm text-white hover:bg-indigo-500">
          {t('save')}
        </button>
      </label>
      <label className="flex flex-col gap-1 text-sm">
        <span className="flex justify-between font-medium">
          {t('temperature')} <span className="font-mono">{temperature ?? `${t('default')}`}</span>
        </span>
        <input
          type="range"
          min={0}
          max={2}
          step={0.05}
          data-testid="temperature"
          value={temperature ?? 0.7}
          onChange={(e) => set({ temperature: Number(e.target.value) })}
        />
      </label>
      <label className="flex flex-col gap-1 text-sm">
        <span className="font-medium">{t('maxTokens')}</span>
        <input
          type="number"
          min={1}
          data-testid="max-tokens"
          value={maxTokens ?? ''}
          placeholder={t('default')}
          onChange={(e) => set({ maxTokens: e.target.value ? Math.max(1, Math.floor(Number(e.target.value))) : null })}
          className={field}
        />
      </label>
      <hr className="border-slate-200 dark:border-slate-800" />
      <label className="flex flex-col gap-1 text-sm">
        <span className="font-medium">{t('systemPromptDefault')}</span>
        <textarea rows={4} data-testid="default-system-prompt" value={defaultPrompt} onChange={(e) => setDefaultPrompt(e.target.value)} className={field} />
      </label>
      <button type="button" data-testid="save-defaults" onClick={() => void storeDefaults()} className="rounded-lg border border-slate-300 px-3 py-1.5 text-sm hover:bg-slate-50 dark:border-slate-700 dark:hover:bg-slate-900">
        {t('saveAsDefault')}
      </button>
      {note && <p role="status" className="text-xs text-emerald-700 dark:text-emerald-400">{note}</p>}
    </aside>
  );
}
