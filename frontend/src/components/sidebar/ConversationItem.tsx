import { Check, Download, Pencil, Trash2, X } from 'lucide-react';
import { useState } from 'react';
import type { ConversationSummary } from '../../api/types';
import { useT } from '../../i18n';
import { anyErrorText } from '../../i18n/serverErrors';

interface Props {
  item: ConversationSummary;
  active: boolean;
  onOpen: () => void;
  onRename: (title: string) => Promise<void>;
  onDelete: () => void;
  onExport: (format: 'json' | 'md') => void;
}

export function ConversationItem({ item, active, onOpen, onRename, onDelete, onExport }: Props) {
  const t = useT();
  const [editing, setEditing] = useState(false);
  const [title, setTitle] = useState(item.title ?? '');
  const [exportOpen, setExportOpen] = useState(false);
  const [renameError, setRenameError] = useState<string | null>(null);

  if (editing) {
    const commit = async () => {
      if (title.trim() && title.trim() !== item.title) {
        try {
          await onRename(title.trim());
        } catch (err) {
          // refused (e.g. a NUL character, or the session ended): say why and keep the editor open
          setRenameError(anyErrorText(t, err));
          return;
        }
      }
      setRenameError(null);
      setEditing(false);
    };
    const cancel = () => {
      setRenameError(null);
      setEditing(false);
    };
    return (
      <li className="px-2 py-1">
        <form
          className="flex items-center gap-1"
          onSubmit={(e) => {
            e.preventDefault();
            void commit();
          }}
        >
          <input
            autoFocus
            data-testid="rename-input"
            value={title}
            onChange={(e) => setTitle(e.target.value)}
            onKeyDown={(e) => e.key === 'Escape' && cancel()}
            aria-invalid={renameError !== null}
            maxLength={200}
            className="min-w-0 flex-1 rounded-md border border-indigo-400 bg-white px-2 py-1 text-sm outline-none dark:bg-slate-900"
          />
          <button type="submit" aria-label={t('save')} className="rounded p-1 hover:bg-slate-200 dark:hover:bg-slate-800">
            <Check className="h-4 w-4" aria-hidden />
          </button>
          <button type="button" aria-label={t('cancel')} onClick={cancel} className="rounded p-1 hover:bg-slate-200 dark:hover:bg-slate-800">
            <X className="h-4 w-4" aria-hidden />
          </button>
        </form>
        {renameError && (
          <p role="alert" data-testid="rename-error" className="mt-1 px-1 text-xs text-red-600 dark:text-red-400">
            {renameError}
          </p>
        )}
      </li>
    );
  }

  const iconButton = 'rounded p-1 text-slate-500 hover:bg-slate-200 hover:text-slate-900 dark:hover:bg-slate-700 dark:hover:text-white';
  return (
    <li
      data-testid="conversation-item"
      data-id={item.id}
      className={`group relative flex items-center rounded-lg text-sm ${
        active ? 'bg-slate-200/80 dark:bg-slate-800' : 'hover:bg-slate-100 dark:hover:bg-slate-800/60'
      }`}
    >
      <button type="button" onClick={onOpen} className="min-w-0 flex-1 px-3 py-2 text-left" title={item.title ?? undefined}>
        <span data-testid="conversation-title" className="block truncate">
          {item.title || t('untitled')}
        </span>
      </button>
      <div className={`flex shrink-0 items-center pr-1 ${active ? 'flex' : 'flex sm:hidden sm:group-hover:flex sm:group-focus-within:flex'}`}>
        <button type="button" data-testid="rename-conversation" title={t('rename')} aria-label={t('rename')} className={iconButton} onClick={() => { setTitle(item.title ?? ''); setEditing(true); }}>
          <Pencil className="h-3.5 w-3.5" aria-hidden />
        </button>
        <div className="relative">
          <button type="button" data-testid="export-conversation" title={t('exportJson')} aria-label={t('exportJson')} className={iconButton} onClick={() => setExportOpen((o) => !o)}>
            <Download className="h-3.5 w-3.5" aria-hidden />
          </button>
          {exportOpen && (
            <div className="absolute right-0 top-full z-20 mt-1 w-48 rounded-lg border border-slate-200 bg-white p-1 shadow-lg dark:border-slate-700 dark:bg-slate-900" onMouseLeave={() => setExportOpen(false)}>
              {(['md', 'json'] as const).map((format) => (
                <button
                  key={format}
                  type="button"
                  data-testid={`export-${format}`}
                  onClick={() => {
                    setExportOpen(false);
                    onExport(format);
                  }}
                  className="block w-full rounded-md px-3 py-1.5 text-left text-sm hover:bg-slate-100 dark:hover:bg-slate-800"
                >
                  {format === 'md' ? t('exportMd') : t('exportJson')}
                </button>
              ))}
            </div>
          )}
        </div>
        <button type="button" data-testid="delete-conversation" title={t('delete')} aria-label={t('delete')} className={iconButton} onClick={onDelete}>
          <Trash2 className="h-3.5 w-3.5" aria-hidden />
        </button>
      </div>
    </li>
  );
}
