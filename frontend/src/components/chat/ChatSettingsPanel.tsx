import { X } from 'lucide-react';
import { useEffect, useState } from 'react';
import { conversationsApi } from '../../api/endpoints';
import { useLangStore, useT } from '../../i18n';
import { anyErrorText } from '../../i18n/serverErrors';
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
  const [failed, setFailed] = useState<string | null>(null);
  // the prompt as last saved: the button says "Saved" until the text changes again
  const [savedPrompt, setSavedPrompt] = useState<string | null>(null);

  useEffect(() => setPrompt(systemPrompt), [systemPrompt, conversationId]);
  useEffect(() => setSavedPrompt(null), [conversationId]);
  useEffect(() => setDefaultPrompt(defaults?.system_prompt ?? ''), [defaults]);
  // a drawer closes on Escape, like every other overlay of the page
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      if (e.key === 'Escape') onClose();
    };
    document.addEventListener('keydown', onKey);
    return () => document.removeEventListener('keydown', onKey);
  }, [onClose]);

  const applyPrompt = async () => {
    setFailed(null);
    try {
      if (conversationId) {
        await conversationsApi.update(conversationId, { system_prompt: prompt.trim() ? prompt : null });
      }
      set({ systemPrompt: prompt });
      setSavedPrompt(prompt);
    } catch (err) {
      setFailed(t('saveFailed', { m: anyErrorText(t, err) }));
    }
  };

  const storeDefaults = async () => {
    setFailed(null);
    setNote(null);
    try {
      await saveDefaults({
        system_prompt: defaultPrompt.trim() ? defaultPrompt : null,
        // null (never touched): the model's own default stays the default
        temperature,
        top_p: defaults?.top_p ?? null,
        max_tokens: maxTokens,
        language: lang,
      });
      setNote(t('savedDefault'));
    } catch (err) {
      setFailed(t('saveFailed', { m: anyErrorText(t, err) }));
    }
  };
  const promptSaved = savedPrompt !== null && savedPrompt === prompt;

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
        <button
          type="button"
          data-testid="save-system-prompt"
          onClick={() => void applyPrompt()}
          className={`self-end rounded-lg px-3 py-1.5 text-sm text-white ${promptSaved ? 'bg-emerald-600' : 'bg-indigo-600 hover:bg-indigo-500'}`}
        >
          {promptSaved ? t('saved') : t('save')}
        </button>
      </label>
      <label className="flex flex-col gap-1 text-sm">
        <span className="flex items-center justify-between gap-2 font-medium">
          {t('temperature')}
          <span className="flex items-center gap-2">
            <span data-testid="temperature-value" className="font-mono">
              {temperature === null ? t('modelDefault') : temperature.toFixed(2)}
            </span>
            {temperature !== null && (
              <button type="button" data-testid="temperature-reset" onClick={() => set({ temperature: null })} className="text-xs text-indigo-600 hover:underline">
                {t('useDefault')}
              </button>
            )}
          </span>
        </span>
        {/* untouched, no value is sent and the model's own default applies: the thumb is dimmed
            in the middle instead of claiming a number */}
        <input
          type="range"
          min={0}
          max={2}
          step={0.05}
          data-testid="temperature"
          aria-valuetext={temperature === null ? t('modelDefault') : String(temperature)}
          value={temperature ?? 1}
          onChange={(e) => set({ temperature: Number(e.target.value) })}
          className={temperature === null ? 'opacity-40' : ''}
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
      {failed && (
        <p role="alert" className="text-xs text-red-600">
          {failed}
        </p>
      )}
    </aside>
  );
}
