import { useEffect, useState } from 'preact/hooks';
import { api, errorText, type Session } from './api.js';
import { ActionsPage } from './actions-page.js';
import { ActionEditor } from './action-editor.js';
import { DeadLettersPage } from './dead-letters-page.js';

type Route = { page: 'actions' } | { page: 'action'; id: string | null } | { page: 'dead-letters'; jobId: string | null };

/** Routes live in the hash (#/actions/acme_sms), so the API serves one page and links still work. */
function parseRoute(hash: string): Route {
  const [path = ''] = hash.replace(/^#/, '').split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  if (parts[0] === 'actions' && parts[1]) return { page: 'action', id: parts[1] === 'new' ? null : parts[1] };
  if (parts[0] === 'dead-letters') return { page: 'dead-letters', jobId: parts[1] ?? null };
  return { page: 'actions' };
}

function useRoute(): Route {
  const [route, setRoute] = useState(() => parseRoute(window.location.hash));
  useEffect(() => {
    const on = () => setRoute(parseRoute(window.location.hash));
    window.addEventListener('hashchange', on);
    return () => window.removeEventListener('hashchange', on);
  }, []);
  return route;
}

const TITLES: Record<Route['page'], string> = { actions: 'Actions', action: 'Action', 'dead-letters': 'Dead letters' };

export function App() {
  const route = useRoute();
  const [session, setSession] = useState<Session | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    api<Session>('GET', '/console/api/session').then(setSession, (err: unknown) => setError(errorText(err)));
  }, []);
  useEffect(() => {
    document.title = `${TITLES[route.page]} · action-relay console`;
    // Move focus to the new page's heading, as a page load would.
    setTimeout(() => document.querySelector<HTMLElement>('main h1')?.focus(), 0);
  }, [route.page, route.page === 'action' ? route.id : route.page === 'dead-letters' ? route.jobId : '']);

  const scopes = new Set(session?.scopes ?? []);
  const admin = scopes.has('admin');
  const signOut = async () => {
    await api('DELETE', '/console/session').catch(() => undefined);
    window.location.assign('/console/login');
  };
  return (
    <>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="top">
        <span class="brand">action-relay</span>
        <nav aria-label="Console">
          <a href="#/actions" aria-current={route.page !== 'dead-letters' ? 'page' : undefined}>
            Actions
          </a>
          <a href="#/dead-letters" aria-current={route.page === 'dead-letters' ? 'page' : undefined}>
            Dead letters
          </a>
          <a href="/admin/queues">Queues</a>
          <a href="/docs">API docs</a>
        </nav>
        <span class="who muted">
          {session ? (session.auth === 'none' ? 'no token (loopback)' : admin ? 'admin' : session.scopes.join(', ')) : ''}
        </span>
        {session?.auth === 'token' && (
          <button type="button" onClick={() => void signOut()}>
            Sign out
          </button>
        )}
      </header>
      <main id="main" tabIndex={-1}>
        {error && <p role="alert">{`Could not reach the API: ${error}`}</p>}
        {session && route.page === 'actions' && <ActionsPage canEdit={admin} />}
        {session && route.page === 'action' && <ActionEditor key={route.id ?? 'new'} id={route.id} canEdit={admin} />}
        {session && route.page === 'dead-letters' && (
          <DeadLettersPage jobId={route.jobId} canReplay={admin || scopes.has('replay')} canPurge={admin} />
        )}
      </main>
    </>
  );
}
