import { create } from 'zustand';
import { en, ko, type MessageKey } from './messages';

export type Lang = 'ko' | 'en';
const STORAGE_KEY = 'vllm-chat.lang';

function initialLang(): Lang {
  try {
    const saved = localStorage.getItem(STORAGE_KEY);
    if (saved === 'ko' || saved === 'en') return saved;
  } catch {
    // storage may be blocked; fall back to the browser language
  }
  const browser = typeof navigator !== 'undefined' ? navigator.language : 'en';
  return browser.toLowerCase().startsWith('ko') ? 'ko' : 'en';
}

interface LangState {
  lang: Lang;
  setLang: (lang: Lang) => void;
}

export const useLangStore = create<LangState>((set) => ({
  lang: initialLang(),
  setLang: (lang) => {
    try {
      localStorage.setItem(STORAGE_KEY, lang);
    } catch {
      // not persisted; the choice still applies to this page
    }
    document.documentElement.lang = lang;
    set({ lang });
  },
}));

export type Translate = (key: MessageKey, vars?: Record<string, string | number>) => string;

export function translate(lang: Lang, key: MessageKey, vars?: Record<string, string | number>): string {
  const text = (lang === 'ko' ? ko : en)[key];
  return vars ? text.replace(/\{(\w+)\}/g, (_, name: string) => String(vars[name] ?? '')) : text;
}

export function useT(): Translate {
  const lang = useLangStore((s) => s.lang);
  return (key, vars) => translate(lang, key, vars);
}

export type { MessageKey };
