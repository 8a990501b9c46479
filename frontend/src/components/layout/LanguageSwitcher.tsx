import { Languages } from 'lucide-react';
import { useLangStore, useT, type Lang } from '../../i18n';

export function LanguageSwitcher() {
  const t = useT();
  const { lang, setLang } = useLangStore();
  return (
    <label className="flex items-center gap-1 text-sm" title={t('language')}>
      <Languages className="hidden h-4 w-4 text-slate-500 sm:block" aria-hidden />
      <select
        data-testid="language-switcher"
        aria-label={t('language')}
        value={lang}
        onChange={(e) => setLang(e.target.value as Lang)}
        className="max-w-[5.5rem] rounded-md bg-transparent py-1 pr-1 text-sm outline-none"
      >
        <option value="ko">한국어</option>
        <option value="en">English</option>
      </select>
    </label>
  );
}
