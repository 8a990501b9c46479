import { create } from 'zustand';

/** The few client-side routes; the gateway answers index.html for all of them. */
export type Route =
  | { name: 'login' }
  | { name: 'chat'; conversationId: string | null }
  | { name: 'admin-models' }
  | { name: 'admin-usage' }
  | { name: 'admin-users' };

export function parseRoute(path: string): Route {
  const chat = /^\/c\/([^/]+)\/?$/.exec(path);
  if (chat?.[1]) return { name: 'chat', conversationId: decodeURIComponent(chat[1]) };
  switch (path.replace(/\/+$/, '')) {
    case '/login':
      return { name: 'login' };
    case '/admin/models':
      return { name: 'admin-models' };
    case '/admin/usage':
      return { name: 'admin-usage' };
    case '/admin/users':
      return { name: 'admin-users' };
    default:
      return { name: 'chat', conversationId: null };
  }
}

export function routePath(route: Route): string {
  switch (route.name) {
    case 'login':
      return '/login';
    case 'chat':
      return route.conversationId ? `/c/${encodeURIComponent(route.conversationId)}` : '/';
    case 'admin-models':
      return '/admin/models';
    case 'admin-usage':
      return '/admin/usage';
    case 'admin-users':
      return '/admin/users';
  }
}

interface RouterState {
  route: Route;
  navigate: (route: Route, opts?: { replace?: boolean }) => void;
}

export const useRouter = create<RouterState>((set) => ({
  route: parseRoute(window.location.pathname),
  navigate: (route, opts) => {
    const path = routePath(route);
    if (path !== window.location.pathname) {
      if (opts?.replace) window.history.replaceState(null, '', path);
      else window.history.pushState(null, '', path);
    }
    set({ route });
  },
}));

window.addEventListener('popstate', () => {
  useRouter.setState({ route: parseRoute(window.location.pathname) });
});
