import { Languages } from 'lucide-react';
import { useEffect, useState } from 'react';
import { useLangStore, useT, type Lang } from '../../i18n';

const WIDE = '(min-width: 640px)';

function useWide(): boolean {
  const [wide, setWide] = useState(() => typeof window.matchMedia !== 'function' || window.matchMedia(WIDE).matches);
  useEffect(() => {
    if (typeof window.matchMedia !== 'function') return;
    const query = window.matchMedia(WIDE);
    const onChange = () => setWide(query.matches);
    query.addEventListener('change', onChange);
    return () => query.removeEventListener('change', onChange);
  }, []);
  return wide;
}

/** The UI language; on a phone the same select with short names, to leave the header room. */
export function LanguageSwitcher() {
  const t = useT();
  const { lang, setLang } = useLangStore();
  const wide = useWide();
  return (
    <label className="flex items-center gap-1 text-sm" title={t('language')}>
      <Languages className="hidden h-4 w-4 text-slate-500 sm:block" aria-hidden />
      <select
        data-testid="language-switcher"
        aria-label={t('language')}
        value={lang}
        onChange={(e) => setLang(e.target.value as Lang)}
        className="rounded-md bg-transparent py-1 pr-1 text-sm outline-none"
      >
        <option value="ko">{wide ? '한국어' : 'KO'}</option>
        <option value="en">{wide ? 'English' : 'EN'}</option>
      </select>
    </label>
  );
}
