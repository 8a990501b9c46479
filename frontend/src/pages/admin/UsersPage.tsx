import { Trash2, UserPlus } from 'lucide-react';
import { useCallback, useEffect, useState } from 'react';
import { usersApi, type UserPatch } from '../../api/endpoints';
import type { UserOut } from '../../api/types';
import { ConfirmDialog } from '../../components/ui/ConfirmDialog';
import { useT } from '../../i18n';
import { anyErrorText } from '../../i18n/serverErrors';

function LimitInput({ value, onSave, label }: { value: number | null; onSave: (v: number | null) => void; label: string }) {
  const [text, setText] = useState(value == null ? '' : String(value));
  useEffect(() => setText(value == null ? '' : String(value)), [value]);
  return (
    <input
      aria-label={label}
      inputMode="numeric"
      value={text}
      placeholder="—"
      onChange={(e) => setText(e.target.value.replace(/\D/g, ''))}
      onBlur={() => {
        const next = text === '' ? null : Number(text);
        if (next !== value) onSave(next);
      }}
      className="w-20 rounded border border-slate-300 bg-transparent px-1.5 py-0.5 text-xs dark:border-slate-700"
    />
  );
}

/** Admins: list, add, change role / disabled / limits, delete. */
export default function UsersPage() {
  const t = useT();
  const [users, setUsers] = useState<UserOut[]>([]);
  const [error, setError] = useState<unknown>(null);
  const [form, setForm] = useState({ username: '', password: '', email: '', role: 'user' as 'user' | 'admin' });
  const [deleting, setDeleting] = useState<UserOut | null>(null);
  // disabling locks a person out (and ends their sessions): asked first; enabling is not
  const [disabling, setDisabling] = useState<UserOut | null>(null);

  const reload = useCallback(async () => {
    try {
      setUsers((await usersApi.list()).users);
    } catch (err) {
      setError(err);
    }
  }, []);
  useEffect(() => void reload(), [reload]);

  const patch = async (id: number, body: UserPatch) => {
    try {
      const updated = await usersApi.update(id, body);
      setUsers((list) => list.map((u) => (u.id === id ? updated : u)));
      setError(null);
    } catch (err) {
      setError(err);
    }
  };

  const row = 'block py-2 md:table-row md:py-0';
  const cell =
    'flex items-center justify-between gap-2 px-3 py-1 before:text-xs before:text-slate-500 before:content-[attr(data-label)] md:table-cell md:py-2 md:before:content-none';
  const field = 'rounded-lg border border-slate-300 bg-white px-2 py-1.5 text-sm dark:border-slate-700 dark:bg-slate-900';
  return (
    <div className="h-full overflow-y-auto">
      <div className="mx-auto flex max-w-5xl flex-col gap-4 p-4">
        <h1 className="text-xl font-semibold">{t('usersPage')}</h1>
        <form
          className="flex flex-wrap items-end gap-2 rounded-xl border border-slate-200 p-3 dark:border-slate-800"
          onSubmit={async (e) => {
            e.preventDefault();
            try {
              await usersApi.create({ ...form, email: form.email || undefined });
              setForm({ username: '', password: '', email: '', role: 'user' });
              setError(null);
              await reload();
            } catch (err) {
              setError(err);
            }
          }}
        >
          <input required data-testid="new-username" placeholder={t('user_name')} value={form.username} onChange={(e) => setForm({ ...form, username: e.target.value })} className={field} />
          <input required type="password" minLength={8} placeholder={t('password')} value={form.password} onChange={(e) => setForm({ ...form, password: e.target.value })} className={field} />
          <input type="email" placeholder={t('email')} value={form.email} onChange={(e) => setForm({ ...form, email: e.target.value })} className={field} />
          <select aria-label={t('role')} value={form.role} onChange={(e) => setForm({ ...form, role: e.target.value as 'user' | 'admin' })} className={field}>
            <option value="user">user</option>
            <option value="admin">admin</option>
          </select>
          <button type="submit" className="flex items-center gap-1.5 rounded-lg bg-indigo-600 px-3 py-1.5 text-sm text-white hover:bg-indigo-500">
            <UserPlus className="h-4 w-4" aria-hidden />
            {t('createUser')}
          </button>
        </form>
        {error !== null && (
          <p role="alert" data-testid="users-error" className="text-sm text-red-600">
            {anyErrorText(t, error)}
          </p>
        )}
        {/* a table from md up; on a phone every user is a card (no sideways scrolling) */}
        <div className="max-w-full overflow-x-auto rounded-xl border border-slate-200 dark:border-slate-800">
          <table data-testid="users-table" className="block w-full text-left text-sm md:table">
            <thead className="hidden bg-slate-50 text-xs text-slate-500 md:table-header-group dark:bg-slate-900">
              <tr>
                <th className="px-3 py-2">{t('user_name')}</th>
                <th className="px-3 py-2">{t('role')}</th>
                <th className="px-3 py-2">{t('status')}</th>
                <th className="px-3 py-2">{t('rpm')}</th>
                <th className="px-3 py-2">{t('streams')}</th>
                <th className="px-3 py-2">{t('tokensPerDay')}</th>
                <th className="px-3 py-2">{t('created')}</th>
                <th className="px-3 py-2" />
              </tr>
            </thead>
            <tbody className="block md:table-row-group">
              {users.map((u) => (
                <tr key={u.id} data-testid="user-row" className={`${row} border-t border-slate-100 first:border-t-0 md:first:border-t dark:border-slate-800`}>
                  <td className="px-3 py-2 md:table-cell">
                    <div className="font-medium">{u.username}</div>
                    <div className="text-xs text-slate-500">{u.email}</div>
                  </td>
                  <td data-label={t('role')} className={cell}>
                    <select aria-label={t('role')} value={u.role} onChange={(e) => void patch(u.id, { role: e.target.value as 'user' | 'admin' })} className="rounded bg-transparent text-sm">
                      <option value="user">user</option>
                      <option value="admin">admin</option>
                    </select>
                  </td>
                  <td data-label={t('status')} className={cell}>
                    <button type="button" data-testid="user-status" onClick={() => (u.disabled ? void patch(u.id, { disabled: false }) : setDisabling(u))} className={`rounded-full px-2 py-0.5 text-xs ${u.disabled ? 'bg-slate-200 text-slate-700 dark:bg-slate-800 dark:text-slate-300' : 'bg-emerald-100 text-emerald-800 dark:bg-emerald-900/40 dark:text-emerald-200'}`} title={u.disabled ? t('enable') : t('disable')}>
                      {u.disabled ? t('disabled') : t('enabled')}
                    </button>
                  </td>
                  <td data-label={t('rpm')} className={cell}><LimitInput label={t('rpm')} value={u.requests_per_minute} onSave={(v) => void patch(u.id, { requests_per_minute: v })} /></td>
                  <td data-label={t('streams')} className={cell}><LimitInput label={t('streams')} value={u.max_concurrent_streams} onSave={(v) => void patch(u.id, { max_concurrent_streams: v })} /></td>
                  <td data-label={t('tokensPerDay')} className={cell}><LimitInput label={t('tokensPerDay')} value={u.tokens_per_day} onSave={(v) => void patch(u.id, { tokens_per_day: v })} /></td>
                  <td data-label={t('created')} className={`${cell} text-xs text-slate-500`}>{new Date(u.created_at).toLocaleDateString()}</td>
                  <td className="flex justify-end px-3 py-2 md:table-cell md:text-right">
                    <button type="button" aria-label={t('delete')} title={t('delete')} onClick={() => setDeleting(u)} className="rounded p-1 text-slate-500 hover:bg-red-50 hover:text-red-600 dark:hover:bg-red-950">
                      <Trash2 className="h-4 w-4" aria-hidden />
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      </div>
      {disabling && (
        <ConfirmDialog
          message={t('confirmDisableUser', { u: disabling.username })}
          confirmLabel={t('disable')}
          onCancel={() => setDisabling(null)}
          onConfirm={() => {
            const target = disabling;
            setDisabling(null);
            void patch(target.id, { disabled: true });
          }}
        />
      )}
      {deleting && (
        <ConfirmDialog
          message={t('confirmDeleteUser', { u: deleting.username })}
          onCancel={() => setDeleting(null)}
          onConfirm={async () => {
            const target = deleting;
            setDeleting(null);
            try {
              await usersApi.remove(target.id);
              await reload();
            } catch (err) {
              setError(err);
            }
          }}
        />
      )}
    </div>
  );
}
