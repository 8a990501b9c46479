import { Check, Copy } from 'lucide-react';
import { useState } from 'react';
import { copyText } from '../../lib/clipboard';

export function CopyButton({
  text,
  label,
  doneLabel,
  className = '',
  testId,
}: {
  text: () => string;
  label: string;
  doneLabel: string;
  className?: string;
  testId?: string;
}) {
  const [done, setDone] = useState(false);
  return (
    <button
      type="button"
      data-testid={testId}
      title={done ? doneLabel : label}
      aria-label={done ? doneLabel : label}
      onClick={async () => {
        if (await copyText(text())) {
          setDone(true);
          setTimeout(() => setDone(false), 1500);
        }
      }}
      className={`inline-flex items-center gap-1 rounded-md p-1.5 text-xs hover:bg-slate-200/70 dark:hover:bg-slate-700/70 ${className}`}
    >
      {done ? <Check className="h-3.5 w-3.5" aria-hidden /> : <Copy className="h-3.5 w-3.5" aria-hidden />}
    </button>
  );
}
