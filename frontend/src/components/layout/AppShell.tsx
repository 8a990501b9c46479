import { BarChart3, LogOut, Menu, MessageSquare, Server, SlidersHorizontal, Users, X } from 'lucide-react';
import { useState, type ReactNode } from 'react';
import { useT } from '../../i18n';
import { isAdmin, useAuth } from '../../stores/auth';
import { useRouter, type Route } from '../../stores/router';
import { ChatSettingsPanel } from '../chat/ChatSettingsPanel';
import { ModelSelectorContainer } from '../chat/ModelSelectorContainer';
import { Sidebar } from '../sidebar/Sidebar';
import { LanguageSwitcher } from './LanguageSwitcher';

/** Header (model, settings, admin links, language, user) and the conversations drawer. */
export function AppShell({ children }: { children: ReactNode }) {
  const t = useT();
  const session = useAuth((s) => s.session);
  const logout = useAuth((s) => s.logout);
  const { route, navigate } = useRouter();
  const [drawer, setDrawer] = useState(false);
  const [settings, setSettings] = useState(false);
  const admin = isAdmin(session);
  const onChat = route.name === 'chat';

  const nav = (target: Route, label: string, icon: ReactNode, testId: string) => (
    <button
      type="button"
      data-testid={testId}
      onClick={() => navigate(target)}
      aria-current={route.name === target.name ? 'page' : undefined}
      className={`flex items-center gap-1.5 rounded-lg px-2 py-1.5 text-sm ${
        route.name === target.name ? 'bg-slate-200 font-medium dark:bg-slate-800' : 'hover:bg-slate-100 dark:hover:bg-slate-800/60'
      }`}
      title={label}
    >
      {icon}
      <span className="hidden lg:inline">{label}</span>
    </button>
  );

  return (
    <div className="flex h-[100dvh] overflow-hidden">
      {onChat && drawer && <div className="fixed inset-0 z-30 bg-black/30 md:hidden" onClick={() => setDrawer(false)} />}
      {onChat && (
        <nav
          data-testid="sidebar"
          className={`fixed inset-y-0 left-0 z-40 w-72 border-r border-slate-200 bg-slate-50 transition-transform dark:border-slate-800 dark:bg-slate-900 md:static md:translate-x-0 ${
            drawer ? 'translate-x-0' : '-translate-x-full'
          }`}
        >
          <Sidebar onNavigate={() => setDrawer(false)} />
        </nav>
      )}
      <div className="flex min-w-0 flex-1 flex-col">
        <header className="flex items-center gap-2 border-b border-slate-200 px-2 py-2 dark:border-slate-800 sm:px-4">
          {onChat && (
            <button type="button" data-testid="menu-button" className="rounded-md p-1.5 hover:bg-slate-100 md:hidden dark:hover:bg-slate-800" aria-label={drawer ? t('closeMenu') : t('openMenu')} onClick={() => setDrawer((d) => !d)}>
              {drawer ? <X className="h-5 w-5" aria-hidden /> : <Menu className="h-5 w-5" aria-hidden />}
            </button>
          )}
          <div className="min-w-0 flex-1">
            <ModelSelectorContainer />
          </div>
          <div className="flex shrink-0 items-center gap-0.5 sm:gap-1">
            {!onChat && nav({ name: 'chat', conversationId: null }, t('chat'), <MessageSquare className="h-4 w-4" aria-hidden />, 'nav-chat')}
            {admin && nav({ name: 'admin-models' }, t('modelsPage'), <Server className="h-4 w-4" aria-hidden />, 'nav-models')}
            {nav({ name: 'admin-usage' }, t('usagePage'), <BarChart3 className="h-4 w-4" aria-hidden />, 'nav-usage')}
            {admin && nav({ name: 'admin-users' }, t('usersPage'), <Users className="h-4 w-4" aria-hidden />, 'nav-users')}
            {onChat && (
              <button type="button" data-testid="settings-button" title={t('chatSettings')} aria-label={t('chatSettings')} onClick={() => setSettings((s) => !s)} className="rounded-lg p-1.5 hover:bg-slate-100 dark:hover:bg-slate-800">
                <SlidersHorizontal className="h-4 w-4" aria-hidden />
              </button>
            )}
            <LanguageSwitcher />
            <button type="button" data-testid="logout" onClick={() => {
                logout();
                // the address of the conversation is not where a logged-out tab stays
                navigate({ name: 'login' });
              }} title={`${t('logout')} (${session?.username ?? ''})`} aria-label={t('logout')} className="flex items-center gap-1 rounded-lg p-1.5 text-sm hover:bg-slate-100 dark:hover:bg-slate-800">
              <LogOut className="h-4 w-4" aria-hidden />
              <span className="hidden text-xs text-slate-500 xl:inline">{session?.username}</span>
            </button>
          </div>
        </header>
        <main className="min-h-0 flex-1 overflow-hidden">{children}</main>
      </div>
      {onChat && settings && <ChatSettingsPanel onClose={() => setSettings(false)} />}
    </div>
  );
}
