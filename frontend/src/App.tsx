import { lazy, Suspense, useEffect } from 'react';
import { AppShell } from './components/layout/AppShell';
import { useT } from './i18n';
import { ChatPage } from './pages/ChatPage';
import { LoginPage } from './pages/LoginPage';
import { isAdmin, useAuth } from './stores/auth';
import { useRouter } from './stores/router';
import { useSettings } from './stores/settings';

const ModelsPage = lazy(() => import('./pages/admin/ModelsPage'));
const UsagePage = lazy(() => import('./pages/admin/UsagePage'));
const UsersPage = lazy(() => import('./pages/admin/UsersPage'));

export function App() {
  const t = useT();
  const session = useAuth((s) => s.session);
  const { route, navigate } = useRouter();

  useEffect(() => {
    if (!session) return;
    void useSettings.getState().load();
    // after logging in, /login leads back to the chat (the draft is still in the input)
    if (route.name === 'login') navigate({ name: 'chat', conversationId: null }, { replace: true });
  }, [session, route.name, navigate]);

  if (!session) return <LoginPage />;
  const admin = isAdmin(session);
  let page;
  switch (route.name) {
    case 'admin-models':
      page = admin ? <ModelsPage /> : null;
      break;
    case 'admin-users':
      page = admin ? <UsersPage /> : null;
      break;
    case 'admin-usage':
      page = <UsagePage admin={admin} />;
      break;
    default:
      page = <ChatPage routeId={route.name === 'chat' ? route.conversationId : null} />;
  }
  return (
    <AppShell>
      <Suspense fallback={<p className="p-6 text-sm text-slate-500">{t('loading')}</p>}>
        {page ?? <ChatPage routeId={null} />}
      </Suspense>
    </AppShell>
  );
}
