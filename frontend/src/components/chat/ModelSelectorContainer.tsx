import { useEffect, useMemo, useState } from 'react';
import { useModelManagement } from '../../hooks/useModelManagement';
import { useT } from '../../i18n';
import { reasonText, serverErrorText } from '../../i18n/serverErrors';
import { isAdmin, useAuth } from '../../stores/auth';
import { ModelSelector, type ModelOptionInfo } from './ModelSelector';

const RESULT_VISIBLE_MS = 10_000;

/** The header's model selector wired to the model manager. */
export function ModelSelectorContainer() {
  const t = useT();
  const admin = isAdmin(useAuth((s) => s.session));
  const mm = useModelManagement({ autoLoad: true, pollMs: 15_000 });
  const [now, setNow] = useState(() => Date.now());

  useEffect(() => {
    if (!mm.lastResult) return;
    const left = mm.lastResult.at + RESULT_VISIBLE_MS - Date.now();
    const timer = setTimeout(() => setNow(Date.now()), Math.max(0, left));
    return () => clearTimeout(timer);
  }, [mm.lastResult]);

  const models = useMemo(() => {
    const out: Record<string, ModelOptionInfo> = {};
    for (const p of mm.profiles) {
      out[p.id] = { name: p.name, description: p.description, compatible: p.compatible, reasons: p.reasons, details: p.details };
    }
    return out;
  }, [mm.profiles]);

  if (!mm.available && !mm.details) return null;
  const switchingOff = mm.details?.switching_enabled === false;
  const result = mm.lastResult && now - mm.lastResult.at < RESULT_VISIBLE_MS ? mm.lastResult : null;
  const resultError = result
    ? [
        result.code && result.error ? serverErrorText(t, { code: result.code, message: result.error, retryAfter: null }) : result.error,
        ...(result.reasons ?? []).map((r, i) => reasonText(t, r, result.details?.[i])),
      ]
        .filter(Boolean)
        .join('\n') || null
    : null;
  return (
    <ModelSelector
      models={models}
      currentModel={mm.currentModel}
      onModelChange={(id) => void mm.switchModel(id)}
      isLoading={mm.isSwitching}
      phase={mm.phase}
      result={result?.outcome ?? null}
      resultError={resultError}
      canSwitch={admin && !switchingOff}
      lockedNote={switchingOff ? t('switchingOff') : null}
      switchTarget={mm.switchingTo}
    />
  );
}
